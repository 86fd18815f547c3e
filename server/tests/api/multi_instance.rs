//! Several server processes against one database, killed without warning or stopped cleanly:
//! every event is still applied exactly once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::processes::{OPERATOR, ServerProcess, operator_client, owner_of, spawn_server};
use crate::read_model::assert_read_model_equals_replay;

const PROJECTIONS: [&str; 2] = ["account_summary", "account_ledger"];

pub async fn create_accounts(client: &reqwest::Client, server: &ServerProcess, count: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..count {
        let answer = server.create_account(client, OPERATOR, 1000).await;
        ids.push(answer["accountId"].as_str().unwrap().to_owned());
    }
    ids
}

/// Deposits and withdrawals from several clients to every address until `stop`; a server that
/// has been killed just fails its share. Returns the number of accepted commands.
pub fn start_load(
    client: &reqwest::Client,
    addresses: Vec<String>,
    accounts: Vec<String>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<usize> {
    let accepted = Arc::new(AtomicUsize::new(0));
    let client = client.clone();
    tokio::spawn(async move {
        let workers: Vec<_> = (0..6)
            .map(|worker| {
                let (client, addresses, accounts, stop, accepted) =
                    (client.clone(), addresses.clone(), accounts.clone(), stop.clone(), accepted.clone());
                tokio::spawn(async move {
                    let mut n = worker;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let address = &addresses[n % addresses.len()];
                        let account = &accounts[n % accounts.len()];
                        let route = if n % 3 == 0 { "withdraw" } else { "deposit" };
                        let sent = client
                            .post(format!("{address}/api/commands/{route}"))
                            .json(&json!({"accountId": account, "amount": (n % 7 + 1)}))
                            .timeout(Duration::from_secs(5))
                            .send()
                            .await;
                        if sent.is_ok_and(|response| response.status().is_success()) {
                            accepted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for worker in workers {
            let _ = worker.await;
        }
        accepted.load(Ordering::Relaxed)
    })
}

/// Waits until every projection is led by an instance and has applied every event.
async fn wait_until_caught_up(client: &reqwest::Client, server: &ServerProcess) -> Value {
    let mut health = Value::Null;
    for _ in 0..300 {
        health = server.health(client).await;
        let done = PROJECTIONS.iter().all(|name| {
            health["projections"].as_array().into_iter().flatten().any(|p| {
                p["name"] == *name && p["lagEvents"] == 0 && p["state"] == "running" && p["ownerInstance"].is_string()
            })
        });
        if done {
            return health;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the projections did not catch up: {health}");
}

#[sqlx::test(migrations = false)]
async fn two_instances_one_killed_mid_run_apply_every_event_exactly_once(_: PgPoolOptions, db: PgConnectOptions) {
    let a = spawn_server(&db, "instance-a");
    let client = operator_client(&db, &a).await;
    let b = spawn_server(&db, "instance-b");
    let accounts = create_accounts(&client, &a, 20).await;

    let stop = Arc::new(AtomicBool::new(false));
    let load = start_load(&client, vec![a.address.clone(), b.address.clone()], accounts.clone(), stop.clone());
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Kill whichever leads the account summary, mid-run.
    let health = b.health(&client).await;
    let leader = owner_of(&health, "account_summary").expect("someone leads");
    let (mut victim, survivor) = if leader == a.instance { (a, b) } else { (b, a) };
    victim.kill_9();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    stop.store(true, Ordering::Relaxed);
    let accepted = load.await.unwrap();
    assert!(accepted > 50, "only {accepted} commands got through");

    // The survivor takes every projection over and catches up.
    let health = wait_until_caught_up(&client, &survivor).await;
    for name in PROJECTIONS {
        assert_eq!(owner_of(&health, name).as_deref(), Some(survivor.instance.as_str()), "{health}");
    }
    let pool = PgPool::connect_with(db).await.unwrap();
    assert_read_model_equals_replay(&pool).await;
}

#[sqlx::test(migrations = false)]
async fn a_server_killed_under_load_restarts_to_a_read_model_equal_to_a_replay(_: PgPoolOptions, db: PgConnectOptions) {
    let mut first = spawn_server(&db, "first");
    let client = operator_client(&db, &first).await;
    let accounts = create_accounts(&client, &first, 30).await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = start_load(&client, vec![first.address.clone()], accounts, stop.clone());
    tokio::time::sleep(Duration::from_millis(2000)).await;
    first.kill_9();
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();

    let second = spawn_server(&db, "second");
    wait_until_caught_up(&client, &second).await;
    let pool = PgPool::connect_with(db).await.unwrap();
    assert_read_model_equals_replay(&pool).await;
}

#[sqlx::test(migrations = false)]
async fn sigterm_finishes_cleanly_and_hands_leadership_over_at_once(_: PgPoolOptions, db: PgConnectOptions) {
    let mut first = spawn_server(&db, "first");
    let client = operator_client(&db, &first).await;
    create_accounts(&client, &first, 3).await;
    wait_until_caught_up(&client, &first).await;
    let second = spawn_server(&db, "second");

    let status = first.terminate(Duration::from_secs(15)).expect("it stops within 15 s");
    assert!(status.success(), "exit status {status}");
    // A clean stop releases the projections at once: the standby (which asks every second)
    // takes over well before a dead leader's connection would time out.
    let started = std::time::Instant::now();
    let health = wait_until_caught_up(&client, &second).await;
    assert!(started.elapsed() < Duration::from_secs(5), "takeover took {:?}", started.elapsed());
    for name in PROJECTIONS {
        assert_eq!(owner_of(&health, name).as_deref(), Some("second"));
    }
}

fn signal(server: &ServerProcess, signal: &str) {
    let sent =
        std::process::Command::new("kill").args([signal, &server.pid().to_string()]).status().expect("kill runs");
    assert!(sent.success(), "kill {signal} failed");
}

#[sqlx::test(migrations = false)]
async fn a_paused_leader_is_replaced_and_applies_nothing_when_it_wakes(_: PgPoolOptions, db: PgConnectOptions) {
    let a = spawn_server(&db, "instance-a");
    let client = operator_client(&db, &a).await;
    let b = spawn_server(&db, "instance-b");
    let accounts = create_accounts(&client, &a, 20).await;
    wait_until_caught_up(&client, &a).await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = start_load(&client, vec![a.address.clone(), b.address.clone()], accounts, stop.clone());
    tokio::time::sleep(Duration::from_millis(1000)).await;

    // Pause whichever leads the account summary: its sessions and locks stay, it answers nothing.
    let leader = owner_of(&b.health(&client).await, "account_summary").expect("someone leads");
    let (paused, survivor) = if leader == a.instance { (a, b) } else { (b, a) };
    signal(&paused, "-STOP");
    let paused_at = std::time::Instant::now();
    loop {
        let health = survivor.health(&client).await;
        if PROJECTIONS.iter().all(|name| owner_of(&health, name).as_deref() == Some(survivor.instance.as_str())) {
            break;
        }
        assert!(paused_at.elapsed() < Duration::from_secs(10), "no takeover within 10 s: {health}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // While it is still paused (its sessions, locks and open transactions included), the
    // survivor's read model follows: read-your-writes holds on the survivor.
    let pool = PgPool::connect_with(db.clone()).await.unwrap();
    let created = survivor.create_account(&client, OPERATOR, 5).await;
    let url = format!(
        "{}/api/queries/accounts/{}?after={}",
        survivor.address,
        created["accountId"].as_str().unwrap(),
        created["position"].as_str().unwrap()
    );
    let mut read = Value::Null;
    for _ in 0..5 {
        read = client.get(&url).send().await.unwrap().json().await.unwrap();
        if read["stale"] == json!(false) {
            break;
        }
    }
    assert_eq!(read["stale"], json!(false), "the survivor's read model stalled during the pause: {read}");
    let epochs = |pool: PgPool| async move {
        sqlx::query_as::<_, (String, i64)>(
            "SELECT projection_name, leader_epoch FROM projection_checkpoints WHERE projection_name NOT LIKE '%#%' ORDER BY 1",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
    };
    let taken_over = epochs(pool.clone()).await;

    // Woken up, the old leader finds itself replaced and applies nothing more.
    signal(&paused, "-CONT");
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let accepted = load.await.unwrap();
    assert!(accepted > 50, "only {accepted} commands got through");
    let health = wait_until_caught_up(&client, &survivor).await;
    for name in PROJECTIONS {
        assert_eq!(owner_of(&health, name).as_deref(), Some(survivor.instance.as_str()), "{health}");
    }
    assert_eq!(epochs(pool.clone()).await, taken_over, "leadership changed hands again after the pause");
    assert_read_model_equals_replay(&pool).await;
}

//! Several server processes against one database, killed without warning or stopped cleanly:
//! every event is still applied exactly once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use testkit::{PATIENCE, eventually, when};

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

/// Deposits and withdrawals from several clients to every address, until stopped; a server that
/// has been killed just fails its share.
pub struct Load {
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn start(client: &reqwest::Client, addresses: Vec<String>, accounts: Vec<String>) -> Load {
        let (stop, accepted) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
        let workers = (0..6)
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
                            .timeout(Duration::from_secs(30))
                            .send()
                            .await;
                        if sent.is_ok_and(|response| response.status().is_success()) {
                            accepted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        Load { stop, accepted, workers }
    }

    /// Waits until `more` commands beyond those accepted so far have gone through: the load is
    /// served, whatever happened to the instances before.
    pub async fn accepted_more(&self, more: usize) {
        let target = self.accepted.load(Ordering::Relaxed) + more;
        eventually(&format!("{more} more commands accepted"), PATIENCE, || async {
            when(self.accepted.load(Ordering::Relaxed), |&accepted| accepted >= target)
        })
        .await;
    }

    /// Stops the clients and waits for their last commands.
    pub async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for worker in self.workers {
            let _ = worker.await;
        }
    }
}

/// Waits until every projection is led by an instance and has applied every event.
async fn wait_until_caught_up(client: &reqwest::Client, server: &ServerProcess) -> Value {
    eventually("the projections led and caught up", PATIENCE, || async {
        when(server.health(client).await, |health| {
            PROJECTIONS.iter().all(|name| {
                health["projections"].as_array().into_iter().flatten().any(|p| {
                    p["name"] == *name
                        && p["lagEvents"] == 0
                        && p["state"] == "running"
                        && p["ownerInstance"].is_string()
                })
            })
        })
    })
    .await
}

/// Waits until `survivor` leads every projection of `names`.
pub async fn wait_until_led_by(client: &reqwest::Client, survivor: &ServerProcess, names: &[&str]) -> Value {
    eventually(&format!("{names:?} led by {}", survivor.instance), PATIENCE, || async {
        when(survivor.health(client).await, |health| {
            names.iter().all(|name| owner_of(health, name).as_deref() == Some(survivor.instance.as_str()))
        })
    })
    .await
}

#[sqlx::test(migrations = false)]
async fn two_instances_one_killed_mid_run_apply_every_event_exactly_once(_: PgPoolOptions, db: PgConnectOptions) {
    let a = spawn_server(&db, "instance-a");
    let client = operator_client(&db, &a).await;
    let b = spawn_server(&db, "instance-b");
    let accounts = create_accounts(&client, &a, 20).await;

    let load = Load::start(&client, vec![a.address.clone(), b.address.clone()], accounts.clone());
    load.accepted_more(50).await;

    // Kill whichever leads the account summary, mid-run; the survivor goes on serving.
    let leader = leader_of(&client, &b, "account_summary").await;
    let (mut victim, survivor) = if leader == a.instance { (a, b) } else { (b, a) };
    victim.kill_9();
    load.accepted_more(50).await;
    load.stop().await;

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
    let load = Load::start(&client, vec![first.address.clone()], accounts);
    load.accepted_more(100).await;
    first.kill_9();
    load.stop().await;

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

    let status = first.terminate(PATIENCE).expect("it stops");
    assert!(status.success(), "exit status {status}");
    // A clean stop gives every projection up, its lock released and the checkpoint disowned,
    // each of which its log says once done; the standby takes them over.
    first.logged("projection stopped", PROJECTIONS.len()).await;
    let health = wait_until_caught_up(&client, &second).await;
    for name in PROJECTIONS {
        assert_eq!(owner_of(&health, name).as_deref(), Some("second"));
    }
}

/// The instance leading `projection` once one does.
pub async fn leader_of(client: &reqwest::Client, server: &ServerProcess, projection: &str) -> String {
    eventually(&format!("{projection} led"), PATIENCE, || async {
        let health = server.health(client).await;
        owner_of(&health, projection).ok_or(health)
    })
    .await
}

/// Sends `signal` (as `kill` spells it: `-STOP`) to the server's process.
pub fn signal(server: &ServerProcess, signal: &str) {
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
    let load = Load::start(&client, vec![a.address.clone(), b.address.clone()], accounts);
    load.accepted_more(30).await;

    // Pause whichever leads the account summary: its sessions and locks stay, it answers nothing.
    let leader = leader_of(&client, &b, "account_summary").await;
    let (paused, survivor) = if leader == a.instance { (a, b) } else { (b, a) };
    signal(&paused, "-STOP");
    wait_until_led_by(&client, &survivor, &PROJECTIONS).await;

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
    let read = eventually("the survivor's read model past the new account", PATIENCE, || async {
        when(client.get(&url).send().await.unwrap().json::<Value>().await.unwrap(), |read| {
            read["stale"] == json!(false)
        })
    })
    .await;
    assert_eq!(read["currentBalance"], json!(5.0), "{read}");
    let epochs = |pool: PgPool| async move {
        sqlx::query_as::<_, (String, i64)>(
            "SELECT projection_name, leader_epoch FROM projection_checkpoints WHERE projection_name NOT LIKE '%#%' ORDER BY 1",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
    };
    let taken_over = epochs(pool.clone()).await;

    // Woken up, the old leader finds itself replaced (its log says so) and applies nothing
    // more; the load goes on through both.
    signal(&paused, "-CONT");
    paused.logged("stopped leading", 1).await;
    load.accepted_more(30).await;
    load.stop().await;
    let health = wait_until_caught_up(&client, &survivor).await;
    for name in PROJECTIONS {
        assert_eq!(owner_of(&health, name).as_deref(), Some(survivor.instance.as_str()), "{health}");
    }
    assert_eq!(epochs(pool.clone()).await, taken_over, "leadership changed hands again after the pause");
    assert_read_model_equals_replay(&pool).await;
}

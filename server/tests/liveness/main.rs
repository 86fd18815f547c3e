//! No client can stall the bank: read-your-writes without misses, waits that hold nothing, a hot
//! account that cannot starve the others, and probes that cost nothing.
//!
//! What these tests measure — latencies, misses against a bound, transactions spent — is only
//! meaningful on a machine that is not also running the rest of the suite, so they live in a
//! test binary of their own (cargo runs test binaries one after another) and take turns.

#[path = "../api/helpers.rs"]
#[allow(dead_code)]
mod helpers;
#[path = "../api/processes.rs"]
#[allow(dead_code)]
mod processes;

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::helpers::{TestApp, spawn_app, spawn_app_with};
use crate::processes::{OPERATOR, ServerProcess, operator_client, spawn_server};

/// One test at a time: each measures what the others would disturb.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Transactions committed in the test's database so far (the statistics lag a moment behind).
async fn transactions(app: &TestApp) -> i64 {
    tokio::time::sleep(Duration::from_millis(1200)).await;
    sqlx::query("SELECT pg_stat_clear_snapshot()").execute(&app.pool).await.unwrap();
    sqlx::query_scalar("SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

fn p99(mut latencies: Vec<Duration>) -> Duration {
    latencies.sort_unstable();
    latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)]
}

#[sqlx::test(migrations = false)]
async fn an_account_read_right_after_its_creation_is_never_missing_or_stale(_: PgPoolOptions, db: PgConnectOptions) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let app = spawn_app(db).await;
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (http, address) = (app.client.clone(), app.address.clone());
            tokio::spawn(async move {
                let (mut missing, mut stale, mut first_stale) = (0, 0, None);
                for _ in 0..250 {
                    let created: Value = http
                        .post(format!("{address}/api/commands/create-account"))
                        .json(&json!({"ownerId": "alice", "initialBalance": 1}))
                        .send()
                        .await
                        .unwrap()
                        .json()
                        .await
                        .unwrap();
                    let (id, token) = (created["accountId"].as_str().unwrap(), created["position"].as_str().unwrap());
                    let asked = Instant::now();
                    let read =
                        http.get(format!("{address}/api/queries/accounts/{id}?after={token}")).send().await.unwrap();
                    let status = read.status();
                    let body: Value = read.json().await.unwrap();
                    if status == StatusCode::NOT_FOUND {
                        missing += 1;
                    } else if body["stale"] != json!(false) {
                        stale += 1;
                        first_stale.get_or_insert(format!("{status} after {:?}: {body}", asked.elapsed()));
                    }
                }
                (missing, stale, first_stale)
            })
        })
        .collect();
    let (mut missing, mut stale, mut first_stale) = (0, 0, None);
    for client in clients {
        let (m, s, first) = client.await.unwrap();
        (missing, stale) = (missing + m, stale + s);
        first_stale = first_stale.or(first);
    }
    assert_eq!(
        (missing, stale),
        (0, 0),
        "2,000 create-then-read loops: (missing, stale); first stale: {first_stale:?}"
    );
}

#[sqlx::test(migrations = false)]
async fn time_travel_never_waits_for_a_second_connection(_: PgPoolOptions, db: PgConnectOptions) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let app = spawn_app_with(db, |settings| {
        settings.max_connections = 4;
        settings.acquire_timeout = Duration::from_secs(1);
    })
    .await;
    let id = app.account_id("alice", 10.0).await;
    for amount in 1..=5 {
        app.post("/api/commands/deposit", &json!({"accountId": id, "amount": amount})).await;
    }
    let requests: Vec<_> = (0..64)
        .map(|n| {
            let (http, address, id) = (app.client.clone(), app.address.clone(), id.clone());
            tokio::spawn(async move {
                let body = if n % 2 == 0 {
                    json!({"accountId": id, "version": n % 6 + 1})
                } else {
                    json!({"accountId": id, "at": "2100-01-01T00:00:00Z"})
                };
                http.post(format!("{address}/api/queries/account-at")).json(&body).send().await.unwrap().status()
            })
        })
        .collect();
    let mut unavailable = 0;
    for request in requests {
        let status = request.await.unwrap();
        assert!(status == StatusCode::OK || status == StatusCode::SERVICE_UNAVAILABLE, "{status}");
        unavailable += usize::from(status == StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(unavailable, 0, "{unavailable} of 64 time-travel requests found no connection");
}

/// Creates an account on `server` and returns its id.
async fn open_account(client: &reqwest::Client, server: &ServerProcess, owner: &str) -> String {
    server.create_account(client, owner, 0).await["accountId"].as_str().unwrap().to_owned()
}

/// Sequential deposits into `accounts`, one at a time: their latencies, and how many got 503.
async fn single_deposits(
    client: &reqwest::Client,
    server: &ServerProcess,
    accounts: &[String],
) -> (Vec<Duration>, usize) {
    let (mut latencies, mut unavailable) = (Vec::new(), 0);
    for id in accounts {
        let started = Instant::now();
        let status = client
            .post(format!("{}/api/commands/deposit", server.address))
            .json(&json!({"accountId": id, "amount": 1}))
            .send()
            .await
            .unwrap()
            .status();
        latencies.push(started.elapsed());
        assert!(status == StatusCode::OK || status == StatusCode::SERVICE_UNAVAILABLE, "{status}");
        unavailable += usize::from(status == StatusCode::SERVICE_UNAVAILABLE);
    }
    (latencies, unavailable)
}

/// The server runs as a process of its own (a multi-threaded runtime, its default pool of 20
/// connections), so that the clients' work here does not compete with it on one thread.
#[sqlx::test(migrations = false)]
async fn one_hot_account_cannot_starve_the_others(_: PgPoolOptions, db: PgConnectOptions) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let server = spawn_server(&db, "hot-account");
    let client = operator_client(&db, &server).await;
    let hot = open_account(&client, &server, OPERATOR).await;
    let mut others = Vec::new();
    for _ in 0..400 {
        others.push(open_account(&client, &server, OPERATOR).await);
    }
    let (idle, _) = single_deposits(&client, &server, &others[..200]).await;

    // 64 connections deposit into the hot account as fast as they are answered: more than the
    // pool has connections.
    let stop = tokio_util::sync::CancellationToken::new();
    let hammers: Vec<_> = (0..64)
        .map(|_| {
            let (client, url, hot, stop) =
                (client.clone(), format!("{}/api/commands/deposit", server.address), hot.clone(), stop.clone());
            tokio::spawn(async move {
                let mut accepted = 0;
                while !stop.is_cancelled() {
                    let sent = client.post(&url).json(&json!({"accountId": hot, "amount": 1})).send().await.unwrap();
                    accepted += usize::from(sent.status() == StatusCode::OK);
                }
                accepted
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (loaded, unavailable) = single_deposits(&client, &server, &others[200..]).await;
    stop.cancel();
    let mut accepted = 0;
    for hammer in hammers {
        accepted += hammer.await.unwrap();
    }
    assert!(accepted > 64, "the hot account took only {accepted} deposits");
    assert_eq!(unavailable, 0, "deposits into other accounts answered 503");
    let (idle, loaded) = (p99(idle), p99(loaded));
    // Twice the idle p99, plus room for a 2-core machine's scheduling noise: without the
    // per-stream queue this p99 is over a second. The strict ratio is the benchmark's (B8),
    // measured on a quiet machine.
    let bound = idle * 2 + Duration::from_millis(50);
    assert!(loaded <= bound, "other accounts' deposits p99 {loaded:?} under a hot account, {idle:?} idle");
}

#[sqlx::test(migrations = false)]
async fn waiting_for_the_read_model_costs_no_queries_and_is_capped(_: PgPoolOptions, db: PgConnectOptions) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let app = spawn_app_with(db, |settings| settings.max_read_model_waiters = 50).await;
    let created = app.create_account("alice", 10.0).await;
    let (id, token) =
        (created["accountId"].as_str().unwrap().to_owned(), created["position"].as_str().unwrap().to_owned());
    app.account_after(&id, &token).await;

    // A token beyond the newest event: stale at once, not after the bound.
    let started = Instant::now();
    let far = app.get(&format!("/api/queries/accounts/{id}?after=9223372036854775807:1")).await;
    assert_eq!(far.status(), StatusCode::OK);
    assert_eq!(far.json::<Value>().await.unwrap()["stale"], json!(true));
    assert!(started.elapsed() < Duration::from_millis(500), "took {:?}", started.elapsed());

    // Stop the read model (a poison event), then make a token it cannot reach.
    app.insert_poison_event().await;
    let unreachable = app.create_account("alice", 1.0).await["position"].as_str().unwrap().to_owned();
    let before = transactions(&app).await;
    let started = Instant::now();
    let waits: Vec<_> = (0..100)
        .map(|_| {
            let (http, url) =
                (app.client.clone(), format!("{}/api/queries/accounts/{id}?after={unreachable}", app.address));
            tokio::spawn(async move {
                let started = Instant::now();
                let answer: Value = http.get(url).send().await.unwrap().json().await.unwrap();
                (answer["stale"].clone(), started.elapsed())
            })
        })
        .collect();
    let (mut waited, mut answered_at_once) = (0, 0);
    for wait in waits {
        let (stale, elapsed) = wait.await.unwrap();
        assert_eq!(stale, json!(true));
        if elapsed >= Duration::from_millis(1800) {
            waited += 1;
        } else if elapsed < Duration::from_millis(1000) {
            answered_at_once += 1;
        }
    }
    assert!(started.elapsed() < Duration::from_secs(4));
    assert_eq!((waited, answered_at_once), (50, 50), "50 may wait; the rest answer stale at once");
    // Each request reads its row once or twice and the head once; waiting itself sends nothing.
    // (Re-querying every 10 ms for 2 s would be about 20,000.) The projections' own retries
    // and heartbeats add a little.
    let spent = transactions(&app).await - before;
    assert!(spent < 1000, "100 waits cost {spent} transactions");
}

#[sqlx::test(migrations = false)]
async fn a_monitor_probing_health_costs_one_trivial_query_a_probe(_: PgPoolOptions, db: PgConnectOptions) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let app = spawn_app(db).await;
    app.create_account("alice", 10.0).await;
    app.wait_for_projection().await;
    let health: Value = app.get("/health").await.json().await.unwrap();
    assert_eq!(health["status"], "ok", "{health}");

    let before = transactions(&app).await;
    for _ in 0..100 {
        assert_eq!(app.get("/health").await.status(), StatusCode::OK);
    }
    let spent = transactions(&app).await - before;
    // 100 liveness queries, a status reading a second at most, and the projections' heartbeats.
    assert!(spent < 200, "100 health probes cost {spent} transactions");
}

#[sqlx::test(migrations = false)]
async fn a_rebuild_swap_behind_a_long_reader_does_not_queue_account_reads(_: PgPoolOptions, db: PgConnectOptions) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let app = spawn_app(db).await;
    let id = app.account_id("alice", 10.0).await;
    app.wait_for_projection().await;

    // A reader holds the account summary open while its rebuild wants to swap it out.
    let mut reader = app.pool.begin().await.unwrap();
    sqlx::query("SELECT count(*) FROM account_summary").execute(&mut *reader).await.unwrap();
    let asked = app
        .post_as_operator("/api/operations/rebuild-projection", &json!({"reason": "a test", "name": "account_summary"}))
        .await;
    assert_eq!(asked.status(), StatusCode::OK);
    let mut latencies = Vec::new();
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let started = Instant::now();
        // Bounded: a read queued behind the swap would otherwise wait for the reader, which
        // this test only lets go afterwards.
        let read = app
            .client
            .get(format!("{}/api/queries/accounts/{id}", app.address))
            .timeout(Duration::from_secs(1))
            .send()
            .await;
        latencies.push(started.elapsed());
        if let Ok(read) = read {
            assert_eq!(read.status(), StatusCode::OK);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let p99 = p99(latencies);
    assert!(p99 < Duration::from_millis(100), "GET account p99 {p99:?} while a swap waited for a reader");
    let state: String =
        sqlx::query_scalar("SELECT state FROM projection_checkpoints WHERE projection_name = 'account_summary'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(state, "rebuilding", "the swap cannot have happened while the reader held the table");

    reader.commit().await.unwrap();
    for _ in 0..150 {
        let state: String =
            sqlx::query_scalar("SELECT state FROM projection_checkpoints WHERE projection_name = 'account_summary'")
                .fetch_one(&app.pool)
                .await
                .unwrap();
        if state == "running" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the rebuild did not finish once the reader was gone");
}

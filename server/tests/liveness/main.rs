//! No client can stall the bank: read-your-writes without misses, waits that hold nothing, a hot
//! account that cannot starve the others, and probes that cost nothing.
//!
//! Each test proves what the server does, not how fast: what would take time is counted instead
//! (transactions, sessions waiting on a lock, connections held), and every wait is bounded only
//! generously ([`PATIENCE`]). How fast is the benchmarks' question (B3, B6, B8).

#[path = "../api/helpers.rs"]
#[allow(dead_code)]
mod helpers;
#[path = "../api/processes.rs"]
#[allow(dead_code)]
mod processes;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use testkit::{PATIENCE, eventually, when};

use crate::helpers::{TestApp, spawn_app, spawn_app_with};
use crate::processes::{OPERATOR, ServerProcess, operator_client, spawn_server};

/// Transactions committed and rolled back in the test's database, as the statistics hold them.
async fn transactions(stats: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()")
        .fetch_one(stats)
        .await
        .unwrap()
}

/// A pool of one connection to the test's database, for the test's own readings.
async fn one_connection(db: &PgConnectOptions) -> PgPool {
    PgPoolOptions::new().max_connections(1).connect_with(db.clone()).await.unwrap()
}

/// Reads of the account summary's rows (scans of the table, by index or not), as the
/// statistics hold them.
async fn account_summary_reads(stats: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT coalesce(seq_scan, 0) + coalesce(idx_scan, 0) FROM pg_stat_user_tables WHERE relname = 'account_summary'",
    )
    .fetch_one(stats)
    .await
    .unwrap()
}

/// Stops the app and waits until its sessions have ended.
///
/// A session reports its counts to the statistics when it ends, but while it runs only now and
/// then (up to ten seconds late): once every session of the app has gone, none of theirs is
/// missing. `stats` is the test's own pool, of one connection.
async fn stop_and_wait_for_its_sessions(app: TestApp, stats: &PgPool) {
    app.stop();
    app.pool.close().await;
    drop(app);
    eventually("the app's sessions ended", PATIENCE, || async {
        let others: Vec<String> = sqlx::query_scalar(
            "SELECT coalesce(query, '') FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .fetch_all(stats)
        .await
        .unwrap();
        when(others, Vec::is_empty)
    })
    .await;
}

#[sqlx::test(migrations = false)]
async fn an_account_read_right_after_its_creation_is_never_missing_or_stale(_: PgPoolOptions, db: PgConnectOptions) {
    // A read waits for the read model as long as the test does: a stale answer is one the read
    // model never caught up with, not one a busy machine was slow to give.
    let app = spawn_app_with(db, |settings| {
        settings.catch_up_bound = PATIENCE;
        settings.request_timeout = 2 * PATIENCE;
    })
    .await;
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
                    let read =
                        http.get(format!("{address}/api/queries/accounts/{id}?after={token}")).send().await.unwrap();
                    let status = read.status();
                    let body: Value = read.json().await.unwrap();
                    if status == StatusCode::NOT_FOUND {
                        missing += 1;
                    } else if body["stale"] != json!(false) {
                        stale += 1;
                        first_stale.get_or_insert(format!("{status}: {body}"));
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
    // Four connections (two of them the relays', for good) for 64 requests at once. A request
    // that held one connection while it waited for a second would, with its neighbours, hold
    // them all and wait for ever: here until the pool's bound, longer than the test waits, then
    // answer 503. A request that takes one at a time only queues.
    let app = spawn_app_with(db, |settings| {
        settings.max_connections = 4;
        settings.acquire_timeout = PATIENCE;
        settings.request_timeout = 2 * PATIENCE;
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

/// Sessions of the test's database waiting for a lock in a command's append: for the stream's
/// advisory lock, or behind another writer's insert into the same stream.
async fn writers_waiting_for_a_lock(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'
           AND (query LIKE '%pg_advisory_xact_lock%' OR query LIKE '%INSERT INTO events%')",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// The server runs as a process of its own (a multi-threaded runtime, its default pool of 20
/// connections), so that the clients' work here does not compete with it on one thread.
#[sqlx::test(migrations = false)]
async fn one_hot_account_cannot_starve_the_others(_: PgPoolOptions, db: PgConnectOptions) {
    let server = spawn_server(&db, "hot-account");
    let client = operator_client(&db, &server).await;
    let pool = PgPool::connect_with(db).await.unwrap();
    let hot = open_account(&client, &server, OPERATOR).await;
    let mut others = Vec::new();
    for _ in 0..100 {
        others.push(open_account(&client, &server, OPERATOR).await);
    }

    // 64 connections deposit into the hot account as fast as they are answered: more than the
    // pool has connections.
    let stop = tokio_util::sync::CancellationToken::new();
    let accepted = Arc::new(AtomicUsize::new(0));
    let hammers: Vec<_> = (0..64)
        .map(|_| {
            let (client, url, hot, stop, accepted) = (
                client.clone(),
                format!("{}/api/commands/deposit", server.address),
                hot.clone(),
                stop.clone(),
                accepted.clone(),
            );
            tokio::spawn(async move {
                while !stop.is_cancelled() {
                    let sent = client.post(&url).json(&json!({"accountId": hot, "amount": 1})).send().await.unwrap();
                    if sent.status() == StatusCode::OK {
                        accepted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    eventually("64 deposits into the hot account", PATIENCE, || async {
        when(accepted.load(Ordering::Relaxed), |&accepted| accepted >= 64)
    })
    .await;
    let hammered = accepted.load(Ordering::Relaxed);

    // Meanwhile every other account's deposit goes through; and the hot account's writers take
    // turns in the server, one of them in Postgres at a time, so that no session of the pool
    // ever waits there for another's lock on the stream (without the turns, most of the pool
    // would, all the time).
    let mut most_waiting = 0;
    for id in &others {
        let status = client
            .post(format!("{}/api/commands/deposit", server.address))
            .json(&json!({"accountId": id, "amount": 1}))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, StatusCode::OK, "a deposit into another account beside the hot one");
        most_waiting = most_waiting.max(writers_waiting_for_a_lock(&pool).await);
    }
    let during = accepted.load(Ordering::Relaxed) - hammered;
    stop.cancel();
    for hammer in hammers {
        hammer.await.unwrap();
    }
    assert!(during > 0, "the hot account took no deposit while the others were served");
    assert_eq!(most_waiting, 0, "writers waited in Postgres for the hot stream's lock");
}

#[sqlx::test(migrations = false)]
async fn waiting_for_the_read_model_costs_no_queries_and_is_capped(_: PgPoolOptions, db: PgConnectOptions) {
    // Waits end when the read model gets there, or at a bound longer than the test waits: how
    // each one ended is told by its answer, not by how long it took.
    let app = spawn_app_with(db.clone(), |settings| {
        settings.max_read_model_waiters = 50;
        settings.catch_up_bound = PATIENCE;
        settings.request_timeout = 2 * PATIENCE;
        settings.max_connections = 5;
        settings.acquire_timeout = PATIENCE;
    })
    .await;
    let created = app.create_account("alice", 10.0).await;
    let (id, token) =
        (created["accountId"].as_str().unwrap().to_owned(), created["position"].as_str().unwrap().to_owned());
    app.account_after(&id, &token).await;

    // A token beyond the newest event: stale at once, not after the bound (which this request
    // would not live to see).
    let far = app
        .client
        .get(format!("{}/api/queries/accounts/{id}?after=9223372036854775807:1", app.address))
        .timeout(PATIENCE / 2)
        .send()
        .await
        .expect("answered before the bound");
    assert_eq!(far.status(), StatusCode::OK);
    assert_eq!(far.json::<Value>().await.unwrap()["stale"], json!(true));

    // Stop the read model (a poison event), then make a token it cannot reach until the event
    // is skipped.
    app.insert_poison_event().await;
    let unreachable = app.create_account("alice", 1.0).await["position"].as_str().unwrap().to_owned();
    let failed = eventually("the account summary stopped at the poison event", PATIENCE, || async {
        let all: Value = app.post_as_operator("/api/operations/projections", &json!({})).await.json().await.unwrap();
        let summary = all.as_array().unwrap().iter().find(|p| p["name"] == "account_summary").cloned().unwrap();
        when(summary, |summary| summary["state"] == "failed")
    })
    .await;
    let stats = one_connection(&db).await;
    let before = account_summary_reads(&stats).await;

    let answers = Arc::new(std::sync::Mutex::new(Vec::new()));
    let waits: Vec<_> = (0..100)
        .map(|_| {
            let (http, url, answers) = (
                app.client.clone(),
                format!("{}/api/queries/accounts/{id}?after={unreachable}", app.address),
                answers.clone(),
            );
            tokio::spawn(async move {
                let answer: Value = http.get(url).send().await.unwrap().json().await.unwrap();
                answers.lock().unwrap().push(answer["stale"].clone());
            })
        })
        .collect();
    // 50 may wait; the rest answer stale at once, while those 50 still wait.
    let refused = eventually("the waits beyond the cap answered", PATIENCE, || async {
        when(answers.lock().unwrap().clone(), |answered| answered.len() >= 50)
    })
    .await;
    assert_eq!(refused, vec![json!(true); 50], "the waits beyond the cap: stale at once");
    // The 50 waits hold no connection: the pool (five, two of them its relays' for good) still
    // serves a command and a query.
    app.create_account("alice", 1.0).await;
    assert_eq!(app.get(&format!("/api/queries/accounts/{id}")).await.status(), StatusCode::OK);

    // Skipped, the poison event lets the read model on past the token: every wait ends fresh.
    let body = json!({"name": "account_summary", "position": failed["failedPosition"], "reason": "a test"});
    let skipped = app.post_as_operator("/api/operations/skip-failed-event", &body).await;
    assert_eq!(skipped.status(), StatusCode::OK);
    for wait in waits {
        wait.await.unwrap();
    }
    let answers = answers.lock().unwrap().clone();
    assert_eq!(answers.iter().filter(|stale| **stale == json!(false)).count(), 50, "{answers:?}");

    // Each request reads its row once, and once more when its wait ends; waiting itself reads
    // nothing. (A wait that read the row again every 10 ms would read it 100 times a second.)
    // Nothing else reads the table while the read model stands still; then it applies a few
    // events.
    stop_and_wait_for_its_sessions(app, &stats).await;
    let reads = account_summary_reads(&stats).await - before;
    eprintln!("100 waits read the account {reads} times");
    assert!(reads <= 200, "100 waits read the account {reads} times");
}

/// How many times the monitor probes.
const PROBES: i64 = 1000;

#[sqlx::test(migrations = false)]
async fn a_monitor_probing_health_costs_at_most_a_trivial_query_a_second(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db.clone()).await;
    app.create_account("alice", 10.0).await;
    app.wait_for_projection().await;
    let health: Value = app.get("/health").await.json().await.unwrap();
    assert_eq!(health["status"], "ok", "{health}");

    let stats = one_connection(&db).await;
    let (before, counting) = (transactions(&stats).await, tokio::time::Instant::now());
    for _ in 0..PROBES {
        assert_eq!(app.get("/health").await.status(), StatusCode::OK);
    }
    let seconds = counting.elapsed().as_secs() as i64 + 1;
    stop_and_wait_for_its_sessions(app, &stats).await;
    let spent = transactions(&stats).await - before;
    // A liveness query a second at most (an answer is given again for a second); and besides
    // the probes, a status reading a second at most, the projections' and the transfer
    // process's timers (about 25 transactions a second, probes or not: a busy machine, slower,
    // only spreads them out) and the stop (about 200). Allowed twice those, for however long the
    // probes took: a query a probe would spend 1,000 more.
    let besides = 400 + 50 * seconds;
    eprintln!("{PROBES} health probes in {seconds} s cost {spent} transactions ({besides} besides them allowed)");
    assert!(
        spent < seconds + besides,
        "{PROBES} health probes in {seconds} s cost {spent} transactions ({besides} besides them allowed)"
    );
}

#[sqlx::test(migrations = false)]
async fn a_rebuild_swap_waits_for_no_reader_and_account_reads_go_on(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let id = app.account_id("alice", 10.0).await;
    app.wait_for_projection().await;

    // A long reader holds the account summary open (a report, say) while it is rebuilt,
    let mut reader = app.pool.begin().await.unwrap();
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ").execute(&mut *reader).await.unwrap();
    let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM account_summary").fetch_one(&mut *reader).await.unwrap();
    let asked = app
        .post_as_operator("/api/operations/rebuild-projection", &json!({"reason": "a test", "name": "account_summary"}))
        .await;
    assert_eq!(asked.status(), StatusCode::OK);
    // and reads of the account go on, one after another, throughout;
    let reading = tokio_util::sync::CancellationToken::new();
    let reads = {
        let (client, url, reading) =
            (app.client.clone(), format!("{}/api/queries/accounts/{id}", app.address), reading.clone());
        tokio::spawn(async move {
            let mut answered = 0u64;
            while !reading.is_cancelled() {
                let read = client.get(&url).timeout(PATIENCE).send().await;
                assert_eq!(read.expect("a read beside the rebuild is answered").status(), StatusCode::OK);
                answered += 1;
            }
            answered
        })
    };
    // the rebuild finishes — its swap copies rows in, and waits for no reader —
    let state = || async {
        sqlx::query_scalar::<_, String>(
            "SELECT state FROM projection_checkpoints WHERE projection_name = 'account_summary'",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap()
    };
    eventually("the rebuild finished while the reader was still there", PATIENCE, || async {
        when(state().await, |state| state == "running")
    })
    .await;
    reading.cancel();
    assert!(reads.await.unwrap() > 0);
    // while the long reader still sees what it saw.
    let still: i64 = sqlx::query_scalar("SELECT count(*) FROM account_summary").fetch_one(&mut *reader).await.unwrap();
    assert_eq!(still, seen);
    reader.commit().await.unwrap();
}

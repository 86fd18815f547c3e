//! Operating the read side over HTTP: status, health, metrics, a poison event, a rebuild,
//! read-your-writes when the read model is behind, overload.

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use uuid::Uuid;

use testkit::{PATIENCE, eventually, when};

use crate::helpers::{TestApp, error_code, spawn_app, spawn_app_with};
use crate::read_model::assert_read_model_equals_replay;

async fn scrape(app: &TestApp) -> String {
    app.get_as_operator("/metrics").await.text().await.unwrap()
}

async fn projections(app: &TestApp) -> Vec<Value> {
    let response = app.post_as_operator("/api/operations/projections", &json!({})).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

async fn projection(app: &TestApp, name: &str) -> Value {
    projections(app).await.into_iter().find(|p| p["name"] == name).expect("the projection exists")
}

/// Waits until the projection's status satisfies `done`.
async fn wait_for(app: &TestApp, name: &str, done: impl Fn(&Value) -> bool) -> Value {
    eventually(&format!("{name} there"), PATIENCE, || async { when(projection(app, name).await, &done) }).await
}

#[sqlx::test(migrations = false)]
async fn status_health_and_metrics_report_every_projection(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let created = app.create_account("alice", 10.0).await;
    app.account_after(created["accountId"].as_str().unwrap(), created["position"].as_str().unwrap()).await;
    // Both caught up in one reading: the status is shared (at most a second old), so what
    // health and metrics say next comes from the same reading or a newer one.
    for name in ["account_ledger", "transfers", "transfer_process"] {
        wait_for(&app, name, |p| p["lagEvents"] == 0 && p["ownerInstance"].is_string()).await;
    }
    let summary = wait_for(&app, "account_summary", |p| p["lagEvents"] == 0 && p["ownerInstance"].is_string()).await;
    assert_eq!(summary["state"], "running");
    assert_eq!(summary["summary"], "running");
    assert_eq!(summary["checkpoint"], summary["head"]);
    assert_eq!(summary["eventsApplied"], 1);
    assert_eq!(summary["lastError"], Value::Null);
    let names: Vec<String> = projections(&app).await.iter().map(|p| p["name"].as_str().unwrap().to_owned()).collect();
    assert_eq!(names, vec!["account_ledger", "account_summary", "transfer_process", "transfers"]);

    let health: Value = app.get("/health").await.json().await.unwrap();
    assert_eq!(health["status"], "ok");
    // Anyone may ask, so it tells nothing inside: no instance, projection or error names.
    assert_eq!(health.as_object().unwrap().keys().collect::<Vec<_>>(), ["status"]);

    let response = app.get_as_operator("/metrics").await;
    assert_eq!(response.headers()["content-type"], "text/plain; version=0.0.4; charset=utf-8");
    let metrics = response.text().await.unwrap();
    let created = r#"method="POST",route="/api/commands/create-account",status="200""#;
    for expected in [
        format!("cqrs_bank_http_requests_total{{{created}}} 1"),
        format!("cqrs_bank_http_request_duration_seconds_count{{{created}}} 1"),
        "cqrs_bank_projection_lag_events{projection=\"account_summary\"} 0".to_owned(),
        "cqrs_bank_projection_events_applied_total{projection=\"account_ledger\"} 1".to_owned(),
        "cqrs_bank_transfers_parked 0".to_owned(),
        "process_resident_memory_bytes ".to_owned(),
        "cqrs_bank_build_info{".to_owned(),
    ] {
        assert!(metrics.contains(&expected), "{expected} missing from\n{metrics}");
    }
}

#[sqlx::test(migrations = false)]
async fn a_poison_event_stops_both_projections_at_it_until_skipped(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let before = app.create_account("alice", 10.0).await;
    app.account_after(before["accountId"].as_str().unwrap(), before["position"].as_str().unwrap()).await;
    app.insert_poison_event().await;
    let created = app.create_account("alice", 20.0).await;
    let (id, token) = (created["accountId"].as_str().unwrap(), created["position"].as_str().unwrap());

    let failed = wait_for(&app, "account_summary", |p| p["state"] == "failed").await;
    assert!(failed["lastError"].as_str().unwrap().contains("MoneyDeposited"), "{failed}");
    assert!(failed["failedPosition"].is_string());
    let health: Value = app.get("/health").await.json().await.unwrap();
    assert_eq!(health["status"], "degraded");

    // Read-your-writes when the read model cannot catch up: the answer waits out its bound
    // (2 s: a server timer, which a busy machine can only make later), then says it is stale.
    let started = std::time::Instant::now();
    let response =
        app.get(&format!("/api/queries/accounts/{}?after={token}", before["accountId"].as_str().unwrap())).await;
    let waited = started.elapsed();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.json::<Value>().await.unwrap()["stale"], json!(true));
    assert!(waited >= std::time::Duration::from_secs(2), "answered stale after {waited:?}, before its bound");

    // Retrying without a fix fails again; skipping moves both on, and the skip is kept.
    for name in ["account_summary", "account_ledger"] {
        wait_for(&app, name, |p| p["state"] == "failed").await;
        let response =
            app.post_as_operator("/api/operations/retry-projection", &json!({"reason": "a test", "name": name})).await;
        assert_eq!(response.status(), StatusCode::OK);
        let failed = wait_for(&app, name, |p| p["state"] == "failed").await;
        // A skip names the failure seen; another position is refused and skips nothing.
        let wrong = app
            .post_as_operator(
                "/api/operations/skip-failed-event",
                &json!({"reason": "a test", "name": name, "position": "1:1"}),
            )
            .await;
        assert_eq!(error_code(wrong, StatusCode::CONFLICT).await, "conflict");
        let body = json!({"name": name, "position": failed["failedPosition"], "reason": "the event is garbage"});
        let response = app.post_as_operator("/api/operations/skip-failed-event", &body).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    let account = app.account_after(id, token).await;
    assert_eq!(account["currentBalance"], json!(20.0));
    let skipped: i64 = sqlx::query_scalar("SELECT count(*) FROM skipped_events").fetch_one(&app.pool).await.unwrap();
    assert_eq!(skipped, 2);
    // Every lever that applied is recorded: who, why, when; newest first.
    let levers: Vec<Value> = app.post_as_operator("/api/operations/levers", &json!({})).await.json().await.unwrap();
    let pulled: Vec<(&str, &str, &str)> = levers
        .iter()
        .map(|l| (l["lever"].as_str().unwrap(), l["operator"].as_str().unwrap(), l["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(
        pulled,
        [
            ("skip", "olga", "the event is garbage"),
            ("retry", "olga", "a test"),
            ("skip", "olga", "the event is garbage"),
            ("retry", "olga", "a test"),
        ]
    );
    assert!(levers[0]["position"].is_string() && levers[0]["pulledAt"].is_string(), "{levers:?}");
    // No reason, no lever.
    let unexplained = app
        .post_as_operator("/api/operations/rebuild-projection", &json!({"name": "account_summary", "reason": " "}))
        .await;
    assert_eq!(error_code(unexplained, StatusCode::BAD_REQUEST).await, "invalid_request");

    let again = app
        .post_as_operator(
            "/api/operations/skip-failed-event",
            &json!({"reason": "a test", "name": "account_summary", "position": "1:1"}),
        )
        .await;
    assert_eq!(error_code(again, StatusCode::CONFLICT).await, "conflict");
    let unknown =
        app.post_as_operator("/api/operations/retry-projection", &json!({"reason": "a test", "name": "nope"})).await;
    assert_eq!(error_code(unknown, StatusCode::NOT_FOUND).await, "not_found");
    let malformed = app
        .post_as_operator("/api/operations/retry-projection", &json!({"reason": "a test", "name": "no\u{0}pe"}))
        .await;
    assert_eq!(error_code(malformed, StatusCode::BAD_REQUEST).await, "invalid_request");
}

#[sqlx::test(migrations = false)]
async fn a_rebuild_while_commands_flow_ends_equal_to_a_replay(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.push(app.account_id("alice", 100.0).await);
    }
    app.wait_for_projection().await;

    for name in ["account_summary", "account_ledger"] {
        let response = app
            .post_as_operator("/api/operations/rebuild-projection", &json!({"reason": "a test", "name": name}))
            .await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    for (n, id) in ids.iter().enumerate() {
        let response = app.deposit(id, n + 1).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    for name in ["account_summary", "account_ledger"] {
        let done = wait_for(&app, name, |p| p["state"] == "running" && p["rebuild"].is_null()).await;
        assert_eq!(done["lastError"], Value::Null, "{done}");
    }
    app.wait_for_projection().await;
    assert_read_model_equals_replay(&app.pool).await;
    let again = app
        .post_as_operator("/api/operations/rebuild-projection", &json!({"reason": "a test", "name": "account_summary"}))
        .await;
    assert_eq!(again.status(), StatusCode::OK, "a finished rebuild can be asked for again");
}

/// Sessions of the app's database held for good: waiting for a lock in an append, or listening
/// for notifications (the server's relays each keep a pooled connection for it).
async fn sessions_held(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid()
           AND (wait_event_type = 'Lock' AND query LIKE '%INSERT INTO events%' OR query ILIKE 'LISTEN%')",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrations = false)]
async fn requests_that_cannot_get_a_connection_answer_503_quickly(_: PgPoolOptions, db: PgConnectOptions) {
    // The 503 comes from the pool's bound on a wait for a connection: the request's own bound
    // is longer than the test waits for it.
    let app = spawn_app_with(db, |settings| {
        settings.max_connections = 4;
        settings.acquire_timeout = std::time::Duration::from_millis(500);
        settings.request_timeout = 2 * PATIENCE;
    })
    .await;
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(app.account_id("alice", 10.0).await);
    }
    let id = ids[0].clone();
    // Another writer (another process, say) has appended each account's next event and not yet
    // committed it: a deposit into one, which the server appends in one statement at the version
    // it knows, waits behind that row holding a pooled connection, for as long as it stays
    // uncommitted. Deposits go on until the pool's four connections are held: by deposits waiting
    // so, and by the server's relays listening for notifications.
    let mut blockers = Vec::new();
    for id in &ids {
        let mut blocker = app.pool.begin().await.unwrap();
        sqlx::query(
            "INSERT INTO events (event_id, stream_type, stream_id, stream_version, event_type, schema_version, data)
             VALUES ($1, 'account', $2, 2, 'MoneyDeposited', 2, '{\"amount\": \"1.00\"}')",
        )
        .bind(Uuid::new_v4())
        .bind(id.parse::<Uuid>().unwrap())
        .execute(&mut *blocker)
        .await
        .unwrap();
        blockers.push(blocker);
    }
    let deposit = |id: &str| {
        let (client, url, body) = (
            app.client.clone(),
            format!("{}/api/commands/deposit", app.address),
            json!({"accountId": id, "amount": 1}),
        );
        tokio::spawn(async move { client.post(url).json(&body).send().await.unwrap().status() })
    };
    let mut deposits: Vec<_> = ids.iter().map(|id| deposit(id)).collect();
    eventually("the pool's four connections held", PATIENCE, || {
        // One that found no connection in time answered 503: it goes again.
        for (id, sent) in ids.iter().zip(deposits.iter_mut()) {
            if sent.is_finished() {
                *sent = deposit(id);
            }
        }
        let pool = app.pool.clone();
        async move { when(sessions_held(&pool).await, |&held| held >= 4) }
    })
    .await;

    let response = app
        .client
        .get(format!("{}/api/queries/accounts/{id}", app.address))
        .timeout(PATIENCE)
        .send()
        .await
        .expect("answered before the request's own bound");
    assert_eq!(error_code(response, StatusCode::SERVICE_UNAVAILABLE).await, "service_unavailable");

    for blocker in blockers {
        blocker.rollback().await.unwrap();
    }
    for sent in deposits {
        let status = sent.await.unwrap();
        assert!(status == StatusCode::OK || status == StatusCode::SERVICE_UNAVAILABLE, "{status}");
    }
}

#[sqlx::test(migrations = false)]
async fn another_aggregates_events_do_not_reach_the_account_read_models(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    // An event of an aggregate the account projections do not know, as a later one would append
    // it: no account projection can read it, and none is shown it.
    sqlx::query(
        "INSERT INTO events (event_id, stream_type, stream_id, stream_version, event_type, schema_version, data)
         VALUES ($1, 'loan', $2, 1, 'LoanRequested', 1, '{\"from\": \"somewhere\", \"amount\": \"lots\"}')",
    )
    .bind(Uuid::new_v4())
    .bind(Uuid::new_v4())
    .execute(&app.pool)
    .await
    .unwrap();
    let created = app.create_account("alice", 10.0).await;
    let account =
        app.account_after(created["accountId"].as_str().unwrap(), created["position"].as_str().unwrap()).await;
    assert_eq!(account["currentBalance"], json!(10.0));
    for name in ["account_summary", "account_ledger"] {
        let status = wait_for(&app, name, |p| p["lagEvents"] == 0).await;
        assert_eq!(status["state"], "running", "{status}");
        assert_eq!(status["eventsApplied"], 1, "only the account's event was applied: {status}");
    }
    assert_read_model_equals_replay(&app.pool).await;
}

#[sqlx::test(migrations = false)]
async fn the_databases_figures_come_from_one_instance_and_each_counts_its_own_answers(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    // Given two instances of one bank, each having answered requests,
    let first = spawn_app_with(db.clone(), |settings| settings.instance_id = "first".to_owned()).await;
    let second = spawn_app_with(db, |settings| settings.instance_id = "second".to_owned()).await;
    first.create_account("alice", 10.0).await;
    // when a scraper reads both, the projections' figures (the same database's, whoever reads
    // them) are in exactly one answer — the transfer process's leader's — so that a sum over
    // instances counts them once;
    let exporters = eventually("one instance exporting the database's figures", PATIENCE, || async {
        let answers = [scrape(&first).await, scrape(&second).await];
        when(answers, |answers| {
            answers.iter().filter(|text| text.contains("cqrs_bank_projection_lag_events{")).count() == 1
        })
    })
    .await;
    // and each counts the answers it gave itself.
    let created = r#"cqrs_bank_http_requests_total{method="POST",route="/api/commands/create-account",status="200"} 1"#;
    assert!(exporters[0].contains(created), "{}", exporters[0]);
    assert!(!exporters[1].contains("route=\"/api/commands/create-account\""), "{}", exporters[1]);
    for text in &exporters {
        assert!(text.contains("cqrs_bank_build_info{"), "{text}");
    }
}

//! Operating the read side over HTTP: status, health, metrics, a poison event, a rebuild,
//! read-your-writes when the read model is behind, overload.

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use uuid::Uuid;

use crate::helpers::{TestApp, error_code, spawn_app, spawn_app_with};
use crate::read_model::assert_read_model_equals_replay;

async fn projections(app: &TestApp) -> Vec<Value> {
    let response = app.post_as_operator("/api/operations/projections", &json!({})).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

async fn projection(app: &TestApp, name: &str) -> Value {
    projections(app).await.into_iter().find(|p| p["name"] == name).expect("the projection exists")
}

/// Waits (up to 15 s) until the projection's status satisfies `done`.
async fn wait_for(app: &TestApp, name: &str, done: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..150 {
        last = projection(app, name).await;
        if done(&last) {
            return last;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{name} never got there: {last}");
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

    let metrics = app.get_as_operator("/metrics").await.text().await.unwrap();
    for expected in [
        "cqrs_bank_commands_total{command=\"create-account\",outcome=\"accepted\"} 1",
        "cqrs_bank_projection_lag_events{projection=\"account_summary\"} 0",
        "cqrs_bank_projection_events_applied_total{projection=\"account_ledger\"} 1",
        "cqrs_bank_command_duration_seconds_count{command=\"create-account\"} 1",
    ] {
        assert!(metrics.contains(expected), "{expected} missing from\n{metrics}");
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

    // Read-your-writes when the read model cannot catch up: after the bound, the answer says
    // it is stale (here: the account is not there yet at all).
    let started = std::time::Instant::now();
    let response =
        app.get(&format!("/api/queries/accounts/{}?after={token}", before["accountId"].as_str().unwrap())).await;
    let elapsed = started.elapsed();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.json::<Value>().await.unwrap()["stale"], json!(true));
    assert!(
        elapsed >= std::time::Duration::from_millis(1900) && elapsed < std::time::Duration::from_secs(4),
        "{elapsed:?}"
    );

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
        let response = app.post("/api/commands/deposit", &json!({"accountId": id, "amount": n + 1})).await;
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

#[sqlx::test(migrations = false)]
async fn requests_that_cannot_get_a_connection_answer_503_quickly(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app_with(db, |settings| {
        settings.max_connections = 4;
        settings.acquire_timeout = std::time::Duration::from_millis(500);
        // Every command takes the stream lock (no warm accounts, whose one-statement appends
        // take none), so that the locks held below stall them.
        settings.write.warm_streams = 0;
    })
    .await;
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(app.account_id("alice", 10.0).await);
    }
    let id = ids[0].clone();
    // Hold six accounts' stream locks from outside, as another process's writers would: one
    // command to each waits for its lock holding a pooled connection, until the pool is empty.
    let mut holder = app.pool.acquire().await.unwrap();
    for id in &ids {
        let (high, low) = id.parse::<Uuid>().unwrap().as_u64_pair();
        sqlx::query("SELECT pg_advisory_lock($1)").bind((high ^ low) as i64).execute(&mut *holder).await.unwrap();
    }
    let stuck: Vec<_> = ids
        .iter()
        .map(|id| {
            let (client, url, body) = (
                app.client.clone(),
                format!("{}/api/commands/deposit", app.address),
                json!({"accountId": id, "amount": 1}),
            );
            tokio::spawn(async move { client.post(url).json(&body).send().await })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let started = std::time::Instant::now();
    let response = app.get(&format!("/api/queries/accounts/{id}")).await;
    assert_eq!(error_code(response, StatusCode::SERVICE_UNAVAILABLE).await, "service_unavailable");
    assert!(started.elapsed() < std::time::Duration::from_secs(2), "took {:?}", started.elapsed());

    sqlx::query("SELECT pg_advisory_unlock_all()").execute(&mut *holder).await.unwrap();
    for request in stuck {
        let status = request.await.unwrap().unwrap().status();
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

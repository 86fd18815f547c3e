//! Temporal reads from the event store: the audit trail with metadata, and the account at a
//! version or a moment.

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::helpers::{TestApp, error_code, spawn_app, spawn_app_with};

async fn deposit(app: &TestApp, id: &str, amount: f64) -> Value {
    let response = app.deposit(id, amount).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

async fn alice_id(app: &TestApp) -> uuid::Uuid {
    sqlx::query_scalar("SELECT user_id FROM users WHERE username = 'alice'").fetch_one(&app.pool).await.unwrap()
}

async fn history(app: &TestApp, body: Value) -> Value {
    let response = app.post("/api/queries/account-history", &body).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

#[sqlx::test(migrations = false)]
async fn every_event_records_its_command_correlation_and_causation(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let id = app.account_id("alice", 10.0).await;
    let (command_id, correlation_id) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let response = app
        .post_with_header(
            "/api/commands/deposit",
            &json!({"accountId": id, "amount": 5, "commandId": command_id}),
            ("x-correlation-id", &correlation_id.to_string()),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);

    let page = history(&app, json!({"accountId": id})).await;
    let newest = &page["entries"][0];
    assert_eq!(newest["eventType"], json!("MoneyDeposited"));
    // The stored command id is the client's, scoped to the caller (the same id from two users
    // names two commands); the client's own is kept beside it, as is the actor.
    let stored_id = uuid::Uuid::new_v5(&alice_id(&app).await, command_id.as_bytes());
    assert_eq!(newest["commandId"], json!(stored_id));
    assert_eq!(newest["correlationId"], json!(correlation_id));
    assert_eq!(newest["causationId"], json!(stored_id));
    // Without a correlation header, a command is its own conversation.
    let created = &page["entries"][1];
    assert_eq!(created["correlationId"], created["commandId"]);
    let metadata: Value =
        sqlx::query_scalar("SELECT metadata FROM events WHERE stream_version = 2").fetch_one(&app.pool).await.unwrap();
    assert!(metadata["issuedAt"].as_str().is_some_and(|t| t.ends_with('Z')), "{metadata}");
    assert_eq!(metadata["clientCommandId"], json!(command_id));
    // The actor's name is sealed with their key (docs/PRIVACY.md); the audit trail reads it.
    assert!(metadata["actor"]["username"]["ciphertext"].is_string(), "{metadata}");
    assert!(!metadata.to_string().contains("alice"), "{metadata}");
    assert_eq!(newest["actor"], json!("alice"));
    assert_eq!(metadata["actor"]["userId"], json!(alice_id(&app).await));
    assert_eq!(metadata["correlationIdFromClient"], json!(true));
    assert!(metadata["requestId"].as_str().is_some_and(|id| uuid::Uuid::parse_str(id).is_ok()), "{metadata}");

    let bad = app
        .post_with_header("/api/commands/deposit", &json!({"accountId": id, "amount": 5}), ("x-correlation-id", "nope"))
        .await;
    assert_eq!(error_code(bad, StatusCode::BAD_REQUEST).await, "invalid_request");
}

#[sqlx::test(migrations = false)]
async fn the_audit_trail_pages_newest_first_with_running_balances(_: PgPoolOptions, db: PgConnectOptions) {
    // A small snapshot interval, so that pages start from snapshots too.
    let app = spawn_app_with(db, |settings| settings.write.snapshot_interval = 4).await;
    let id = app.account_id("alice", 100.0).await;
    for amount in 1..=11 {
        deposit(&app, &id, f64::from(amount)).await;
    }
    let withdrawn = app.withdraw(&id, 6).await;
    assert_eq!(withdrawn.status(), StatusCode::OK);

    let mut versions = Vec::new();
    let mut balances = Vec::new();
    let mut before: Option<i64> = None;
    loop {
        let page = history(&app, json!({"accountId": id, "beforeVersion": before, "limit": 5})).await;
        assert_eq!(page["latestVersion"], json!(13));
        for entry in page["entries"].as_array().unwrap() {
            versions.push(entry["version"].as_i64().unwrap());
            balances.push(entry["balanceAfter"].as_f64().unwrap());
        }
        match page["nextBeforeVersion"].as_i64() {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    assert_eq!(versions, (1..=13).rev().collect::<Vec<_>>());
    // 100, then +1 … +11 (166), then -6.
    let mut expected = vec![100.0];
    for amount in 1..=11 {
        expected.push(expected.last().unwrap() + f64::from(amount));
    }
    expected.push(160.0);
    expected.reverse();
    assert_eq!(balances, expected);

    let oldest = history(&app, json!({"accountId": id, "beforeVersion": 2, "limit": 5})).await;
    assert_eq!(oldest["entries"][0]["eventType"], json!("AccountCreated"));
    assert_eq!(oldest["entries"][0]["amount"], json!(100.0));
    assert_eq!(oldest["nextBeforeVersion"], Value::Null);

    for limit in [0, 101] {
        let response = app.post("/api/queries/account-history", &json!({"accountId": id, "limit": limit})).await;
        assert_eq!(error_code(response, StatusCode::BAD_REQUEST).await, "invalid_request");
    }
    let unknown = app.post("/api/queries/account-history", &json!({"accountId": uuid::Uuid::new_v4()})).await;
    assert_eq!(error_code(unknown, StatusCode::NOT_FOUND).await, "account_not_found");
}

#[sqlx::test(migrations = false)]
async fn the_account_can_be_read_as_it_was_at_a_version_or_a_moment(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app_with(db, |settings| settings.write.snapshot_interval = 3).await;
    let id = app.account_id("alice", 10.0).await;
    for amount in [1.0, 2.0, 3.0, 4.0, 5.0] {
        deposit(&app, &id, amount).await;
    }
    // Balances by version: 10, 11, 13, 16, 20, 25.
    for (version, balance) in [(1, 10.0), (2, 11.0), (3, 13.0), (4, 16.0), (5, 20.0), (6, 25.0), (99, 25.0)] {
        let response = app.post("/api/queries/account-at", &json!({"accountId": id, "version": version})).await;
        assert_eq!(response.status(), StatusCode::OK);
        let account: Value = response.json().await.unwrap();
        assert_eq!(account["balance"].as_f64(), Some(balance), "at version {version}: {account}");
        assert_eq!(account["version"].as_i64(), Some(version.min(6)));
        assert_eq!(account["latestVersion"], json!(6));
        // The totals as of then, the initial balance counting as the first deposit.
        assert_eq!(account["totalDeposits"].as_f64(), Some(balance));
        assert_eq!(account["totalWithdrawals"].as_f64(), Some(0.0));
        assert_eq!(account["transactionCount"].as_i64(), Some(version.min(6)));
        assert!(account["createdAt"].as_str().unwrap() <= account["recordedAt"].as_str().unwrap());
    }

    // At the moment version 4 was recorded.
    let times: Vec<String> = sqlx::query_scalar(
        "SELECT to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') FROM events ORDER BY stream_version",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let at = async |moment: &str| app.post("/api/queries/account-at", &json!({"accountId": id, "at": moment})).await;
    let account: Value = at(&times[3]).await.json().await.unwrap();
    assert_eq!(account["version"], json!(4));
    assert_eq!(account["balance"].as_f64(), Some(16.0));

    let before_creation = at("2000-01-01T00:00:00Z").await;
    assert_eq!(error_code(before_creation, StatusCode::NOT_FOUND).await, "account_not_found");
    for bad in
        [json!({"accountId": id}), json!({"accountId": id, "version": 0}), json!({"accountId": id, "at": "yesterday"})]
    {
        let response = app.post("/api/queries/account-at", &bad).await;
        assert_eq!(error_code(response, StatusCode::BAD_REQUEST).await, "invalid_request", "{bad}");
    }
}

/// The deposit's `recorded_at`, as stored (to the microsecond).
async fn deposit_recorded_at(app: &TestApp, id: &str) -> time::OffsetDateTime {
    sqlx::query_scalar("SELECT recorded_at FROM events WHERE stream_id = $1::uuid AND stream_version = 2")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[sqlx::test(migrations = false)]
async fn a_moment_to_the_second_includes_the_events_of_that_second(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let id = app.account_id("alice", 10.0).await;
    deposit(&app, &id, 5.0).await;
    // What the page shows, and the time travel form sends: the time to the second.
    let recorded_at = deposit_recorded_at(&app, &id).await;
    let shown =
        recorded_at.replace_nanosecond(0).unwrap().format(&time::format_description::well_known::Rfc3339).unwrap();
    assert!(!shown.contains('.'), "{shown}");

    let response = app.post("/api/queries/account-at", &json!({"accountId": id, "at": shown})).await;
    assert_eq!(response.status(), StatusCode::OK);
    let account: Value = response.json().await.unwrap();
    assert_eq!(account["version"], json!(2), "at {shown} (recorded at {recorded_at}): {account}");
    assert_eq!(account["balance"].as_f64(), Some(15.0));
}

#[sqlx::test(migrations = false)]
async fn a_moment_with_a_fraction_is_exact(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let id = app.account_id("alice", 10.0).await;
    deposit(&app, &id, 5.0).await;
    let recorded_at = deposit_recorded_at(&app, &id).await;
    let to_the_microsecond =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");
    let at = async |moment: time::OffsetDateTime| {
        let moment = moment.format(to_the_microsecond).unwrap();
        let response = app.post("/api/queries/account-at", &json!({"accountId": id, "at": moment})).await;
        assert_eq!(response.status(), StatusCode::OK, "at {moment}");
        response.json::<Value>().await.unwrap()["version"].clone()
    };

    assert_eq!(at(recorded_at - time::Duration::MICROSECOND).await, json!(1));
    assert_eq!(at(recorded_at).await, json!(2));
}

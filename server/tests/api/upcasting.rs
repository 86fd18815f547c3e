//! Events stored in an old shape are read through today's code.

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use uuid::Uuid;

use crate::helpers::spawn_app;

#[sqlx::test(migrations = false)]
async fn v1_events_in_the_design_documents_shape_are_read_by_every_reader(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let account_id = Uuid::new_v4();
    // As the design document's Go sketch would have written them: snake_case, float amounts,
    // the envelope repeated inside the data.
    let v1 = [
        (
            "AccountCreated",
            json!({"aggregate_id": account_id, "event_type": "AccountCreated", "version": 1,
            "account_id": account_id, "owner_id": "alice", "initial_balance": 100.1}),
        ),
        (
            "MoneyDeposited",
            json!({"aggregate_id": account_id, "event_type": "MoneyDeposited", "version": 2, "amount": 0.29}),
        ),
        (
            "MoneyWithdrawn",
            json!({"aggregate_id": account_id, "event_type": "MoneyWithdrawn", "version": 3, "amount": 50}),
        ),
    ];
    for (version, (event_type, data)) in (1..).zip(v1) {
        sqlx::query(
            "INSERT INTO events (event_id, stream_type, stream_id, stream_version, event_type, schema_version, data)
             VALUES ($1, 'account', $2, $3, $4, 1, $5)",
        )
        .bind(Uuid::new_v4())
        .bind(account_id)
        .bind(version)
        .bind(event_type)
        .bind(data)
        .execute(&app.pool)
        .await
        .unwrap();
    }

    // The projection reads them …
    app.wait_for_projection().await;
    let account: Value = app.get(&format!("/api/queries/accounts/{account_id}")).await.json().await.unwrap();
    assert_eq!(account["currentBalance"].to_string(), "50.39");
    assert_eq!(account["totalDeposits"].to_string(), "100.39");
    // … so does the write side, which appends today's shape after them …
    let response = app.withdraw(&account_id.to_string(), 50.39).await;
    assert_eq!(response.status(), StatusCode::OK);
    let newest: i32 = sqlx::query_scalar("SELECT schema_version FROM events WHERE stream_version = 4")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(newest, backend::event_codec::SCHEMA_VERSION);
    // … and so do temporal reads.
    let at: Value = app
        .post("/api/queries/account-at", &json!({"accountId": account_id, "version": 2}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(at["balance"].to_string(), "100.39");
    assert_eq!(at["ownerId"], json!("alice"));
}

//! Concurrent commands on one account: none lost, none overdrawn, none failed while it could
//! still succeed.

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::helpers::{TestApp, spawn_app_with};

/// 50 withdrawals of 10 from a balance of 100, all at once.
async fn fifty_withdrawals_of_ten_from_a_hundred(app: &TestApp) {
    let id = app.account_id("alice", 100.0).await;
    let body = json!({"accountId": id, "amount": 10});
    let responses = join_all((0..50).map(|_| app.post("/api/commands/withdraw", &body))).await;
    let (mut accepted, mut refused) = (0, 0);
    for response in responses {
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        match status {
            StatusCode::OK => accepted += 1,
            StatusCode::UNPROCESSABLE_ENTITY => {
                assert_eq!(body["error"]["code"], json!("insufficient_funds"), "{body}");
                refused += 1;
            }
            other => panic!("a withdrawal answered {other}: {body}"),
        }
    }
    assert_eq!((accepted, refused), (10, 40));

    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT stream_version FROM events WHERE stream_id = $1::uuid ORDER BY stream_version")
            .bind(&id)
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(versions, (1..=11).collect::<Vec<_>>(), "versions are not contiguous");
    let token = app.create_account("alice", 0.0).await["position"].as_str().unwrap().to_owned();
    let account = app.account_after(&id, &token).await;
    assert_eq!(account["currentBalance"], json!(0.0));
    assert_eq!(account["totalWithdrawals"], json!(100.0));
}

#[sqlx::test(migrations = false)]
async fn writers_serialised_per_stream_never_overdraw(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app_with(db, |settings| settings.write.serialize_writers = true).await;
    fifty_withdrawals_of_ten_from_a_hundred(&app).await;
}

#[sqlx::test(migrations = false)]
async fn optimistic_writers_with_enough_retries_never_overdraw(_: PgPoolOptions, db: PgConnectOptions) {
    // Without the lock, every clash costs a retry: 50 writers need up to 50 attempts.
    let app = spawn_app_with(db, |settings| {
        settings.write.serialize_writers = false;
        settings.write.max_attempts = 60;
    })
    .await;
    fifty_withdrawals_of_ten_from_a_hundred(&app).await;
}

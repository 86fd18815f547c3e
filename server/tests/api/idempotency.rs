//! A command sent again — retried, double-clicked, replayed — is applied once.

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::helpers::{error_code, spawn_app};

#[sqlx::test(migrations = false)]
async fn the_same_deposit_sent_20_times_at_once_deposits_once(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let id = app.account_id("alice", 100.0).await;
    let command_id = uuid::Uuid::new_v4();
    let body = json!({"accountId": id, "amount": 25, "commandId": command_id});

    let responses = join_all((0..20).map(|_| app.post("/api/commands/deposit", &body))).await;
    let mut answers = Vec::new();
    for response in responses {
        assert_eq!(response.status(), StatusCode::OK);
        answers.push(response.json::<Value>().await.unwrap());
    }
    assert!(answers.iter().all(|answer| *answer == answers[0]), "different answers: {answers:?}");
    assert_eq!(answers[0]["version"], json!(2));

    assert_eq!(app.event_count().await, 2);
    let account = app.account_after(&id, answers[0]["position"].as_str().unwrap()).await;
    assert_eq!(account["currentBalance"], json!(125.0));
    assert_eq!(account["transactionCount"], json!(2));
}

#[sqlx::test(migrations = false)]
async fn a_retried_creation_answers_with_the_same_account(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let body = json!({"ownerId": "alice", "initialBalance": 10, "commandId": uuid::Uuid::new_v4()});
    let responses = join_all((0..5).map(|_| app.post("/api/commands/create-account", &body))).await;
    let mut ids = Vec::new();
    for response in responses {
        assert_eq!(response.status(), StatusCode::OK);
        ids.push(response.json::<Value>().await.unwrap()["accountId"].clone());
    }
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    assert_eq!(app.event_count().await, 1);
    let streams: i64 =
        sqlx::query_scalar("SELECT count(DISTINCT stream_id) FROM events").fetch_one(&app.pool).await.unwrap();
    assert_eq!(streams, 1);
}

#[sqlx::test(migrations = false)]
async fn a_retried_refusal_is_refused_again_and_stays_refused(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let id = app.account_id("alice", 10.0).await;
    let withdrawal = json!({"accountId": id, "amount": 50, "commandId": uuid::Uuid::new_v4()});
    let first = app.post("/api/commands/withdraw", &withdrawal).await;
    assert_eq!(error_code(first, StatusCode::UNPROCESSABLE_ENTITY).await, "insufficient_funds");

    // Money arrives; the old withdrawal, retried, is still the refused one: a retry repeats
    // the first answer, it does not run the command again.
    let deposit = app.deposit(&id, 100).await;
    assert_eq!(deposit.status(), StatusCode::OK);
    let retry = app.post("/api/commands/withdraw", &withdrawal).await;
    assert_eq!(retry.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = retry.json().await.unwrap();
    assert_eq!(body["error"]["message"], json!("Insufficient funds: balance 10.00, withdrawal 50.00"));
    assert_eq!(app.event_count().await, 2);
}

#[sqlx::test(migrations = false)]
async fn a_command_id_reused_for_another_command_is_409(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let id = app.account_id("alice", 10.0).await;
    let command_id = uuid::Uuid::new_v4();
    let first =
        app.post("/api/commands/deposit", &json!({"accountId": id, "amount": 5, "commandId": command_id})).await;
    assert_eq!(first.status(), StatusCode::OK);
    for other in [
        ("/api/commands/deposit", json!({"accountId": id, "amount": 6, "commandId": command_id})),
        ("/api/commands/withdraw", json!({"accountId": id, "amount": 5, "commandId": command_id})),
        ("/api/commands/create-account", json!({"ownerId": "alice", "initialBalance": 5, "commandId": command_id})),
    ] {
        let response = app.post(other.0, &other.1).await;
        assert_eq!(error_code(response, StatusCode::CONFLICT).await, "command_id_reused", "{other:?}");
    }
    assert_eq!(app.event_count().await, 2);
}

#[sqlx::test(migrations = false)]
async fn commands_without_an_id_are_each_new(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let id = app.account_id("alice", 0.0).await;
    for _ in 0..3 {
        let response = app.deposit(&id, 1).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    assert_eq!(app.event_count().await, 4);
}

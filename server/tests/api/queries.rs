use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::helpers::{error_code, spawn_app};

#[sqlx::test(migrations = "../migrations")]
async fn every_answer_says_what_it_is_current_as_of(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let created = app.create_account("alice", 5.0).await;
    let account = app.account_after(created["accountId"].as_str().unwrap(), created["position"].as_str().unwrap()).await;
    let as_of: eventstore::Position = account["asOf"].as_str().unwrap().parse().unwrap();
    let token: eventstore::Position = created["position"].as_str().unwrap().parse().unwrap();
    assert!(as_of >= token);
}

#[sqlx::test(migrations = "../migrations")]
async fn high_value_accounts_are_those_at_or_above_the_minimum_highest_first(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    for (owner, balance) in [("a", 50.0), ("b", 1000.0), ("c", 999.99), ("d", 5000.0), ("e", 1000.0)] {
        app.create_account(owner, balance).await;
    }
    app.wait_for_projection().await;
    let response = app.post("/api/queries/high-value-accounts", &json!({"minBalance": 1000})).await;
    assert_eq!(response.status(), StatusCode::OK);
    let list: Value = response.json().await.unwrap();
    let balances: Vec<f64> = list["accounts"].as_array().unwrap().iter().map(|a| a["currentBalance"].as_f64().unwrap()).collect();
    assert_eq!(balances, vec![5000.0, 1000.0, 1000.0]);

    let response = app.post("/api/queries/high-value-accounts", &json!({"minBalance": -1})).await;
    assert_eq!(error_code(response, StatusCode::BAD_REQUEST).await, "invalid_amount");
}

#[sqlx::test(migrations = "../migrations")]
async fn high_value_accounts_are_at_most_100(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    for i in 0..105 {
        app.create_account(&format!("owner-{i}"), 1000.0 + f64::from(i)).await;
    }
    app.wait_for_projection().await;
    let list: Value = app.post("/api/queries/high-value-accounts", &json!({"minBalance": 0})).await.json().await.unwrap();
    let accounts = list["accounts"].as_array().unwrap();
    assert_eq!(accounts.len(), 100);
    assert_eq!(accounts[0]["currentBalance"], json!(1104.0));
}

#[sqlx::test(migrations = "../migrations")]
async fn accounts_can_be_listed_and_filtered_by_owner(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    for owner in ["alice", "bob", "alice"] {
        app.create_account(owner, 1.0).await;
    }
    app.wait_for_projection().await;
    let all: Value = app.post("/api/queries/accounts", &json!({})).await.json().await.unwrap();
    assert_eq!(all["accounts"].as_array().unwrap().len(), 3);
    let alices: Value = app.post("/api/queries/accounts", &json!({"ownerId": "alice"})).await.json().await.unwrap();
    let owners: Vec<&str> = alices["accounts"].as_array().unwrap().iter().map(|a| a["ownerId"].as_str().unwrap()).collect();
    assert_eq!(owners, vec!["alice", "alice"]);
}

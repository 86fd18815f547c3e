use reqwest::StatusCode;
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use testkit::{PATIENCE, eventually, when};

use crate::helpers::{error_code, spawn_app, spawn_app_with};

#[sqlx::test(migrations = false)]
async fn create_account_answers_with_the_id_version_and_token(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let answer = app.create_account("alice", 100.0).await;
    assert!(uuid::Uuid::parse_str(answer["accountId"].as_str().unwrap()).is_ok());
    assert_eq!(answer["version"], json!(1));
    let token = answer["position"].as_str().unwrap();
    assert!(token.parse::<eventstore::Position>().is_ok(), "token {token}");
}

#[sqlx::test(migrations = false)]
async fn a_new_account_reads_as_the_seed_says(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let answer = app.create_account("alice", 100.0).await;
    let id = answer["accountId"].as_str().unwrap();
    let account = app.account_after(id, answer["position"].as_str().unwrap()).await;
    assert_eq!(account["accountId"], json!(id));
    assert_eq!(account["ownerId"], json!("alice"));
    assert_eq!(account["currentBalance"], json!(100.0));
    // The initial balance counts as the first deposit.
    assert_eq!(account["totalDeposits"], json!(100.0));
    assert_eq!(account["totalWithdrawals"], json!(0.0));
    assert_eq!(account["transactionCount"], json!(1));
    assert_eq!(account["lastTransaction"], account["createdAt"]);
    assert_eq!(account["version"], json!(1));
}

#[sqlx::test(migrations = false)]
async fn deposits_and_withdrawals_reach_the_read_model(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let id = app.create_account("alice", 100.0).await["accountId"].as_str().unwrap().to_owned();

    let deposited = app.deposit(&id, 50.5).await;
    assert_eq!(deposited.status(), StatusCode::OK);
    assert_eq!(deposited.json::<serde_json::Value>().await.unwrap()["version"], json!(2));

    let withdrawn = app.withdraw(&id, 20).await;
    assert_eq!(withdrawn.status(), StatusCode::OK);
    let withdrawn: serde_json::Value = withdrawn.json().await.unwrap();
    assert_eq!(withdrawn["accountId"], json!(id));
    assert_eq!(withdrawn["version"], json!(3));

    let account = app.account_after(&id, withdrawn["position"].as_str().unwrap()).await;
    assert_eq!(account["currentBalance"], json!(130.5));
    assert_eq!(account["totalDeposits"], json!(150.5));
    assert_eq!(account["totalWithdrawals"], json!(20.0));
    assert_eq!(account["transactionCount"], json!(3));
    assert_eq!(account["version"], json!(3));
    assert_ne!(account["lastTransaction"], account["createdAt"]);
}

#[sqlx::test(migrations = false)]
async fn amounts_are_exact(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let id = app.create_account("alice", 0.0).await["accountId"].as_str().unwrap().to_owned();
    // Ten deposits of 0.1 as floats would not sum to 1.00; as decimals they do.
    let mut token = String::new();
    for _ in 0..10 {
        let answer = app.deposit(&id, 0.1).await;
        token = answer.json::<serde_json::Value>().await.unwrap()["position"].as_str().unwrap().to_owned();
    }
    app.account_after(&id, &token).await;
    let response = app.get(&format!("/api/queries/accounts/{id}?after={token}")).await;
    let text = response.text().await.unwrap();
    assert!(text.contains(r#""currentBalance":1.00"#), "{text}");
    // A numeric string is accepted too.
    let answer = app.deposit(&id, "0.29").await;
    assert_eq!(answer.status(), StatusCode::OK);
    let token = answer.json::<serde_json::Value>().await.unwrap()["position"].as_str().unwrap().to_owned();
    let account = app.account_after(&id, &token).await;
    assert_eq!(account["currentBalance"].to_string(), "1.29");
}

#[sqlx::test(migrations = false)]
async fn withdrawing_more_than_the_balance_is_refused_and_writes_nothing(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let created = app.create_account("alice", 40.0).await;
    let id = created["accountId"].as_str().unwrap();
    let events_before = app.event_count().await;

    let response = app.withdraw(id, 50).await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], json!("insufficient_funds"));
    assert_eq!(body["error"]["message"], json!("Insufficient funds: balance 40.00, withdrawal 50.00"));

    assert_eq!(app.event_count().await, events_before);
    let account = app.account_after(id, created["position"].as_str().unwrap()).await;
    assert_eq!(account["currentBalance"], json!(40.0));
}

#[sqlx::test(migrations = false)]
async fn commands_for_an_unknown_account_are_404_and_write_nothing(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let unknown = uuid::Uuid::new_v4();
    for route in ["/api/commands/deposit", "/api/commands/withdraw"] {
        let response = app.post(route, &json!({"accountId": unknown, "amount": 5})).await;
        assert_eq!(error_code(response, StatusCode::NOT_FOUND).await, "account_not_found");
    }
    assert_eq!(app.event_count().await, 0);
}

#[sqlx::test(migrations = false)]
async fn a_strangers_commands_never_wait_for_the_accounts_turn_and_leave_no_trace(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    // (The owner's deposit may wait as long as the test takes.)
    let app = spawn_app_with(db, |settings| settings.request_timeout = 2 * PATIENCE).await;
    let account = app.account_id("alice", 100.0).await;
    let bob = app.sign_up("bob").await;
    // Given alice's account's turn taken and held: another writer appended its next event and
    // has not committed, and alice's deposit waits behind it,
    let mut blocker = app.pool.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO events (event_id, stream_type, stream_id, stream_version, event_type, schema_version, data)
         VALUES ($1, 'account', $2, 2, 'MoneyDeposited', 2, '{\"amount\": \"1.00\"}')",
    )
    .bind(uuid::Uuid::new_v4())
    .bind(account.parse::<uuid::Uuid>().unwrap())
    .execute(&mut *blocker)
    .await
    .unwrap();
    let owners_deposit = {
        let (client, url) = (app.client.clone(), format!("{}/api/commands/deposit", app.address));
        let body = json!({"accountId": account, "amount": 1});
        tokio::spawn(async move { client.post(url).json(&body).send().await.unwrap().status() })
    };
    eventually("the owner's deposit waiting behind the uncommitted event", PATIENCE, || async {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap();
        when(waiting, |&waiting| waiting >= 1)
    })
    .await;
    let recorded = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM processed_commands").fetch_one(&app.pool).await.unwrap()
    };
    let before = recorded().await;
    // when a stranger who knows the account's id sends it forty withdrawals,
    for _ in 0..40 {
        let refused = bob
            .client
            .post(format!("{}/api/commands/withdraw", app.address))
            .json(&json!({"accountId": account, "amount": 1}))
            .send()
            .await
            .unwrap();
        // then each is refused as for an unknown account at once, not after the owner's turn,
        assert_eq!(error_code(refused, StatusCode::NOT_FOUND).await, "account_not_found");
    }
    // and none of them is recorded.
    assert_eq!(recorded().await, before);
    blocker.rollback().await.unwrap();
    assert_eq!(owners_deposit.await.unwrap(), StatusCode::OK);
}

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use testkit::{PATIENCE, eventually, when};

use crate::helpers::{error_code, spawn_app};

#[sqlx::test(migrations = false)]
async fn every_answer_says_what_it_is_current_as_of(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let created = app.create_account("alice", 5.0).await;
    let account =
        app.account_after(created["accountId"].as_str().unwrap(), created["position"].as_str().unwrap()).await;
    let as_of: eventstore::Position = account["asOf"].as_str().unwrap().parse().unwrap();
    let token: eventstore::Position = created["position"].as_str().unwrap().parse().unwrap();
    assert!(as_of >= token);
}

#[sqlx::test(migrations = false)]
async fn high_value_accounts_are_those_at_or_above_the_minimum_highest_first(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let bob = app.sign_up("bob").await;
    for (owner, balance) in [(None, 50.0), (Some(&bob), 1000.0), (None, 999.99), (Some(&bob), 5000.0), (None, 1000.0)] {
        match owner {
            Some(user) => app.create_account_as(user, balance).await,
            None => app.create_account("alice", balance).await,
        };
    }
    app.wait_for_projection().await;
    let balances = |list: Value| -> Vec<f64> {
        list["accounts"].as_array().unwrap().iter().map(|a| a["currentBalance"].as_f64().unwrap()).collect()
    };
    // An operator sees every owner's; a customer their own.
    let operator = app.operator("olga").await;
    let response = operator
        .client
        .post(format!("{}/api/queries/high-value-accounts", app.address))
        .json(&json!({"minBalance": 1000}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(balances(response.json().await.unwrap()), vec![5000.0, 1000.0, 1000.0]);
    let response = app.post("/api/queries/high-value-accounts", &json!({"minBalance": 1000})).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(balances(response.json().await.unwrap()), vec![1000.0]);

    let response = app.post("/api/queries/high-value-accounts", &json!({"minBalance": -1})).await;
    assert_eq!(error_code(response, StatusCode::BAD_REQUEST).await, "invalid_amount");
}

#[sqlx::test(migrations = false)]
async fn high_value_accounts_are_at_most_100(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    for i in 0..105 {
        app.create_account("alice", 1000.0 + f64::from(i)).await;
    }
    app.wait_for_projection().await;
    let list: Value =
        app.post("/api/queries/high-value-accounts", &json!({"minBalance": 0})).await.json().await.unwrap();
    let accounts = list["accounts"].as_array().unwrap();
    assert_eq!(accounts.len(), 100);
    assert_eq!(accounts[0]["currentBalance"], json!(1104.0));
}

#[sqlx::test(migrations = false)]
async fn accounts_can_be_listed_and_filtered_by_owner(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let bob = app.sign_up("bob").await;
    app.create_account("alice", 1.0).await;
    app.create_account_as(&bob, 1.0).await;
    app.create_account("alice", 1.0).await;
    app.wait_for_projection().await;
    let owners = |list: Value| -> Vec<String> {
        list["accounts"].as_array().unwrap().iter().map(|a| a["ownerId"].as_str().unwrap().to_owned()).collect()
    };
    let list = |client: reqwest::Client, filter: Value| {
        let url = format!("{}/api/queries/accounts", app.address);
        async move { client.post(url).json(&filter).send().await.unwrap().json::<Value>().await.unwrap() }
    };
    // An operator sees all, and may filter by owner.
    let operator = app.operator("olga").await;
    assert_eq!(owners(list(operator.client.clone(), json!({})).await).len(), 3);
    assert_eq!(owners(list(operator.client.clone(), json!({"ownerId": "bob"})).await), ["bob"]);
    // A customer sees their own only, whatever they filter by.
    assert_eq!(owners(list(app.client.clone(), json!({})).await), ["alice", "alice"]);
    assert_eq!(owners(list(app.client.clone(), json!({"ownerId": "alice"})).await), ["alice", "alice"]);
    assert!(owners(list(app.client.clone(), json!({"ownerId": "bob"})).await).is_empty());
}

#[sqlx::test(migrations = false)]
async fn the_ledger_lists_every_movement_with_its_running_balance(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let id = app.account_id("alice", 100.0).await;
    for (route, amount) in [("deposit", 50.0), ("withdraw", 30.0), ("deposit", 0.5)] {
        let response = app.post(&format!("/api/commands/{route}"), &json!({"accountId": id, "amount": amount})).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    app.wait_for_projection().await;
    let ledger = eventually("the ledger's four entries", PATIENCE, || async {
        let ledger: Value =
            app.post("/api/queries/account-ledger", &json!({"accountId": id})).await.json().await.unwrap();
        when(ledger, |ledger| ledger["entries"].as_array().map(Vec::len) == Some(4))
    })
    .await;
    let entries = ledger["entries"].as_array().unwrap();
    let rows: Vec<(String, f64, f64)> = entries
        .iter()
        .map(|e| {
            (e["kind"].as_str().unwrap().to_owned(), e["amount"].as_f64().unwrap(), e["balanceAfter"].as_f64().unwrap())
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            ("opening".into(), 100.0, 100.0),
            ("deposit".into(), 50.0, 150.0),
            ("withdrawal".into(), 30.0, 120.0),
            ("deposit".into(), 0.5, 120.5)
        ]
    );
    let latest_two: Value =
        app.post("/api/queries/account-ledger", &json!({"accountId": id, "limit": 2})).await.json().await.unwrap();
    let versions: Vec<i64> =
        latest_two["entries"].as_array().unwrap().iter().map(|e| e["version"].as_i64().unwrap()).collect();
    assert_eq!(versions, vec![3, 4]);
    let response = app.post("/api/queries/account-ledger", &json!({"accountId": id, "limit": 0})).await;
    assert_eq!(error_code(response, StatusCode::BAD_REQUEST).await, "invalid_request");
}

#[sqlx::test(migrations = false)]
async fn lists_and_the_ledger_read_at_or_past_the_position_they_are_given(_: PgPoolOptions, db: PgConnectOptions) {
    // A wait as long as the test's: the read model is held back on purpose below.
    let app = crate::helpers::spawn_app_with(db.clone(), |settings| settings.catch_up_bound = PATIENCE).await;
    // A transaction of the test's own, open while the account is made: every projection reads
    // below the oldest open transaction, so the read model cannot reach the account until it
    // ends.
    let mut holder = sqlx::PgConnection::connect_with(&db).await.unwrap();
    use sqlx::{Connection, Executor};
    holder.execute("BEGIN").await.unwrap();
    holder.execute("SELECT pg_current_xact_id()").await.unwrap();
    let created = app.create_account("alice", 10.0).await;
    let (id, token) = (created["accountId"].as_str().unwrap().to_owned(), created["position"].clone());
    let asked = [
        ("/api/queries/accounts", json!({"after": token})),
        ("/api/queries/high-value-accounts", json!({"minBalance": 5, "after": token})),
        ("/api/queries/account-ledger", json!({"accountId": id, "after": token})),
    ];
    let reads: Vec<_> = asked
        .iter()
        .map(|(path, body)| {
            let (client, url, body) = (app.client.clone(), format!("{}{path}", app.address), body.clone());
            tokio::spawn(async move { client.post(url).json(&body).send().await.unwrap().json::<Value>().await })
        })
        .collect();
    // Released a moment later: the reads have arrived by then, on an idle machine at least (on a
    // busy one a read that comes later finds the read model there anyway, and passes).
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    holder.execute("COMMIT").await.unwrap();
    let token: eventstore::Position = token.as_str().unwrap().parse().unwrap();
    for ((path, _), read) in asked.iter().zip(reads) {
        let read = read.await.unwrap().unwrap();
        let as_of: eventstore::Position = read["asOf"].as_str().unwrap().parse().unwrap();
        assert!(as_of >= token, "{path}: as of {as_of}, asked for {token}: {read}");
        assert!(read.to_string().contains(&id), "{path}: {read}");
    }
}

/// The ids on one page of a list, and where the next starts.
fn page(list: &Value, items: &str, id: &str) -> (Vec<String>, Option<String>) {
    let ids = list[items].as_array().unwrap().iter().map(|item| item[id].as_str().unwrap().to_owned()).collect();
    (ids, list["nextPage"].as_str().map(str::to_owned))
}

#[sqlx::test(migrations = false)]
async fn the_accounts_list_pages_by_keyset_and_a_new_account_shifts_no_later_page(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    // Given 105 accounts of alice's,
    let app = spawn_app(db).await;
    let mut created = Vec::new();
    for _ in 0..105 {
        created.push(app.account_id("alice", 1.0).await);
    }
    app.wait_for_projection().await;
    // when she reads the first page, then an account is opened, then she reads the next,
    let first: Value = app.post("/api/queries/accounts", &json!({})).await.json().await.unwrap();
    let (first_ids, next) = page(&first, "accounts", "accountId");
    let next = next.expect("a full page names the next");
    let newer = app.account_id("alice", 1.0).await;
    app.wait_for_projection().await;
    let second: Value = app.post("/api/queries/accounts", &json!({"before": next})).await.json().await.unwrap();
    let (second_ids, last) = page(&second, "accounts", "accountId");
    // then the pages hold 100 and 5, newest first, each account once, the new one on neither,
    assert_eq!((first_ids.len(), second_ids.len(), last), (100, 5, None));
    let mut seen: Vec<String> = first_ids.iter().chain(&second_ids).cloned().collect();
    assert_eq!(seen[0], created[104]);
    assert_eq!(seen[104], created[0]);
    seen.sort();
    created.sort();
    assert_eq!(seen, created);
    assert!(!seen.contains(&newer));
    // and a page token that is not one is 400.
    let bad = app.post("/api/queries/accounts", &json!({"before": "yesterday"})).await;
    assert_eq!(error_code(bad, StatusCode::BAD_REQUEST).await, "invalid_request");
}

#[sqlx::test(migrations = false)]
async fn an_accounts_transfers_page_by_keyset(_: PgPoolOptions, db: PgConnectOptions) {
    // Given 12 transfers from one of alice's accounts to another,
    let app = spawn_app(db).await;
    let (from, to) = (app.account_id("alice", 100.0).await, app.account_id("alice", 0.0).await);
    let mut sent = Vec::new();
    for _ in 0..12 {
        let body = json!({"fromAccountId": from, "toAccountId": to, "amount": 1});
        let accepted: Value = app.post("/api/commands/transfer", &body).await.json().await.unwrap();
        sent.push(accepted["transferId"].as_str().unwrap().to_owned());
    }
    eventually("the twelfth listed", PATIENCE, || async {
        let body = json!({"accountId": from, "limit": 100});
        let list: Value = app.post("/api/queries/account-transfers", &body).await.json().await.unwrap();
        when(list, |list| list["transfers"].as_array().is_some_and(|t| t.len() == 12))
    })
    .await;
    // when the sender reads them five at a time,
    let mut pages = Vec::new();
    let mut before = None;
    loop {
        let body = json!({"accountId": from, "limit": 5, "before": before});
        let list: Value = app.post("/api/queries/account-transfers", &body).await.json().await.unwrap();
        let (ids, next) = page(&list, "transfers", "transferId");
        pages.push(ids);
        match next {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    // then three pages hold all twelve, newest first, each once.
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [5, 5, 2]);
    let listed: Vec<String> = pages.concat();
    sent.reverse();
    assert_eq!(listed, sent);
}

//! Statements: an account's movements over a period, as JSON and as CSV, from the ledger read
//! model, adding up to the same balances as the account and its audit trail.

use std::str::FromStr;

use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::helpers::{CUSTOMER, TestApp, error_code, spawn_app};

fn decimal(value: &str) -> Decimal {
    Decimal::from_str(value).unwrap_or_else(|_| panic!("{value:?} is a number"))
}

async fn csv(app: &TestApp, account: &str, query: &str) -> reqwest::Response {
    app.get(&format!("/api/queries/accounts/{account}/statement.csv?{query}")).await
}

/// The CSV's lines as (description, amount, balance), checking each balance follows from the
/// one before it; returns them and the sum of the opening balance and every amount.
fn read_csv(text: &str) -> (Vec<(String, Option<Decimal>, Decimal)>, Decimal) {
    // Amounts and balances with their cents, as a spreadsheet shows money.
    for line in text.split("\r\n").skip(1).filter(|line| !line.is_empty()) {
        let balance = line.rsplit(',').next().unwrap();
        assert!(balance.split_once('.').is_some_and(|(_, cents)| cents.len() == 2), "{line}");
    }
    let mut lines = text.split("\r\n").filter(|line| !line.is_empty());
    assert_eq!(lines.next(), Some("date,description,version,amount,balance"));
    let rows: Vec<_> = lines
        .map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            assert_eq!(fields.len(), 5, "{line}");
            let amount = (!fields[3].is_empty()).then(|| decimal(fields[3]));
            (fields[1].to_owned(), amount, decimal(fields[4]))
        })
        .collect();
    let mut running = rows.first().expect("an opening balance").2;
    for (description, amount, balance) in &rows[1..] {
        if let Some(amount) = amount {
            running += amount;
            assert_eq!(running, *balance, "the balance after {description}");
        }
    }
    (rows, running)
}

#[sqlx::test(migrations = false)]
async fn a_statement_adds_up_to_its_closing_balance_which_is_the_accounts(_: PgPoolOptions, db: PgConnectOptions) {
    // Given an account opened one day with 100, and the next a deposit, a withdrawal and a
    // transfer out,
    let app = spawn_app(db).await;
    let account = app.account_id(CUSTOMER, 100.0).await;
    let other = app.account_id(CUSTOMER, 0.0).await;
    assert_eq!(app.deposit(&account, "50.25").await.status(), StatusCode::OK);
    assert_eq!(app.withdraw(&account, 20).await.status(), StatusCode::OK);
    let transfer = app
        .post("/api/commands/transfer", &json!({"fromAccountId": account, "toAccountId": other, "amount": "0.10"}))
        .await;
    assert_eq!(transfer.status(), StatusCode::OK);
    testkit::eventually("the transfer applied to the ledger", testkit::PATIENCE, || async {
        let body = json!({"accountId": account});
        let ledger: Value = app.post("/api/queries/account-ledger", &body).await.json().await.unwrap();
        testkit::when(ledger, |ledger| ledger["entries"].as_array().is_some_and(|entries| entries.len() == 4))
    })
    .await;
    // (their times set in the read model to two days of March: the account opened on the 1st,
    // the rest on the 2nd)
    sqlx::query(
        "UPDATE account_ledger SET recorded_at = CASE WHEN kind = 'opening' THEN timestamptz '2026-03-01 10:00Z'
                                                      ELSE timestamptz '2026-03-02 10:00Z' + version * interval '1 minute' END
         WHERE account_id = $1::uuid",
    )
    .bind(&account)
    .execute(&app.pool)
    .await
    .unwrap();
    let (today, yesterday) = ("2026-03-02", "2026-03-01");

    // when alice downloads the second day's statement as CSV,
    let response = csv(&app, &account, &format!("from={today}&to={today}")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/csv; charset=utf-8");
    assert!(response.headers()["content-disposition"].to_str().unwrap().starts_with("attachment; filename="));
    let (rows, sum) = read_csv(&response.text().await.unwrap());

    // then it opens with the first day's 100, lists the second's three movements, and the opening
    // balance plus the movements is its closing balance, the account's balance;
    let descriptions: Vec<&str> = rows.iter().map(|(description, _, _)| description.as_str()).collect();
    assert_eq!(descriptions, ["opening balance", "deposit", "withdrawal", "transfer out", "closing balance"]);
    assert_eq!(rows[0].2, decimal("100.00"));
    assert_eq!(rows[3].1, Some(decimal("-0.10")));
    let closing = rows.last().unwrap().2;
    assert_eq!(sum, closing);
    assert_eq!(closing, decimal("130.15"));
    let view: Value = app.get(&format!("/api/queries/accounts/{account}")).await.json().await.unwrap();
    assert_eq!(view["currentBalance"], json!(130.15));
    // the audit trail (the events themselves) ends at the same balance;
    let history: Value =
        app.post("/api/queries/account-history", &json!({"accountId": account})).await.json().await.unwrap();
    let newest = history["entries"].as_array().unwrap().iter().max_by_key(|entry| entry["version"].as_i64()).unwrap();
    assert_eq!(newest["balanceAfter"], json!(130.15));
    // and the first day's statement holds the opening alone; a later one none, at the same
    // balance.
    let (rows, sum) =
        read_csv(&csv(&app, &account, &format!("from={yesterday}&to={yesterday}")).await.text().await.unwrap());
    assert_eq!(
        rows.iter().map(|row| row.0.as_str()).collect::<Vec<_>>(),
        ["opening balance", "opening", "closing balance"]
    );
    assert_eq!((rows[0].2, sum), (Decimal::ZERO, decimal("100.00")));
    let body = json!({"accountId": account, "from": "2999-01-01", "to": "2999-01-31"});
    let later: Value = app.post("/api/queries/account-statement", &body).await.json().await.unwrap();
    assert_eq!((later["openingBalance"].clone(), later["closingBalance"].clone()), (json!(130.15), json!(130.15)));
    assert_eq!(later["entries"], json!([]));
}

#[sqlx::test(migrations = false)]
async fn a_statement_is_the_owners_and_its_period_is_checked(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let account = app.account_id(CUSTOMER, 10.0).await;
    // Someone else's account answers as an unknown one;
    let bob = app.sign_up("bob").await;
    let url = format!("{}/api/queries/accounts/{account}/statement.csv?from=2026-01-01&to=2026-01-31", app.address);
    let response = bob.client.get(&url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let unknown = csv(&app, &uuid::Uuid::new_v4().to_string(), "from=2026-01-01&to=2026-01-31").await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    // and a period that is not one is refused, in the error shape.
    for query in [
        "from=2026-01-01",
        "from=2026-02-01&to=2026-01-01",
        "from=2025-01-01&to=2026-01-02",
        "from=01/01/2026&to=2026-01-02",
        "from=2026-02-30&to=2026-03-01",
    ] {
        let response = csv(&app, &account, query).await;
        assert_eq!(error_code(response, StatusCode::BAD_REQUEST).await, "invalid_request", "{query}");
    }
    let year = json!({"accountId": account, "from": "2024-01-01", "to": "2024-12-31"});
    assert_eq!(app.post("/api/queries/account-statement", &year).await.status(), StatusCode::OK);
}

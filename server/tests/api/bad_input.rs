//! Whatever a client sends, it gets a 4xx with a JSON message, and nothing is written.

use reqwest::StatusCode;
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::helpers::{error_code, spawn_app};

#[sqlx::test(migrations = false)]
async fn malformed_or_incomplete_json_is_400(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let id = app.create_account("alice", 10.0).await["accountId"].as_str().unwrap().to_owned();
    let events_before = app.event_count().await;

    let bodies = [
        "{not json".to_owned(),
        "".to_owned(),
        "[]".to_owned(),
        json!({"amount": 5}).to_string(),
        json!({"accountId": id}).to_string(),
        json!({"accountId": "not-a-uuid", "amount": 5}).to_string(),
        json!({"accountId": 42, "amount": 5}).to_string(),
    ];
    for body in bodies {
        for route in ["/api/commands/deposit", "/api/commands/withdraw"] {
            let code = error_code(app.post_raw(route, body.clone()).await, StatusCode::BAD_REQUEST).await;
            assert_eq!(code, "invalid_request", "{route} {body}");
        }
    }
    for body in [json!({"initialBalance": 5}), json!({"ownerId": "alice"}), json!({"ownerId": 7, "initialBalance": 5})]
    {
        let code = error_code(app.post("/api/commands/create-account", &body).await, StatusCode::BAD_REQUEST).await;
        assert_eq!(code, "invalid_request", "{body}");
    }
    assert_eq!(app.event_count().await, events_before);
}

#[sqlx::test(migrations = false)]
async fn a_body_that_is_not_a_json_object_is_400_even_when_its_items_would_fit(_: PgPoolOptions, db: PgConnectOptions) {
    // Given a server whose commands' arguments, in order, are these,
    let app = spawn_app(db).await;
    let events_before = app.event_count().await;
    // when the arguments come as an array (or any JSON but an object),
    for (route, body) in [
        ("/api/commands/create-account", r#"["alice", 100, null]"#),
        ("/api/commands/create-account", r#"  ["alice", "100", null]"#),
        ("/api/queries/accounts", "[null, null, null]"),
        ("/api/auth/me", "[]"),
        ("/api/auth/me", "\"text\""),
        ("/api/auth/me", "7"),
    ] {
        // then each is refused as malformed, in the error shape,
        let code = error_code(app.post_raw(route, body).await, StatusCode::BAD_REQUEST).await;
        assert_eq!(code, "invalid_request", "{route} {body}");
    }
    // nothing is written, and the same arguments as an object still work.
    assert_eq!(app.event_count().await, events_before);
    assert_eq!(app.post_raw("/api/auth/me", " {}").await.status(), StatusCode::OK);
}

#[sqlx::test(migrations = false)]
async fn invalid_amounts_are_400(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let id = app.create_account("alice", 10.0).await["accountId"].as_str().unwrap().to_owned();
    let events_before = app.event_count().await;

    let invalid = [
        (json!(0), "invalid_amount"),
        (json!(0.0), "invalid_amount"),
        (json!(-5), "invalid_amount"),
        (json!(10.555), "invalid_amount"),
        (json!(1_000_000_000.01), "invalid_amount"),
        (json!(1e15), "invalid_amount"),
        (json!("abc"), "invalid_request"),
        (json!("NaN"), "invalid_request"),
        (json!(null), "invalid_request"),
        (json!(true), "invalid_request"),
        (json!({"value": 5}), "invalid_request"),
    ];
    for (amount, expected) in invalid {
        for route in ["/api/commands/deposit", "/api/commands/withdraw"] {
            let response = app.post(route, &json!({"accountId": id, "amount": amount})).await;
            assert_eq!(error_code(response, StatusCode::BAD_REQUEST).await, expected, "{route} {amount}");
        }
    }
    // Numbers too large for any decimal type.
    let huge = format!(r#"{{"accountId": "{id}", "amount": 1e400}}"#);
    assert_eq!(
        error_code(app.post_raw("/api/commands/deposit", huge).await, StatusCode::BAD_REQUEST).await,
        "invalid_request"
    );
    let long = format!(r#"{{"accountId": "{id}", "amount": 1{}}}"#, "0".repeat(60));
    assert_eq!(
        error_code(app.post_raw("/api/commands/deposit", long).await, StatusCode::BAD_REQUEST).await,
        "invalid_request"
    );

    for initial in [json!(-1), json!(0.001), json!(2e9), json!("ten")] {
        let response =
            app.post("/api/commands/create-account", &json!({"ownerId": "alice", "initialBalance": initial})).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{initial}");
    }
    for owner in ["", "   ", &"x".repeat(101)] {
        let response = app.post("/api/commands/create-account", &json!({"ownerId": owner, "initialBalance": 1})).await;
        assert_eq!(error_code(response, StatusCode::BAD_REQUEST).await, "invalid_owner");
    }
    assert_eq!(app.event_count().await, events_before);
}

#[sqlx::test(migrations = false)]
async fn oversize_bodies_are_413(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let body = json!({"ownerId": "alice".repeat(100 * 1024), "initialBalance": 1});
    let code = error_code(app.post("/api/commands/create-account", &body).await, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert_eq!(code, "payload_too_large");
    assert_eq!(app.event_count().await, 0);
}

#[sqlx::test(migrations = false)]
async fn queries_refuse_bad_ids_and_tokens(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let id = app.create_account("alice", 10.0).await["accountId"].as_str().unwrap().to_owned();
    let response = app.get("/api/queries/accounts/not-a-uuid").await;
    assert_eq!(error_code(response, StatusCode::BAD_REQUEST).await, "invalid_request");
    let response = app.get(&format!("/api/queries/accounts/{id}?after=yesterday")).await;
    assert_eq!(error_code(response, StatusCode::BAD_REQUEST).await, "invalid_request");
    let response = app.get(&format!("/api/queries/accounts/{}", uuid::Uuid::new_v4())).await;
    assert_eq!(error_code(response, StatusCode::NOT_FOUND).await, "account_not_found");
}

#[sqlx::test(migrations = false)]
async fn unknown_routes_and_methods_answer_json(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    assert_eq!(error_code(app.get("/api/nothing-here").await, StatusCode::NOT_FOUND).await, "not_found");
    let response = app.get("/api/commands/deposit").await;
    assert_eq!(error_code(response, StatusCode::METHOD_NOT_ALLOWED).await, "method_not_allowed");
}

#[sqlx::test(migrations = false)]
async fn an_over_precise_amount_is_refused_not_rounded(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let id = app.account_id("alice", 10.0).await;
    let events_before = app.event_count().await;

    // More decimal places than a decimal holds: this was once read as 1.00.
    let over_precise = "1.00000000000000000000000000001";
    for amount in [over_precise.to_owned(), format!("\"{over_precise}\""), "1e-30".to_owned()] {
        let deposit = format!(r#"{{"accountId": "{id}", "amount": {amount}}}"#);
        let response = app.post_raw("/api/commands/deposit", deposit).await;
        assert_eq!(error_code(response, StatusCode::BAD_REQUEST).await, "invalid_amount", "deposit {amount}");
        let create = format!(r#"{{"ownerId": "alice", "initialBalance": {amount}}}"#);
        let response = app.post_raw("/api/commands/create-account", create).await;
        assert_eq!(error_code(response, StatusCode::BAD_REQUEST).await, "invalid_amount", "create {amount}");
    }
    assert_eq!(app.event_count().await, events_before);
    // Trailing zeros beyond a decimal's places are still the same sum.
    let exact = format!(r#"{{"accountId": "{id}", "amount": 1.000000000000000000000000000000}}"#);
    assert_eq!(app.post_raw("/api/commands/deposit", exact).await.status(), StatusCode::OK);
}

#[sqlx::test(migrations = false)]
async fn a_nul_in_an_owner_is_400_and_nothing_is_written(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    for owner in ["\u{0}", "a\u{0}b", "alice\u{0}"] {
        let response = app.post("/api/commands/create-account", &json!({"ownerId": owner, "initialBalance": 1})).await;
        assert_eq!(error_code(response, StatusCode::BAD_REQUEST).await, "invalid_owner", "{owner:?}");
        let response = app.post("/api/queries/accounts", &json!({"ownerId": owner})).await;
        assert_eq!(error_code(response, StatusCode::BAD_REQUEST).await, "invalid_owner", "{owner:?}");
    }
    assert_eq!(app.event_count().await, 0);
    // An empty filter is still no filter.
    for owner in [json!(""), json!("  "), json!(null)] {
        let response = app.post("/api/queries/accounts", &json!({"ownerId": owner})).await;
        assert_eq!(response.status(), StatusCode::OK, "{owner}");
    }
}

#[sqlx::test(migrations = false)]
async fn extreme_versions_and_limits_are_400(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let id = app.account_id("alice", 10.0).await;

    let refused = [
        ("/api/queries/account-history", json!({"accountId": id, "beforeVersion": i64::MIN})),
        ("/api/queries/account-history", json!({"accountId": id, "beforeVersion": -1})),
        ("/api/queries/account-history", json!({"accountId": id, "beforeVersion": 0})),
        ("/api/queries/account-history", json!({"accountId": id, "beforeVersion": u64::MAX})),
        ("/api/queries/account-history", json!({"accountId": id, "limit": i64::MIN})),
        ("/api/queries/account-history", json!({"accountId": id, "limit": -1})),
        ("/api/queries/account-history", json!({"accountId": id, "limit": 0})),
        ("/api/queries/account-history", json!({"accountId": id, "limit": i64::MAX})),
        ("/api/queries/account-history", json!({"accountId": id, "beforeVersion": i64::MIN, "limit": i64::MAX})),
        ("/api/queries/account-at", json!({"accountId": id, "version": i64::MIN})),
        ("/api/queries/account-at", json!({"accountId": id, "version": -1})),
        ("/api/queries/account-at", json!({"accountId": id, "version": 0})),
        ("/api/queries/account-at", json!({"accountId": id, "version": u64::MAX})),
        ("/api/queries/account-ledger", json!({"accountId": id, "limit": i64::MIN})),
        ("/api/queries/account-ledger", json!({"accountId": id, "limit": -1})),
        ("/api/queries/account-ledger", json!({"accountId": id, "limit": 0})),
        ("/api/queries/account-ledger", json!({"accountId": id, "limit": i64::MAX})),
    ];
    for (route, body) in refused {
        let code = error_code(app.post(route, &body).await, StatusCode::BAD_REQUEST).await;
        assert_eq!(code, "invalid_request", "{route} {body}");
    }

    // The largest version is a valid "newest": the page before it, the account at it.
    let page = app.post("/api/queries/account-history", &json!({"accountId": id, "beforeVersion": i64::MAX})).await;
    assert_eq!(page.status(), StatusCode::OK);
    let page: serde_json::Value = page.json().await.unwrap();
    assert_eq!(page["entries"].as_array().unwrap().len(), 1);
    let newest = app.post("/api/queries/account-at", &json!({"accountId": id, "version": i64::MAX})).await;
    assert_eq!(newest.status(), StatusCode::OK);
    let first = app.post("/api/queries/account-history", &json!({"accountId": id, "beforeVersion": 1})).await;
    assert_eq!(first.status(), StatusCode::OK);
}

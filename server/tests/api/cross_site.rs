//! A web page on another site cannot make a visitor's browser move money: the API takes only
//! JSON, and refuses a request a browser marks as coming from elsewhere.

use reqwest::StatusCode;
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::helpers::{TestApp, error_code, spawn_app};

/// A deposit riding on the customer's session cookie, as a browser would send it.
async fn deposit_as(app: &TestApp, account: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let cookie = app.customer_cookie().await;
    let mut request = app
        .anonymous
        .post(format!("{}/api/commands/deposit", app.address))
        .header("cookie", cookie)
        .body(json!({"accountId": account, "amount": 10}).to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

#[sqlx::test(migrations = false)]
async fn a_cross_site_post_is_refused_and_moves_nothing(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let account = app.account_id("alice", 100.0).await;
    let events = app.event_count().await;

    // What a form or a `fetch` without preflight on another site can send.
    for content_type in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"] {
        let response = deposit_as(&app, &account, &[("content-type", content_type)]).await;
        assert_eq!(error_code(response, StatusCode::UNSUPPORTED_MEDIA_TYPE).await, "unsupported_media_type");
    }
    let response = deposit_as(&app, &account, &[]).await;
    assert_eq!(error_code(response, StatusCode::UNSUPPORTED_MEDIA_TYPE).await, "unsupported_media_type");

    // JSON, but the browser says it comes from elsewhere.
    let json = ("content-type", "application/json");
    for from_elsewhere in [
        vec![json, ("origin", "https://evil.example")],
        vec![json, ("origin", "null")],
        vec![json, ("sec-fetch-site", "cross-site")],
        vec![json, ("sec-fetch-site", "same-site")],
    ] {
        let response = deposit_as(&app, &account, &from_elsewhere).await;
        assert_eq!(error_code(response, StatusCode::FORBIDDEN).await, "forbidden", "{from_elsewhere:?}");
    }
    assert_eq!(app.event_count().await, events, "nothing was written");

    // This site's own pages, and clients that are not browsers, go on.
    let own_origin = app.address.clone();
    let same_site = [
        ("content-type", "application/json; charset=utf-8"),
        ("origin", own_origin.as_str()),
        ("sec-fetch-site", "same-origin"),
    ];
    assert_eq!(deposit_as(&app, &account, &same_site).await.status(), StatusCode::OK);
    assert_eq!(deposit_as(&app, &account, &[json]).await.status(), StatusCode::OK);
    assert_eq!(app.event_count().await, events + 2);
}

#[sqlx::test(migrations = false)]
async fn every_answer_forbids_framing_sniffing_and_leaking_referrers(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let page = app.get("/").await;
    let refused = deposit_as(&app, "not-an-account", &[("content-type", "text/plain")]).await;
    let api = app.get("/api/queries/accounts/not-an-account").await;
    for response in [page, refused, api] {
        let headers = response.headers();
        let policy = headers["content-security-policy"].to_str().unwrap();
        assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["referrer-policy"], "same-origin");
    }
}

#[sqlx::test(migrations = false)]
async fn a_page_runs_only_the_scripts_it_was_sent_with(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let first = app.get("/").await;
    let policy = first.headers()["content-security-policy"].to_str().unwrap().to_owned();
    let html = first.text().await.unwrap();
    let nonce = policy
        .split("'nonce-")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .unwrap_or_else(|| panic!("no script nonce in {policy}"));
    assert!(policy.contains("script-src 'self' 'nonce-"), "{policy}");
    assert!(!policy.contains("unsafe-inline"), "{policy}");
    // Every inline script of the page carries it.
    let scripts = html.matches("<script").count();
    assert!(scripts > 0);
    assert_eq!(html.matches(&format!("nonce=\"{nonce}\"")).count(), scripts, "{html}");
    // A new one for every answer.
    let second = app.get("/").await;
    assert!(!second.headers()["content-security-policy"].to_str().unwrap().contains(nonce));
}

//! The pages are rendered on the server from the read model.

use reqwest::StatusCode;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::helpers::spawn_app;

#[sqlx::test(migrations = false)]
async fn the_account_page_is_rendered_with_its_balance(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let created = app.create_account("alice", 1234.5).await;
    app.wait_for_projection().await;
    let response = app.get(&format!("/accounts/{}", created["accountId"].as_str().unwrap())).await;
    assert_eq!(response.status(), StatusCode::OK);
    let html = response.text().await.unwrap();
    // The server's spelling, the same for every viewer (the browser rewrites it in theirs):
    // money as en-US writes the bank's currency, times in UTC with the exact one for machines.
    assert!(html.contains("$1,234.50"), "{html}");
    assert!(html.contains("alice"));
    assert!(html.contains(r#"<time datetime=""#) && html.contains(r#" UTC">"#), "{html}");
}

#[sqlx::test(migrations = false)]
async fn the_accounts_page_lists_accounts(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let id = app.account_id("alice", 10.0).await;
    app.wait_for_projection().await;
    let html = app.get("/").await.text().await.unwrap();
    assert!(html.contains(&id), "{html}");
}

#[sqlx::test(migrations = false)]
async fn a_signed_out_visitor_is_sent_to_sign_in_and_back(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let id = app.account_id("alice", 10.0).await;
    let no_redirects = crate::helpers::http_client().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    for (page, back) in
        [("/".to_owned(), "/".to_owned()), (format!("/accounts/{id}?at=1"), format!("/accounts/{id}%3Fat%3D1"))]
    {
        let response = no_redirects.get(format!("{}{page}", app.address)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{page}");
        assert_eq!(response.headers()["location"], format!("/sign-in?next={back}").as_str());
    }
    let sign_in = app.anonymous.get(format!("{}/sign-in", app.address)).send().await.unwrap();
    assert_eq!(sign_in.status(), StatusCode::OK);
    let html = sign_in.text().await.unwrap();
    assert!(html.contains("Sign in") && !html.contains(&id), "{html}");
}

#[sqlx::test(migrations = false)]
async fn unknown_pages_are_404(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let response = app.get("/no/such/page").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(response.text().await.unwrap().contains("Page not found"));
}

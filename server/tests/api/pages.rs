//! The pages are rendered on the server from the read model.

use reqwest::StatusCode;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::helpers::spawn_app;

#[sqlx::test(migrations = false)]
async fn the_account_page_is_rendered_with_its_balance(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let created = app.create_account("erin", 1234.5).await;
    app.wait_for_projection().await;
    let response = app.get(&format!("/accounts/{}", created["accountId"].as_str().unwrap())).await;
    assert_eq!(response.status(), StatusCode::OK);
    let html = response.text().await.unwrap();
    assert!(html.contains("1,234.50"), "{html}");
    assert!(html.contains("erin"));
}

#[sqlx::test(migrations = false)]
async fn the_accounts_page_lists_accounts(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    app.create_account("frank", 10.0).await;
    app.wait_for_projection().await;
    let html = app.get("/").await.text().await.unwrap();
    assert!(html.contains("frank"), "{html}");
}

#[sqlx::test(migrations = false)]
async fn unknown_pages_are_404(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let response = app.get("/no/such/page").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(response.text().await.unwrap().contains("Page not found"));
}

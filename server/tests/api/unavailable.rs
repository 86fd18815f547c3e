//! When the database goes away, requests answer 503 with a message, the server keeps running,
//! and it recovers when the database is back.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection};

use crate::helpers::{error_code, spawn_app_with};

#[sqlx::test(migrations = false)]
async fn requests_answer_503_while_the_database_is_unreachable_then_recover(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app_with(db.clone(), |settings| settings.acquire_timeout = std::time::Duration::from_secs(1)).await;
    let id = app.account_id("alice", 10.0).await;
    let database = db.get_database().unwrap().to_owned();
    let mut admin = PgConnection::connect_with(&db.clone().database("postgres")).await.unwrap();

    // Refuse new connections to the app's database (a connection limit would not stop a
    // superuser; this does) and cut the ones it has.
    sqlx::query(&format!(r#"ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS false"#))
        .execute(&mut admin)
        .await
        .unwrap();
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(&database)
    .execute(&mut admin)
    .await
    .unwrap();

    let started = std::time::Instant::now();
    let deposit = app.post("/api/commands/deposit", &json!({"accountId": id, "amount": 1})).await;
    assert_eq!(error_code(deposit, StatusCode::SERVICE_UNAVAILABLE).await, "service_unavailable");
    let query = app.get(&format!("/api/queries/accounts/{id}")).await;
    assert_eq!(error_code(query, StatusCode::SERVICE_UNAVAILABLE).await, "service_unavailable");
    assert_eq!(app.get("/health").await.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "503s took {:?}", started.elapsed());

    sqlx::query(&format!(r#"ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS true"#))
        .execute(&mut admin)
        .await
        .unwrap();
    let mut recovered = false;
    for _ in 0..50 {
        let deposit = app.post("/api/commands/deposit", &json!({"accountId": id, "amount": 1})).await;
        if deposit.status() == StatusCode::OK {
            recovered = true;
            break;
        }
        assert_eq!(deposit.status(), StatusCode::SERVICE_UNAVAILABLE);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(recovered, "the server did not recover");
    assert_eq!(app.get("/health").await.status(), StatusCode::OK);
}

#[sqlx::test(migrations = false)]
async fn a_request_that_takes_too_long_is_answered_503_in_time(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app_with(db, |settings| {
        settings.request_timeout = std::time::Duration::from_millis(500);
        settings.catch_up_bound = std::time::Duration::from_secs(10);
    })
    .await;
    let account = app.account_id("alice", 1.0).await;
    // The read model stops at an event it cannot apply, so a query waiting for a later command
    // would wait its whole bound.
    app.insert_poison_event().await;
    let deposited = app.post("/api/commands/deposit", &json!({"accountId": account, "amount": 1})).await;
    let token = deposited.json::<serde_json::Value>().await.unwrap()["position"].as_str().unwrap().to_owned();
    let started = std::time::Instant::now();
    let response = app.get(&format!("/api/queries/accounts/{account}?after={token}")).await;
    assert!(started.elapsed() < std::time::Duration::from_secs(3), "answered after {:?}", started.elapsed());
    assert_eq!(error_code(response, StatusCode::SERVICE_UNAVAILABLE).await, "service_unavailable");
}

#[sqlx::test(migrations = false)]
async fn a_client_trickling_its_headers_is_cut_off(_: PgPoolOptions, db: PgConnectOptions) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(db, |settings| settings.header_read_timeout = Duration::from_secs(1)).await;
    let mut stream = tokio::net::TcpStream::connect(app.address.trim_start_matches("http://")).await.unwrap();
    stream.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let started = std::time::Instant::now();
    // A header line every 300 ms, never the blank line that ends them.
    let mut closed = false;
    for n in 0..30 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if stream.write_all(format!("X-Slow-{n}: 1\r\n").as_bytes()).await.is_err() {
            closed = true;
            break;
        }
        let mut buffer = [0u8; 512];
        match tokio::time::timeout(Duration::from_millis(1), stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(_)) => {
                // An answer (408 or similar) before closing is fine too.
                closed = true;
                break;
            }
            Err(_) => {}
        }
    }
    assert!(closed, "still open after {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(4), "cut off after {:?}", started.elapsed());
}

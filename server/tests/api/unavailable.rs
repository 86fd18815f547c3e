//! When the database goes away, requests answer 503 with a message, the server keeps running,
//! and it recovers when the database is back.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection};
use testkit::{PATIENCE, eventually, when};

use crate::helpers::{error_code, spawn_app_with};

#[sqlx::test(migrations = false)]
async fn requests_answer_503_while_the_database_is_unreachable_then_recover(_: PgPoolOptions, db: PgConnectOptions) {
    // The 503s come from the pool's bound on a wait for a connection; the request's own bound is
    // longer than the test waits for them.
    let app = spawn_app_with(db.clone(), |settings| {
        settings.acquire_timeout = Duration::from_secs(1);
        settings.request_timeout = 2 * PATIENCE;
    })
    .await;
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

    let bounded = |request: reqwest::RequestBuilder| async move {
        request.timeout(PATIENCE).send().await.expect("answered before the request's own bound")
    };
    let deposit = bounded(
        app.client.post(format!("{}/api/commands/deposit", app.address)).json(&json!({"accountId": id, "amount": 1})),
    )
    .await;
    assert_eq!(error_code(deposit, StatusCode::SERVICE_UNAVAILABLE).await, "service_unavailable");
    let query = bounded(app.client.get(format!("{}/api/queries/accounts/{id}", app.address))).await;
    assert_eq!(error_code(query, StatusCode::SERVICE_UNAVAILABLE).await, "service_unavailable");
    let health = bounded(app.client.get(format!("{}/health", app.address))).await;
    assert_eq!(health.status(), StatusCode::SERVICE_UNAVAILABLE);

    sqlx::query(&format!(r#"ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS true"#))
        .execute(&mut admin)
        .await
        .unwrap();
    eventually("a deposit accepted again", PATIENCE, || async {
        let status = app.deposit(&id, 1).await.status();
        assert!(matches!(status, StatusCode::OK | StatusCode::SERVICE_UNAVAILABLE), "{status}");
        when(status, |&status| status == StatusCode::OK)
    })
    .await;
    // (/health gives its last answer again for a second)
    eventually("/health well again", PATIENCE, || async {
        when(app.get("/health").await.status(), |&status| status == StatusCode::OK)
    })
    .await;
}

#[sqlx::test(migrations = false)]
async fn a_request_that_takes_too_long_is_answered_503_in_time(_: PgPoolOptions, db: PgConnectOptions) {
    // A query waiting for the read model would wait far longer than the request may take: only
    // the request's bound can answer it within the test's patience, and it answers 503.
    let app = spawn_app_with(db, |settings| {
        settings.request_timeout = Duration::from_secs(5);
        settings.catch_up_bound = 10 * PATIENCE;
    })
    .await;
    let account = app.account_id("alice", 1.0).await;
    // The read model stops at an event it cannot apply, so a query waiting for a later command
    // would wait its whole bound.
    app.insert_poison_event().await;
    let deposited = app.deposit(&account, 1).await;
    let token = deposited.json::<serde_json::Value>().await.unwrap()["position"].as_str().unwrap().to_owned();
    let response = app
        .client
        .get(format!("{}/api/queries/accounts/{account}?after={token}", app.address))
        .timeout(PATIENCE)
        .send()
        .await
        .expect("answered at the request's bound");
    assert_eq!(error_code(response, StatusCode::SERVICE_UNAVAILABLE).await, "service_unavailable");
}

#[sqlx::test(migrations = false)]
async fn a_client_trickling_its_headers_is_cut_off(_: PgPoolOptions, db: PgConnectOptions) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(db, |settings| settings.header_read_timeout = Duration::from_secs(1)).await;
    let mut stream = tokio::net::TcpStream::connect(app.address.trim_start_matches("http://")).await.unwrap();
    stream.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    // A header line every 300 ms or so, never the blank line that ends them: the server allows
    // 1 s for all of them, and closes the connection however often it hears from the client.
    let (stream, lines) = (tokio::sync::Mutex::new(stream), std::cell::Cell::new(0));
    eventually("the trickling client cut off", PATIENCE, || async {
        let mut stream = stream.lock().await;
        lines.set(lines.get() + 1);
        tokio::time::sleep(Duration::from_millis(300)).await;
        if stream.write_all(format!("X-Slow-{}: 1\r\n", lines.get()).as_bytes()).await.is_err() {
            return Ok(());
        }
        // Closed (0 bytes, an error), or an answer (408 or similar) before closing.
        let mut buffer = [0u8; 512];
        match tokio::time::timeout(Duration::from_millis(1), stream.read(&mut buffer)).await {
            Ok(_) => Ok(()),
            Err(_) => Err(format!("still open after {} header lines", lines.get())),
        }
    })
    .await;
}

#[sqlx::test(migrations = false)]
async fn a_body_that_never_comes_is_answered_at_the_requests_bound(_: PgPoolOptions, db: PgConnectOptions) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Given a client of bob's that announces a command's body and never sends it,
    let app = spawn_app_with(db, |settings| settings.request_timeout = Duration::from_secs(2)).await;
    let bob = app.sign_up("bob").await;
    let host = app.address.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&host).await.unwrap();
    let head = format!(
        "POST /api/commands/deposit HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 40\r\n\r\n",
        bob.token
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // when it waits, then it gets an answer (every layer that reads the body is bounded), not
    // a connection held for good.
    let mut buffer = vec![0u8; 1024];
    let read = tokio::time::timeout(PATIENCE, stream.read(&mut buffer))
        .await
        .expect("answered within the test's patience")
        .unwrap();
    let answer = String::from_utf8_lossy(&buffer[..read]);
    assert!(answer.starts_with("HTTP/1.1 400") || answer.starts_with("HTTP/1.1 503"), "{answer}");
}

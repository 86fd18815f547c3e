use std::time::Duration;

use leptos::config::LeptosOptions;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use server::configuration::Settings;
use server::startup::Application;
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;
use tokio_util::sync::CancellationToken;

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub pool: PgPool,
    shutdown: CancellationToken,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Starts the whole server (migrations, projection, routes) on a free port against the test's
/// own database.
pub async fn spawn_app(database: PgConnectOptions) -> TestApp {
    spawn_app_with(database, |_| {}).await
}

/// [`spawn_app`] with settings of the test's choosing.
pub async fn spawn_app_with(database: PgConnectOptions, configure: impl FnOnce(&mut Settings)) -> TestApp {
    server::telemetry::init();
    let leptos_options = LeptosOptions::builder().output_name("cqrs-bank").site_root("target/site").build();
    let mut settings = Settings::new("127.0.0.1:0".parse().unwrap(), database.clone(), leptos_options);
    configure(&mut settings);
    let application = Application::build(settings).await.expect("the app starts");
    let address = format!("http://{}", application.address());
    let shutdown = application.shutdown_token();
    tokio::spawn(application.run_until_stopped());
    let pool = PgPool::connect_with(database).await.expect("the test connects");
    TestApp { address, client: reqwest::Client::new(), pool, shutdown }
}

impl TestApp {
    /// Stops the server as SIGTERM would.
    pub fn stop(&self) {
        self.shutdown.cancel();
    }

    pub async fn post(&self, path: &str, body: &Value) -> Response {
        self.post_raw(path, body.to_string()).await
    }

    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> Response {
        self.client
            .post(format!("{}{path}", self.address))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("the request is answered")
    }

    pub async fn get(&self, path: &str) -> Response {
        self.client.get(format!("{}{path}", self.address)).send().await.expect("the request is answered")
    }

    pub async fn post_with_header(&self, path: &str, body: &Value, header: (&str, &str)) -> Response {
        self.client
            .post(format!("{}{path}", self.address))
            .header(header.0, header.1)
            .json(body)
            .send()
            .await
            .expect("the request is answered")
    }

    /// Creates an account and returns the command's answer.
    pub async fn create_account(&self, owner: &str, initial_balance: f64) -> Value {
        let response = self
            .post("/api/commands/create-account", &json!({"ownerId": owner, "initialBalance": initial_balance}))
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    /// The account as the read model shows it once it has caught up with `token`.
    ///
    /// The server waits up to 2 s per request. Tests beside this one create and drop databases,
    /// and each of those transactions holds back the cluster-wide snapshot horizon that the
    /// projection reads below, so the test asks again rather than fail on a busy machine.
    pub async fn account_after(&self, account_id: &str, token: &str) -> Value {
        let mut last = Value::Null;
        for _ in 0..10 {
            let response = self.get(&format!("/api/queries/accounts/{account_id}?after={token}")).await;
            let status = response.status();
            last = response.json().await.unwrap();
            if status == StatusCode::OK && last["stale"] == json!(false) {
                return last;
            }
            // 503: the read model does not know the account yet and has not reached the token.
            assert!(matches!(status, StatusCode::OK | StatusCode::SERVICE_UNAVAILABLE), "{status}: {last}");
        }
        panic!("the read model did not catch up with {token}: {last}");
    }

    /// Creates an account and returns its id.
    pub async fn account_id(&self, owner: &str, initial_balance: f64) -> String {
        self.create_account(owner, initial_balance).await["accountId"].as_str().unwrap().to_owned()
    }

    pub async fn event_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&self.pool).await.unwrap()
    }

    /// An event the projections cannot read, as if written by a buggy or newer writer: they
    /// stop at it.
    pub async fn insert_poison_event(&self) {
        sqlx::query(
            "INSERT INTO events (event_id, stream_type, stream_id, stream_version, event_type, schema_version, data)
             VALUES ($1, 'account', $2, 1, 'MoneyDeposited', 2, '{\"amount\": \"lots\"}')",
        )
        .bind(uuid::Uuid::new_v4())
        .bind(uuid::Uuid::new_v4())
        .execute(&self.pool)
        .await
        .unwrap();
    }

    /// Waits until the projection has applied every event in the store.
    pub async fn wait_for_projection(&self) {
        for _ in 0..750 {
            let behind: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM events e, projection_checkpoint('account_summary') c
                 WHERE (e.transaction_id, e.global_position) > (c.transaction_id::text::xid8, c.global_position))",
            )
            .fetch_one(&self.pool)
            .await
            .unwrap();
            if !behind {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the projection did not catch up within 15 s");
    }
}

/// Asserts the contract's error shape and returns the code.
pub async fn error_code(response: Response, status: StatusCode) -> String {
    assert_eq!(response.status(), status);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("application/json"), "content type {content_type}");
    let body: Value = response.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "no message in {body}");
    body["error"]["code"].as_str().expect("an error code").to_owned()
}

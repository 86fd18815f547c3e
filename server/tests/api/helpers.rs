use leptos::config::LeptosOptions;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use server::configuration::Settings;
use server::startup::Application;
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;
use testkit::{PATIENCE, eventually, when};
use tokio_util::sync::CancellationToken;

pub struct TestApp {
    pub address: String,
    /// Signed in as the customer [`CUSTOMER`] with an API token: what the tests' requests use
    /// unless they say otherwise.
    pub client: reqwest::Client,
    /// No credentials at all.
    pub anonymous: reqwest::Client,
    pub pool: PgPool,
    shutdown: CancellationToken,
    operator: tokio::sync::OnceCell<User>,
}

/// The server's pool in the tests: two tests at a time, each with up to two servers, fit in half
/// of a default Postgres's connections (README, "The tests").
pub const TEST_POOL_SIZE: u32 = 2;

/// The customer every [`TestApp`] signs up first; `client` acts as them.
pub const CUSTOMER: &str = "alice";
pub const PASSWORD: &str = "correct horse battery";

/// A user the test signed up or made, with their credentials.
pub struct User {
    pub username: String,
    /// The session cookie (`bank_session=…`, `__Host-bank_session=…` when `Secure`) the sign-in set.
    pub cookie: String,
    /// An API token of theirs.
    pub token: String,
    /// Sends their token with every request.
    pub client: reqwest::Client,
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
    settings.max_connections = TEST_POOL_SIZE;
    // Personal data sealed, as on a server started by scripts/run; every instance of a test
    // shares the one key (they share a database).
    settings.master_keys = Some(test_master_keys());
    // Tests sign in often from one address; the tests of the limits set their own.
    settings.rate_limits.sign_in = server::routes::rate_limits::Rate::per_minute(10_000);
    settings.rate_limits.sign_up = server::routes::rate_limits::Rate::per_hour(10_000);
    settings.rate_limits.sign_in_failures = server::routes::rate_limits::Rate::per_minute(10_000);
    settings.rate_limits.commands = server::routes::rate_limits::Rate::per_second(100_000);
    configure(&mut settings);
    let application = Application::build(settings).await.expect("the app starts");
    let address = format!("http://{}", application.address());
    let shutdown = application.shutdown_token();
    tokio::spawn(application.run_until_stopped());
    let pool = PgPool::connect_with(database).await.expect("the test connects");
    let mut app = TestApp {
        address,
        client: http_client().build().unwrap(),
        anonymous: http_client().build().unwrap(),
        pool,
        shutdown,
        operator: tokio::sync::OnceCell::new(),
    };
    // A second instance on the same database finds the customer there already.
    app.client = app.sign_up_or_in(CUSTOMER).await.client;
    app
}

/// How a user arrives: as someone new, or as someone known.
#[derive(Clone, Copy, Debug)]
pub enum Arrival {
    SignUp,
    SignIn,
}

/// Signs up or in at the server at `address`, then makes the user an API token with the
/// session: what a person does in the browser, then on the tokens page.
pub async fn signed_in_user(address: &str, arrival: Arrival, username: &str, password: &str) -> User {
    let route = match arrival {
        Arrival::SignUp => "sign-up",
        Arrival::SignIn => "sign-in",
    };
    let anonymous = http_client().build().unwrap();
    let response = anonymous
        .post(format!("{address}/api/auth/{route}"))
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .expect("the sign-up or sign-in is answered");
    assert_eq!(response.status(), StatusCode::OK, "{route} of {username}");
    let cookie = session_cookie(&response);
    let response = anonymous
        .post(format!("{address}/api/tokens/create"))
        .header("cookie", &cookie)
        .json(&json!({"name": "tests", "password": password}))
        .send()
        .await
        .expect("the token is made");
    assert_eq!(response.status(), StatusCode::OK, "token for {username}");
    let token = response.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
    let client = http_client().default_headers(headers).build().unwrap();
    User { username: username.to_owned(), cookie, token, client }
}

/// An HTTP client for the tests: a request the server never finishes answering fails the test
/// after [`PATIENCE`], instead of holding the whole suite up.
pub fn http_client() -> reqwest::ClientBuilder {
    reqwest::Client::builder().timeout(PATIENCE)
}

/// The session cookie a sign-in or sign-up answer sets.
pub fn session_cookie(response: &Response) -> String {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find(|value| value.starts_with("bank_session=") || value.starts_with("__Host-bank_session="))
        .and_then(|value| value.split(';').next())
        .expect("a session cookie")
        .to_owned()
}

impl TestApp {
    /// Signs a new customer up (password [`PASSWORD`]) and makes them a token.
    pub async fn sign_up(&self, username: &str) -> User {
        signed_in_user(&self.address, Arrival::SignUp, username, PASSWORD).await
    }

    /// Signs `username` up, or in if they exist.
    pub async fn sign_up_or_in(&self, username: &str) -> User {
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE username = $1)")
            .bind(username)
            .fetch_one(&self.pool)
            .await
            .unwrap();
        if exists { self.sign_in(username).await } else { self.sign_up(username).await }
    }

    /// The operator "olga" (made once per app).
    pub async fn operator_user(&self) -> &User {
        self.operator.get_or_init(|| self.operator("olga")).await
    }

    /// A client of the operator "olga".
    pub async fn operator_client(&self) -> reqwest::Client {
        self.operator_user().await.client.clone()
    }

    /// POST as the operator.
    pub async fn post_as_operator(&self, path: &str, body: &Value) -> Response {
        self.operator_client()
            .await
            .post(format!("{}{path}", self.address))
            .json(body)
            .send()
            .await
            .expect("the request is answered")
    }

    /// GET as the operator.
    pub async fn get_as_operator(&self, path: &str) -> Response {
        self.operator_client()
            .await
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("the request is answered")
    }

    /// Signs an existing user in (password [`PASSWORD`]) and makes them a token.
    pub async fn sign_in(&self, username: &str) -> User {
        signed_in_user(&self.address, Arrival::SignIn, username, PASSWORD).await
    }

    /// A session cookie of [`CUSTOMER`]'s (a new sign-in).
    pub async fn customer_cookie(&self) -> String {
        self.sign_in(CUSTOMER).await.cookie
    }

    /// An operator, made as `server create-operator` makes one (unless made before), signed in.
    pub async fn operator(&self, username: &str) -> User {
        let database = (*self.pool.connect_options()).clone();
        ensure_operator(&database, username).await;
        self.sign_in(username).await
    }

    /// Stops the server as SIGTERM would.
    pub fn stop(&self) {
        self.shutdown.cancel();
    }

    /// `POST /api/commands/deposit` of `amount` (a number or a numeric string) into `account`.
    pub async fn deposit(&self, account: &str, amount: impl Into<Value>) -> Response {
        self.post("/api/commands/deposit", &json!({"accountId": account, "amount": amount.into()})).await
    }

    /// `POST /api/commands/withdraw` of `amount` (a number or a numeric string) from `account`.
    pub async fn withdraw(&self, account: &str, amount: impl Into<Value>) -> Response {
        self.post("/api/commands/withdraw", &json!({"accountId": account, "amount": amount.into()})).await
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
        eventually(&format!("the read model past {token}"), PATIENCE, || async {
            let response = self.get(&format!("/api/queries/accounts/{account_id}?after={token}")).await;
            let status = response.status();
            let read: Value = response.json().await.unwrap();
            // 503: the read model does not know the account yet and has not reached the token.
            assert!(matches!(status, StatusCode::OK | StatusCode::SERVICE_UNAVAILABLE), "{status}: {read}");
            when(read, |read| status == StatusCode::OK && read["stale"] == json!(false))
        })
        .await
    }

    /// Creates an account for `user` (in their name) and returns the command's answer.
    pub async fn create_account_as(&self, user: &User, initial_balance: f64) -> Value {
        let response = user
            .client
            .post(format!("{}/api/commands/create-account", self.address))
            .json(&json!({"ownerId": user.username, "initialBalance": initial_balance}))
            .send()
            .await
            .expect("the request is answered");
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
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

    /// Waits until every Postgres projection has applied every event in the store.
    pub async fn wait_for_projection(&self) {
        wait_for_projections(&self.pool).await;
    }
}

/// Waits until every Postgres projection has applied every event in the store.
pub async fn wait_for_projections(pool: &PgPool) {
    eventually("the projections caught up with the store", PATIENCE, || async {
        let behind = eventstore::projection::behind_the_log(pool, backend::read_side::PROJECTION_NAMES).await.unwrap();
        when(behind, Vec::is_empty)
    })
    .await;
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

/// Makes `username` an operator as `server create-operator` does, unless they are one already.
pub async fn ensure_operator(database: &PgConnectOptions, username: &str) {
    use backend::identity::AdminError;
    use server::startup::UserCommandError;
    match server::startup::create_operator(database, None, username, PASSWORD, false).await {
        Ok(()) | Err(UserCommandError::Refused(AdminError::AlreadyOperator(_))) => {}
        Err(error) => panic!("the operator {username} is not made: {error}"),
    }
}

/// The master key of every server the tests start: made once per test binary.
pub fn test_master_keys() -> backend::personal::MasterKeys {
    static KEY: std::sync::LazyLock<backend::personal::MasterKey> = std::sync::LazyLock::new(|| {
        backend::personal::MasterKey::parse(&backend::personal::MasterKey::generate()).expect("a generated key parses")
    });
    backend::personal::MasterKeys { current: KEY.clone(), previous: None }
}

/// Loads the data keys `events`' personal fields were sealed with, as every reader in the server
/// does before decoding (the process-wide cache may have dropped them since they were written).
pub async fn load_keys(pool: &PgPool, events: &[eventstore::RecordedEvent]) {
    let ids = backend::personal::sealed::key_ids(events.iter().flat_map(|event| [&event.data, &event.metadata]));
    backend::personal::keys::load(pool, ids).await.expect("the data keys load");
}

//! Real server processes (the `server` binary), for what only a process can show: several
//! instances, kill -9, SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use sqlx::postgres::PgConnectOptions;

pub struct ServerProcess {
    child: Child,
    pub address: String,
    pub instance: String,
    /// Every line it has written to stderr so far.
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The URL of `database`'s database on the server `DATABASE_URL` names.
pub fn database_url(database: &PgConnectOptions) -> String {
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL is set");
    let (server, query) = base.split_once('?').map_or((base.as_str(), ""), |(s, q)| (s, q));
    let server = server.rsplit_once('/').map_or(server, |(s, _)| s);
    let name = database.get_database().expect("a database name");
    if query.is_empty() { format!("{server}/{name}") } else { format!("{server}/{name}?{query}") }
}

/// Starts `server` on a free port against `database` and waits until it serves.
pub fn spawn_server(database: &PgConnectOptions, instance: &str) -> ServerProcess {
    spawn_server_with(database, instance, &[])
}

/// [`spawn_server`] with more environment variables.
pub fn spawn_server_with(database: &PgConnectOptions, instance: &str, env: &[(&str, String)]) -> ServerProcess {
    spawn_server_at(&database_url(database), instance, env)
}

/// [`spawn_server_with`] against the database `url` names (on any Postgres).
pub fn spawn_server_at(url: &str, instance: &str, env: &[(&str, String)]) -> ServerProcess {
    let mut child = Command::new(env!("CARGO_BIN_EXE_server"))
        .env("DATABASE_URL", url)
        // The test's database only: an owner set for another one (scripts/test sets it for
        // the end-to-end database) must not be inherited.
        .env_remove("DATABASE_OWNER_URL")
        // Nor a Redis: each test that wants one gives its own, with a key prefix of its own.
        .env_remove("REDIS_URL")
        .env_remove("REDIS_KEY_PREFIX")
        .env_remove("READ_STORE")
        .env_remove("DATABASE_READ_URL")
        .env_remove("PROJECTION_PARTITIONS")
        .env_remove("PROJECTION_PARTITIONS_REBUILD")
        .env_remove("WARM_STREAMS")
        .envs(env.iter().map(|(name, value)| (*name, value.as_str())))
        .env("LEPTOS_SITE_ADDR", "127.0.0.1:0")
        .env("LEPTOS_OUTPUT_NAME", "cqrs-bank")
        .env("INSTANCE_ID", instance)
        .env("DATABASE_MAX_CONNECTIONS", crate::helpers::TEST_POOL_SIZE.to_string())
        // The tests' load comes from one user.
        .env("COMMANDS_PER_SECOND", "100000")
        .env("RUST_LOG", "info,sqlx=warn")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("the server binary starts");
    let stderr = child.stderr.take().unwrap();
    let (found, address) = std::sync::mpsc::channel();
    let name = instance.to_owned();
    let log = Arc::new(Mutex::new(Vec::new()));
    let lines = log.clone();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !sent && let Some(at) = line.find("serving http://") {
                let address: String = line[at + "serving ".len()..].split_whitespace().next().unwrap_or("").to_owned();
                let _ = found.send(address);
                sent = true;
            }
            // Keep the child's log readable in a failing test's output.
            eprintln!("[{name}] {line}");
            lines.lock().unwrap().push(line);
        }
    });
    let address = address.recv_timeout(testkit::PATIENCE).expect("the server reports its address");
    ServerProcess { child, address, instance: instance.to_owned(), log }
}

impl ServerProcess {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// kill -9: no clean-up of any kind.
    pub fn kill_9(&mut self) {
        self.child.kill().expect("SIGKILL is sent");
        self.child.wait().expect("the process is reaped");
    }

    /// Every line it has written to its log so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Waits until it has written `count` lines containing `text` to its log.
    pub async fn logged(&self, text: &str, count: usize) {
        testkit::eventually(
            &format!("{count} log lines of {} saying {text:?}", self.instance),
            testkit::PATIENCE,
            || async {
                let seen = self.log.lock().unwrap().iter().filter(|line| line.contains(text)).count();
                testkit::when(seen, |&seen| seen >= count)
            },
        )
        .await;
    }

    /// SIGTERM, then the exit status once it has stopped (at most `within`).
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        Command::new("kill").args(["-TERM", &self.pid().to_string()]).status().expect("kill runs");
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("the child can be waited for") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Opens an account through this server; returns the command's answer.
    pub async fn create_account(&self, client: &reqwest::Client, owner: &str, initial_balance: i64) -> Value {
        client
            .post(format!("{}/api/commands/create-account", self.address))
            .json(&serde_json::json!({"ownerId": owner, "initialBalance": initial_balance}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Every projection's status, as operators read it: `{"projections": [...]}`.
    pub async fn health(&self, client: &reqwest::Client) -> Value {
        let projections: Value = client
            .post(format!("{}/api/operations/projections", self.address))
            .json(&serde_json::json!({}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        serde_json::json!({ "projections": projections })
    }
}

/// The operator the process tests act as.
pub const OPERATOR: &str = "olga";

/// A client acting as [`OPERATOR`] (made as `server create-operator` makes one) with a token.
pub async fn operator_client(database: &PgConnectOptions, server: &ServerProcess) -> reqwest::Client {
    crate::helpers::ensure_operator(database, OPERATOR).await;
    crate::helpers::signed_in_user(&server.address, crate::helpers::Arrival::SignIn, OPERATOR, crate::helpers::PASSWORD)
        .await
        .client
}

/// The instance leading `projection`, as the operations status reports it.
pub fn owner_of(health: &Value, projection: &str) -> Option<String> {
    health["projections"].as_array()?.iter().find(|p| p["name"] == projection)?["ownerInstance"]
        .as_str()
        .map(str::to_owned)
}

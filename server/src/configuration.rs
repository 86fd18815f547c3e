//! Settings, read from the environment.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use app::write_side::WriteOptions;
use leptos::config::LeptosOptions;
use sqlx::postgres::PgConnectOptions;

#[derive(Clone, Debug)]
pub struct Settings {
    /// Where the server listens; port 0 picks a free port (tests).
    pub address: SocketAddr,
    /// The application's database. Created at start-up if it does not exist.
    pub database: PgConnectOptions,
    pub max_connections: u32,
    /// How long a request waits for a database connection before it answers 503.
    pub acquire_timeout: Duration,
    /// How long a query with `after=<token>` waits for the read model to catch up.
    pub catch_up_bound: Duration,
    /// How many queries may wait for the read model at once; more answer `stale` at once.
    pub max_read_model_waiters: usize,
    /// How many live streams (`GET /api/live`) may be open at once, in all and per client
    /// (`LIVE_MAX_STREAMS`, `LIVE_MAX_STREAMS_PER_CLIENT`); more are answered 429 and those
    /// pages poll instead.
    pub max_live_streams: usize,
    pub max_live_streams_per_client: usize,
    /// How long a request may take until its answer starts (`REQUEST_TIMEOUT_SECONDS`); then it is
    /// answered 503 and its work dropped. A live stream's answer starts at once.
    pub request_timeout: Duration,
    /// Larger request bodies are refused with 413.
    pub body_limit: usize,
    /// Snapshots, retries and per-stream locking of the command handler.
    pub write: WriteOptions,
    /// Names this server instance in the projections' status (`INSTANCE_ID`).
    pub instance_id: String,
    pub leptos_options: LeptosOptions,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigurationError {
    #[error("DATABASE_URL is not set (scripts/run sets it for you)")]
    MissingDatabaseUrl,
    #[error("DATABASE_URL is not a valid Postgres URL: {0}")]
    InvalidDatabaseUrl(sqlx::Error),
    #[error("the Leptos settings cannot be read: {0}")]
    Leptos(String),
    #[error("{0} must be a whole number")]
    NotANumber(&'static str),
}

/// `<host>-<pid>`: unique among the instances running at one time.
fn default_instance_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "server".to_owned());
    format!("{host}-{}", std::process::id())
}

/// A variable parsed as a number of the setting's type (a negative count or duration fails).
fn env_number<T: FromStr>(name: &'static str) -> Result<Option<T>, ConfigurationError> {
    match std::env::var(name) {
        Ok(value) => value.trim().parse().map(Some).map_err(|_| ConfigurationError::NotANumber(name)),
        Err(_) => Ok(None),
    }
}

impl Settings {
    /// `DATABASE_URL` plus the `LEPTOS_*` variables cargo-leptos sets (site address, site root).
    pub fn from_env() -> Result<Settings, ConfigurationError> {
        let url = std::env::var("DATABASE_URL").map_err(|_| ConfigurationError::MissingDatabaseUrl)?;
        let database = PgConnectOptions::from_str(&url).map_err(ConfigurationError::InvalidDatabaseUrl)?;
        let leptos_options = leptos::config::get_configuration(None)
            .map_err(|e| ConfigurationError::Leptos(e.to_string()))?
            .leptos_options;
        let mut settings = Settings::new(leptos_options.site_addr, database, leptos_options);
        if let Some(interval) = env_number("SNAPSHOT_INTERVAL")? {
            settings.write.snapshot_interval = interval;
        }
        if let Some(max) = env_number("LIVE_MAX_STREAMS")? {
            settings.max_live_streams = max;
        }
        if let Some(max) = env_number("LIVE_MAX_STREAMS_PER_CLIENT")? {
            settings.max_live_streams_per_client = max;
        }
        if let Some(seconds) = env_number::<u64>("REQUEST_TIMEOUT_SECONDS")? {
            let seconds = Some(seconds).filter(|s| *s > 0);
            settings.request_timeout =
                Duration::from_secs(seconds.ok_or(ConfigurationError::NotANumber("REQUEST_TIMEOUT_SECONDS"))?);
        }
        if let Ok(instance_id) = std::env::var("INSTANCE_ID") {
            settings.instance_id = instance_id;
        }
        Ok(settings)
    }

    pub fn new(address: SocketAddr, database: PgConnectOptions, leptos_options: LeptosOptions) -> Settings {
        Settings {
            address,
            database,
            max_connections: 20,
            acquire_timeout: Duration::from_secs(3),
            catch_up_bound: Duration::from_secs(2),
            max_read_model_waiters: 1000,
            max_live_streams: 10_000,
            max_live_streams_per_client: 20,
            body_limit: 64 * 1024,
            request_timeout: Duration::from_secs(30),
            write: WriteOptions::default(),
            instance_id: default_instance_id(),
            leptos_options,
        }
    }
}

//! Settings, read from the environment.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use backend::read_side::ReadStore;
use backend::write_side::WriteOptions;

use crate::routes::rate_limits::{Rate, RateSettings};
use leptos::config::LeptosOptions;
use sqlx::postgres::PgConnectOptions;

#[derive(Clone, Debug)]
pub struct Settings {
    /// Where the server listens; port 0 picks a free port (tests).
    pub address: SocketAddr,
    /// The application's database, as the server's role. Created at start-up if it does not exist.
    pub database: PgConnectOptions,
    /// The same database as the role that owns its tables (`DATABASE_OWNER_URL`): migrations run
    /// as it, and it grants the server's role only what the server needs. Unset: the server's
    /// role migrates and owns everything.
    pub owner_database: Option<PgConnectOptions>,
    /// The most connections the server's pool opens (`DATABASE_MAX_CONNECTIONS`, 2 to 1000,
    /// default 20). Each projection's leader and each listener holds one more of its own.
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
    /// How long a client may take to send a request's headers (`HEADER_READ_TIMEOUT_SECONDS`,
    /// default 10); then its connection is closed.
    pub header_read_timeout: Duration,
    /// Larger request bodies are refused with 413.
    pub body_limit: usize,
    /// Snapshots, retries and per-stream locking of the command handler.
    pub write: WriteOptions,
    /// How often one address may sign in and up, and one user send commands.
    pub rate_limits: RateSettings,
    /// Session cookies are `Secure` (`SECURE_COOKIES=true`; set it when the site is served over
    /// https, where browsers then never send the cookie in the clear).
    pub secure_cookies: bool,
    /// How long a command id is remembered (`COMMAND_ID_RETENTION_DAYS`, default 7): a retry
    /// within it is answered from the first outcome; older ones are forgotten.
    pub command_id_retention: Duration,
    /// How long a transfer has to complete (`TRANSFER_DEADLINE_SECONDS`, default 30, at most an
    /// hour); then it is undone: its source refunded if it was debited, and it is marked failed.
    pub transfer_deadline: Duration,
    /// Host names the server answers (`ALLOWED_HOSTS`, comma-separated; empty: any). Others get
    /// 400, so that a DNS name pointed at this server by someone else serves nothing.
    pub allowed_hosts: Vec<String>,
    /// The Redis read store (`REDIS_URL`, e.g. `redis://127.0.0.1:6379/0`); unset: none, and
    /// every query reads Postgres.
    pub redis: Option<RedisSettings>,
    /// Which read store the account and high-value queries read (`READ_STORE`: `auto`, the
    /// default, `redis` or `postgres`).
    pub read_store: ReadStore,
    /// A hot standby of the database, fed by streaming replication, that queries read while it
    /// is close enough (`DATABASE_READ_URL`; unset: queries read the primary).
    pub read_replica: Option<ReplicaSettings>,
    /// How many partitions `account_summary` and `account_ledger` are split into, each led by
    /// one instance at a time (`PROJECTION_PARTITIONS`, 1 to 64, default 1). Every instance must
    /// be started with the same count: a new count empties those tables and rebuilds them.
    pub projection_partitions: u32,
    /// Whether an instance started with another count than the one in force may change it —
    /// emptying those tables and applying the log again — (`PROJECTION_PARTITIONS_REBUILD=yes`)
    /// or refuses to start (the default), so that a mistaken setting wipes nothing.
    pub projection_partitions_rebuild: bool,
    /// Names this server instance in the projections' status (`INSTANCE_ID`).
    pub instance_id: String,
    pub leptos_options: LeptosOptions,
}

#[derive(Clone, Debug)]
pub struct ReplicaSettings {
    pub database: PgConnectOptions,
    /// Behind the primary by more than this (`DATABASE_READ_MAX_LAG_SECONDS`, default 5), the
    /// replica is left alone and queries read the primary.
    pub max_lag: Duration,
}

#[derive(Clone, Debug)]
pub struct RedisSettings {
    pub url: String,
    /// What every key the bank writes starts with (`REDIS_KEY_PREFIX`, default `cqrs-bank:`),
    /// so that one Redis can hold several read stores (the tests') side by side.
    pub key_prefix: String,
}

/// The prefix a Redis key may have: letters, digits, `:`, `_`, `-` and `.`, so that it means
/// itself in a `SCAN MATCH` pattern, ending with `:`, so that no prefix starts another
/// (`bank:` and `bank2:`), whose keys a rebuild's clear would otherwise take for its own.
pub fn valid_key_prefix(prefix: &str) -> bool {
    prefix.len() > 1 && prefix.ends_with(':') && prefix.chars().all(|c| c.is_ascii_alphanumeric() || ":_-.".contains(c))
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigurationError {
    #[error("{0}: {1}")]
    Invalid(&'static str, String),
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

/// `DATABASE_OWNER_URL`, parsed, if set.
pub fn owner_database_from_env() -> Result<Option<PgConnectOptions>, ConfigurationError> {
    match std::env::var("DATABASE_OWNER_URL") {
        Ok(url) if !url.trim().is_empty() => {
            PgConnectOptions::from_str(&url).map(Some).map_err(ConfigurationError::InvalidDatabaseUrl)
        }
        _ => Ok(None),
    }
}

/// `DATABASE_URL`, parsed.
pub fn database_from_env() -> Result<PgConnectOptions, ConfigurationError> {
    let url = std::env::var("DATABASE_URL").map_err(|_| ConfigurationError::MissingDatabaseUrl)?;
    PgConnectOptions::from_str(&url).map_err(ConfigurationError::InvalidDatabaseUrl)
}

impl Settings {
    /// `DATABASE_URL` plus the `LEPTOS_*` variables (site address, site root; `SITE_ENV` in
    /// scripts/lib/common.sh, or cargo-leptos, sets them).
    pub fn from_env() -> Result<Settings, ConfigurationError> {
        let database = database_from_env()?;
        let leptos_options = leptos::config::get_configuration(None)
            .map_err(|e| ConfigurationError::Leptos(e.to_string()))?
            .leptos_options;
        let mut settings = Settings::new(leptos_options.site_addr, database, leptos_options);
        settings.owner_database = owner_database_from_env()?;
        settings.sizes_and_timeouts_from_env()?;
        settings.rules_from_env()?;
        settings.stores_from_env()?;
        if let Ok(instance_id) = std::env::var("INSTANCE_ID") {
            settings.instance_id = instance_id;
        }
        Ok(settings)
    }

    /// Pools, caches, streams and timeouts.
    fn sizes_and_timeouts_from_env(&mut self) -> Result<(), ConfigurationError> {
        if let Some(max) = env_number::<u32>("DATABASE_MAX_CONNECTIONS")? {
            self.max_connections = max.clamp(2, 1000);
        }
        if let Some(interval) = env_number("SNAPSHOT_INTERVAL")? {
            self.write.snapshot_interval = interval;
        }
        if let Some(streams) = env_number("WARM_STREAMS")? {
            self.write.warm_streams = streams;
        }
        if let Some(max) = env_number("LIVE_MAX_STREAMS")? {
            self.max_live_streams = max;
        }
        if let Some(max) = env_number("LIVE_MAX_STREAMS_PER_CLIENT")? {
            self.max_live_streams_per_client = max;
        }
        if let Some(seconds) = env_number::<u64>("REQUEST_TIMEOUT_SECONDS")? {
            let seconds = Some(seconds).filter(|s| *s > 0);
            self.request_timeout =
                Duration::from_secs(seconds.ok_or(ConfigurationError::NotANumber("REQUEST_TIMEOUT_SECONDS"))?);
        }
        if let Some(seconds) = env_number::<u64>("HEADER_READ_TIMEOUT_SECONDS")? {
            self.header_read_timeout = Duration::from_secs(seconds.max(1));
        }
        Ok(())
    }

    /// Rate limits, cookies, retention, deadlines and the hosts served.
    fn rules_from_env(&mut self) -> Result<(), ConfigurationError> {
        if let Some(count) = env_number("SIGN_INS_PER_MINUTE")? {
            self.rate_limits.sign_in = Rate::per_minute(count);
        }
        if let Some(count) = env_number("SIGN_UPS_PER_HOUR")? {
            self.rate_limits.sign_up = Rate::per_hour(count);
        }
        if let Some(count) = env_number("COMMANDS_PER_SECOND")? {
            self.rate_limits.commands = Rate::per_second(count);
        }
        if let Ok(secure) = std::env::var("SECURE_COOKIES") {
            self.secure_cookies = matches!(secure.trim(), "1" | "true" | "yes");
        }
        if let Some(days) = env_number::<u64>("COMMAND_ID_RETENTION_DAYS")? {
            // At least a day: a transfer's steps are answered from their remembered outcomes, and
            // forgetting one while its transfer still runs would let the step happen twice.
            self.command_id_retention = Duration::from_secs(days.max(1) * 24 * 3600);
        }
        if let Some(seconds) = env_number::<u64>("TRANSFER_DEADLINE_SECONDS")? {
            let longest = backend::write_side::transfers::LONGEST_DEADLINE.as_secs();
            self.transfer_deadline = Duration::from_secs(seconds.clamp(1, longest));
        }
        if let Ok(hosts) = std::env::var("ALLOWED_HOSTS") {
            self.allowed_hosts =
                hosts.split(',').map(|host| host.trim().to_ascii_lowercase()).filter(|host| !host.is_empty()).collect();
        }
        Ok(())
    }

    /// Redis, the read store, the read replica and the projections' partitions.
    fn stores_from_env(&mut self) -> Result<(), ConfigurationError> {
        if let Ok(url) = std::env::var("REDIS_URL")
            && !url.trim().is_empty()
        {
            let key_prefix = std::env::var("REDIS_KEY_PREFIX").unwrap_or_else(|_| "cqrs-bank:".to_owned());
            if !valid_key_prefix(&key_prefix) {
                let why = "letters, digits, ':', '_', '-' and '.' only, ending with ':'".to_owned();
                return Err(ConfigurationError::Invalid("REDIS_KEY_PREFIX", why));
            }
            self.redis = Some(RedisSettings { url: url.trim().to_owned(), key_prefix });
        }
        if let Ok(read_store) = std::env::var("READ_STORE") {
            self.read_store =
                read_store.trim().parse().map_err(|why| ConfigurationError::Invalid("READ_STORE", why))?;
        }
        if let Ok(url) = std::env::var("DATABASE_READ_URL")
            && !url.trim().is_empty()
        {
            let database = PgConnectOptions::from_str(url.trim())
                .map_err(|error| ConfigurationError::Invalid("DATABASE_READ_URL", error.to_string()))?;
            let seconds = env_number::<u64>("DATABASE_READ_MAX_LAG_SECONDS")?.unwrap_or(5).clamp(1, 3600);
            self.read_replica = Some(ReplicaSettings { database, max_lag: Duration::from_secs(seconds) });
        }
        if let Some(count) = env_number::<u32>("PROJECTION_PARTITIONS")? {
            if !(1..=eventstore::projection::MAX_PARTITIONS).contains(&count) {
                let why = format!("{count} is not a partition count: 1 to {}", eventstore::projection::MAX_PARTITIONS);
                return Err(ConfigurationError::Invalid("PROJECTION_PARTITIONS", why));
            }
            self.projection_partitions = count;
        }
        if let Ok(rebuild) = std::env::var("PROJECTION_PARTITIONS_REBUILD") {
            self.projection_partitions_rebuild = matches!(rebuild.trim(), "1" | "true" | "yes");
        }
        Ok(())
    }

    pub fn new(address: SocketAddr, database: PgConnectOptions, leptos_options: LeptosOptions) -> Settings {
        Settings {
            address,
            database,
            owner_database: None,
            max_connections: 20,
            acquire_timeout: Duration::from_secs(3),
            catch_up_bound: Duration::from_secs(2),
            max_read_model_waiters: 1000,
            max_live_streams: 10_000,
            max_live_streams_per_client: 20,
            body_limit: 64 * 1024,
            request_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            write: WriteOptions::default(),
            rate_limits: RateSettings::default(),
            secure_cookies: false,
            command_id_retention: Duration::from_secs(7 * 24 * 3600),
            transfer_deadline: Duration::from_secs(30),
            allowed_hosts: Vec::new(),
            redis: None,
            read_store: ReadStore::default(),
            read_replica: None,
            projection_partitions: 1,
            projection_partitions_rebuild: false,
            instance_id: default_instance_id(),
            leptos_options,
        }
    }
}

//! Settings, from the command line or the environment: `server --help` lists them all.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use backend::read_side::ReadStore;
use backend::write_side::WriteOptions;

use clap::builder::BoolishValueParser;
use clap::{Args, Parser, Subcommand};
use eventstore::projection::MAX_PARTITIONS;

use crate::routes::client_address::TrustedProxies;
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
    /// How often a live stream checks that its credentials still hold, when no notification
    /// made it check sooner (default 30 s).
    pub live_recheck: Duration,
    /// How long who a session or token names is trusted without asking the database again,
    /// when no notification from Postgres says it changed (default 2 s: a notification lost to
    /// a reconnection is made up for by then).
    pub callers_remembered_for: Duration,
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
    /// The reverse proxies whose `X-Forwarded-For` is believed (`TRUSTED_PROXIES`).
    pub trusted_proxies: TrustedProxies,
    /// The Redis read store (`REDIS_URL`, e.g. `redis://127.0.0.1:6379/0`); unset: none, and
    /// every query reads Postgres.
    pub redis: Option<RedisSettings>,
    /// Which read store the account and high-value queries read (`READ_STORE`: `auto`, the
    /// default, `redis` or `postgres`).
    pub read_store: ReadStore,
    /// A hot standby of the database, fed by streaming replication, that queries read while it
    /// is close enough (`DATABASE_READ_URL`; unset: queries read the primary).
    pub read_replica: Option<ReplicaSettings>,
    /// How many partitions `account_summary`, `account_ledger` and the Redis store are split
    /// into, each led by one instance at a time (`PROJECTION_PARTITIONS`, 1 to 64, default 1; on
    /// a Redis Cluster, a slot each). Every instance must be started with the same count: a new
    /// count empties those tables and rebuilds them.
    pub projection_partitions: u32,
    /// Whether an instance started with another count than the one in force may change it —
    /// emptying those tables and applying the log again — (`PROJECTION_PARTITIONS_REBUILD=yes`)
    /// or refuses to start (the default), so that a mistaken setting wipes nothing.
    pub projection_partitions_rebuild: bool,
    /// Names this server instance in the projections' status (`INSTANCE_ID`).
    pub instance_id: String,
    /// The master key that wraps every person's data key (`MASTER_KEY_FILE`, a file holding 64
    /// hex digits; `scripts/run` makes one), and during a rotation the one before it
    /// (`PREVIOUS_MASTER_KEY_FILE`). Unset: personal data is written in clear and nobody can be
    /// forgotten (the server says so at start).
    pub master_keys: Option<backend::personal::MasterKeys>,
    /// How long a forgotten person's username stays refused at sign-up
    /// (`USERNAME_COOLING_OFF_DAYS`, default 30), so that nobody passes for them at once.
    pub username_cooling_off: Duration,
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

/// What the bank's Redis keys start with unless `REDIS_KEY_PREFIX` says otherwise.
pub const DEFAULT_KEY_PREFIX: &str = "cqrs-bank:";

/// The prefix a Redis key may have: letters, digits, `:`, `_`, `-` and `.`, so that it means
/// itself in a `SCAN MATCH` pattern, ending with `:`, so that no prefix starts another
/// (`bank:` and `bank2:`), whose keys a rebuild's clear would otherwise take for its own.
pub fn valid_key_prefix(prefix: &str) -> bool {
    prefix.len() > 1 && prefix.ends_with(':') && prefix.chars().all(|c| c.is_ascii_alphanumeric() || ":_-.".contains(c))
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigurationError {
    #[error("DATABASE_URL is not set (scripts/run sets it for you)")]
    MissingDatabaseUrl,
    #[error("{0} is not a valid Postgres URL: {1}")]
    InvalidDatabaseUrl(&'static str, sqlx::Error),
    #[error("the Leptos settings cannot be read: {0}")]
    Leptos(String),
    #[error("{0}: {1}")]
    Invalid(&'static str, String),
}

/// The server's command line: a command, and the settings as flags or environment variables.
#[derive(Debug, Parser)]
#[command(name = "server", version, about = "The bank: its site and its HTTP API over a Postgres event store")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub settings: SettingsArgs,
}

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Serve the bank (what `server` alone does).
    Serve,
    /// Make a new user NAME an operator, with the password read from stdin (one line, so that
    /// it appears neither in the process list nor in the shell's history). A name already taken
    /// is refused, unless --promote makes that customer an operator.
    CreateOperator {
        name: String,
        /// Make an existing customer an operator: their password is set, their sessions and
        /// tokens end.
        #[arg(long)]
        promote: bool,
    },
    /// Set NAME's password (read from stdin, one line): every session and token they had ends,
    /// on every running instance at once.
    ResetPassword { name: String },
}

/// Every setting, as a flag and as the environment variable of the same name (`--redis-url`,
/// `REDIS_URL`): scripts and containers set the variables. Unset, a setting keeps the default
/// [`Settings::new`] gives it; a value that does not parse stops the server, naming the setting.
#[derive(Debug, Clone, Default, Args)]
pub struct SettingsArgs {
    /// The application's database, as the server's role; created at start-up if missing.
    #[arg(long, env, hide_env_values = true)]
    pub database_url: Option<String>,
    /// The same database as the role that owns its tables: migrations run as it, and it grants
    /// the server's role only what the server needs [default: the server's role owns all].
    #[arg(long, env, hide_env_values = true)]
    pub database_owner_url: Option<String>,
    /// The most connections the server's pool opens, 2 to 1000 [default: 20].
    #[arg(long, env)]
    pub database_max_connections: Option<u32>,
    /// Events between two snapshots of an aggregate.
    #[arg(long, env)]
    pub snapshot_interval: Option<i64>,
    /// Streams whose state is kept in memory between commands.
    #[arg(long, env)]
    pub warm_streams: Option<usize>,
    /// Live streams (`GET /api/live`) open at once; more are answered 429 [default: 10000].
    #[arg(long, env)]
    pub live_max_streams: Option<usize>,
    /// Live streams open at once per client [default: 20].
    #[arg(long, env)]
    pub live_max_streams_per_client: Option<usize>,
    /// Seconds a request may take until its response starts; then 503 [default: 30].
    #[arg(long, env, value_parser = clap::value_parser!(u64).range(1..))]
    pub request_timeout_seconds: Option<u64>,
    /// Seconds a client may take to send a request's headers; then its connection is closed
    /// [default: 10].
    #[arg(long, env)]
    pub header_read_timeout_seconds: Option<u64>,
    /// Sign-in attempts per address and minute [default: 10].
    #[arg(long, env)]
    pub sign_ins_per_minute: Option<u32>,
    /// Sign-ups per address and hour [default: 20].
    #[arg(long, env)]
    pub sign_ups_per_hour: Option<u32>,
    /// Commands per user and second [default: 50].
    #[arg(long, env)]
    pub commands_per_second: Option<u32>,
    /// Session cookies are `Secure`: set it when the site is served over https.
    #[arg(long, env, value_parser = BoolishValueParser::new())]
    pub secure_cookies: Option<bool>,
    /// Days a command id is remembered, at least one [default: 7].
    #[arg(long, env)]
    pub command_id_retention_days: Option<u64>,
    /// Seconds a transfer has to complete before it is undone, 1 to 3600 [default: 30].
    #[arg(long, env)]
    pub transfer_deadline_seconds: Option<u64>,
    /// Host names the server answers, comma-separated; others get 400 [default: any].
    #[arg(long, env, value_delimiter = ',')]
    pub allowed_hosts: Option<Vec<String>>,
    /// Reverse proxies whose X-Forwarded-For names the client, comma-separated addresses or
    /// networks (10.0.0.0/8, ::1); limits per address key on the client they name [default:
    /// none: every limit keys on the connection's peer].
    #[arg(long, env, value_delimiter = ',')]
    pub trusted_proxies: Option<Vec<String>>,
    /// The Redis read store, e.g. `redis://127.0.0.1:6379/0` [default: none, Postgres answers].
    #[arg(long, env, hide_env_values = true)]
    pub redis_url: Option<String>,
    /// What every key the bank writes in Redis starts with [default: cqrs-bank:].
    #[arg(long, env, value_parser = key_prefix)]
    pub redis_key_prefix: Option<String>,
    /// Which read store the account queries read: auto, redis or postgres [default: auto].
    #[arg(long, env)]
    pub read_store: Option<ReadStore>,
    /// A hot standby of the database that queries read while it is close enough.
    #[arg(long, env, hide_env_values = true)]
    pub database_read_url: Option<String>,
    /// Seconds the standby may be behind and still be read, 1 to 3600 [default: 5].
    #[arg(long, env)]
    pub database_read_max_lag_seconds: Option<u64>,
    /// Partitions of the splittable projections, each led by one instance [default: 1].
    #[arg(long, env, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_PARTITIONS)))]
    pub projection_partitions: Option<u32>,
    /// An instance started with another partition count rebuilds those tables instead of
    /// refusing to start.
    #[arg(long, env, value_parser = BoolishValueParser::new())]
    pub projection_partitions_rebuild: Option<bool>,
    /// This instance's name in the projections' status [default: <host>-<pid>].
    #[arg(long, env)]
    pub instance_id: Option<String>,
    /// A file holding the master key (64 hex digits) that wraps personal data keys [default:
    /// none: personal data in clear, erasure refused].
    #[arg(long, env)]
    pub master_key_file: Option<String>,
    /// During a rotation, a file holding the master key before MASTER_KEY_FILE's.
    #[arg(long, env)]
    pub previous_master_key_file: Option<String>,
    /// Days a forgotten user's username stays refused at sign-up, at most 36,500 [default: 30].
    #[arg(long, env)]
    pub username_cooling_off_days: Option<u64>,
}

/// `REDIS_KEY_PREFIX`, if it is a valid one.
fn key_prefix(prefix: &str) -> Result<String, String> {
    if valid_key_prefix(prefix) {
        Ok(prefix.to_owned())
    } else {
        Err("letters, digits, ':', '_', '-' and '.' only, ending with ':'".to_owned())
    }
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

/// A Postgres URL, parsed; blank is unset.
fn postgres(name: &'static str, url: Option<&str>) -> Result<Option<PgConnectOptions>, ConfigurationError> {
    match url.map(str::trim).filter(|url| !url.is_empty()) {
        Some(url) => PgConnectOptions::from_str(url)
            .map(Some)
            .map_err(|error| ConfigurationError::InvalidDatabaseUrl(name, error)),
        None => Ok(None),
    }
}

impl SettingsArgs {
    /// The server's database and the owner's (`create-operator` needs only these).
    pub fn databases(&self) -> Result<(PgConnectOptions, Option<PgConnectOptions>), ConfigurationError> {
        let database =
            postgres("DATABASE_URL", self.database_url.as_deref())?.ok_or(ConfigurationError::MissingDatabaseUrl)?;
        Ok((database, postgres("DATABASE_OWNER_URL", self.database_owner_url.as_deref())?))
    }
}

impl Settings {
    /// The settings given, over the defaults, plus the `LEPTOS_*` variables (site address, site
    /// root; `SITE_ENV` in scripts/lib/common.sh, or cargo-leptos, sets them).
    pub fn from_args(args: SettingsArgs) -> Result<Settings, ConfigurationError> {
        let (database, owner_database) = args.databases()?;
        let leptos_options = leptos::config::get_configuration(None)
            .map_err(|e| ConfigurationError::Leptos(e.to_string()))?
            .leptos_options;
        let defaults = Settings::new(leptos_options.site_addr, database, leptos_options);
        let longest_deadline = backend::write_side::transfers::LONGEST_DEADLINE.as_secs();
        let redis_url = args.redis_url.as_deref().map(str::trim).filter(|url| !url.is_empty());
        let read_replica = postgres("DATABASE_READ_URL", args.database_read_url.as_deref())?.map(|database| {
            let seconds = args.database_read_max_lag_seconds.unwrap_or(5).clamp(1, 3600);
            ReplicaSettings { database, max_lag: Duration::from_secs(seconds) }
        });
        let master_key = |name: &'static str, path: Option<&str>| {
            path.map(str::trim)
                .filter(|path| !path.is_empty())
                .map(backend::personal::MasterKey::from_file)
                .transpose()
                .map_err(|error| ConfigurationError::Invalid(name, error.to_string()))
        };
        let previous = master_key("PREVIOUS_MASTER_KEY_FILE", args.previous_master_key_file.as_deref())?;
        let master_keys = master_key("MASTER_KEY_FILE", args.master_key_file.as_deref())?
            .map(|current| backend::personal::MasterKeys { current, previous });
        Ok(Settings {
            master_keys,
            username_cooling_off: args
                .username_cooling_off_days
                .map_or(defaults.username_cooling_off, |days| Duration::from_secs(days.min(36_500) * 24 * 3600)),
            owner_database,
            max_connections: args.database_max_connections.map_or(defaults.max_connections, |max| max.clamp(2, 1000)),
            write: WriteOptions {
                snapshot_interval: args.snapshot_interval.unwrap_or(defaults.write.snapshot_interval),
                warm_streams: args.warm_streams.unwrap_or(defaults.write.warm_streams),
                ..defaults.write
            },
            max_live_streams: args.live_max_streams.unwrap_or(defaults.max_live_streams),
            max_live_streams_per_client: args
                .live_max_streams_per_client
                .unwrap_or(defaults.max_live_streams_per_client),
            request_timeout: args.request_timeout_seconds.map_or(defaults.request_timeout, Duration::from_secs),
            header_read_timeout: args
                .header_read_timeout_seconds
                .map_or(defaults.header_read_timeout, |seconds| Duration::from_secs(seconds.max(1))),
            rate_limits: RateSettings {
                sign_in: args.sign_ins_per_minute.map_or(defaults.rate_limits.sign_in, Rate::per_minute),
                sign_up: args.sign_ups_per_hour.map_or(defaults.rate_limits.sign_up, Rate::per_hour),
                commands: args.commands_per_second.map_or(defaults.rate_limits.commands, Rate::per_second),
                sign_in_failures: defaults.rate_limits.sign_in_failures,
            },
            secure_cookies: args.secure_cookies.unwrap_or(defaults.secure_cookies),
            // At least a day: a transfer's steps are answered from their remembered outcomes, and
            // forgetting one while its transfer still runs would let the step happen twice.
            command_id_retention: args
                .command_id_retention_days
                .map_or(defaults.command_id_retention, |days| Duration::from_secs(days.max(1) * 24 * 3600)),
            transfer_deadline: args
                .transfer_deadline_seconds
                .map_or(defaults.transfer_deadline, |seconds| Duration::from_secs(seconds.clamp(1, longest_deadline))),
            allowed_hosts: args.allowed_hosts.map_or(defaults.allowed_hosts, |hosts| {
                hosts.iter().map(|host| host.trim().to_ascii_lowercase()).filter(|host| !host.is_empty()).collect()
            }),
            trusted_proxies: match args.trusted_proxies {
                None => defaults.trusted_proxies,
                Some(networks) => TrustedProxies::new(
                    networks
                        .iter()
                        .filter(|network| !network.trim().is_empty())
                        .map(|network| network.parse())
                        .collect::<Result<_, _>>()
                        .map_err(|error| ConfigurationError::Invalid("TRUSTED_PROXIES", error))?,
                ),
            },
            redis: redis_url.map(|url| RedisSettings {
                url: url.to_owned(),
                key_prefix: args.redis_key_prefix.clone().unwrap_or_else(|| DEFAULT_KEY_PREFIX.to_owned()),
            }),
            read_store: args.read_store.unwrap_or(defaults.read_store),
            read_replica,
            projection_partitions: args.projection_partitions.unwrap_or(defaults.projection_partitions),
            projection_partitions_rebuild: args
                .projection_partitions_rebuild
                .unwrap_or(defaults.projection_partitions_rebuild),
            instance_id: args.instance_id.unwrap_or(defaults.instance_id),
            ..defaults
        })
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
            live_recheck: Duration::from_secs(30),
            callers_remembered_for: backend::identity::CallerCache::REMEMBERED_FOR,
            body_limit: 64 * 1024,
            request_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            write: WriteOptions::default(),
            rate_limits: RateSettings::default(),
            secure_cookies: false,
            command_id_retention: Duration::from_secs(7 * 24 * 3600),
            transfer_deadline: Duration::from_secs(30),
            allowed_hosts: Vec::new(),
            trusted_proxies: TrustedProxies::default(),
            redis: None,
            read_store: ReadStore::default(),
            read_replica: None,
            projection_partitions: 1,
            projection_partitions_rebuild: false,
            instance_id: default_instance_id(),
            master_keys: None,
            username_cooling_off: Duration::from_secs(30 * 24 * 3600),
            leptos_options,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The command line as given, with the database every test names (flags win over the
    /// environment, so what the test runner's environment holds does not matter here).
    fn parse(flags: &[&str]) -> Result<Cli, clap::Error> {
        let mut arguments = vec!["server", "--database-url", "postgres://bank@db.example/bank"];
        arguments.extend_from_slice(flags);
        Cli::try_parse_from(arguments)
    }

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn no_command_serves_and_the_user_commands_take_a_name() {
        assert_eq!(parse(&[]).expect("parses").command, None);
        let cli = parse(&["create-operator", "alice"]).expect("parses");
        assert_eq!(cli.command, Some(Command::CreateOperator { name: "alice".to_owned(), promote: false }));
        assert!(parse(&["create-operator"]).is_err(), "a name is required");
        let cli = parse(&["create-operator", "--promote", "bob"]).expect("parses");
        assert_eq!(cli.command, Some(Command::CreateOperator { name: "bob".to_owned(), promote: true }));
        let cli = parse(&["reset-password", "carol"]).expect("parses");
        assert_eq!(cli.command, Some(Command::ResetPassword { name: "carol".to_owned() }));
    }

    #[test]
    fn settings_out_of_range_are_clamped_or_refused_as_documented() {
        let cli = parse(&[
            "--database-max-connections=5000",
            "--transfer-deadline-seconds=0",
            "--command-id-retention-days=0",
            "--allowed-hosts=Bank.Example, ,api.example",
            "--secure-cookies=yes",
        ])
        .expect("parses");
        let settings = Settings::from_args(cli.settings).expect("valid settings");
        assert_eq!(settings.max_connections, 1000);
        assert_eq!(settings.transfer_deadline, Duration::from_secs(1));
        assert_eq!(settings.command_id_retention, Duration::from_secs(24 * 3600));
        assert_eq!(settings.allowed_hosts, ["bank.example", "api.example"]);
        assert!(settings.secure_cookies);

        for refused in [
            "--projection-partitions=0",
            "--projection-partitions=65",
            "--request-timeout-seconds=0",
            "--database-max-connections=-1",
            "--redis-key-prefix=no-colon",
            "--read-store=memcached",
        ] {
            assert!(parse(&[refused]).is_err(), "{refused} is refused");
        }
    }

    #[test]
    fn a_database_url_that_does_not_parse_is_named() {
        let cli =
            Cli::try_parse_from(["server", "--database-url", "postgres://bank@db.example:port/bank"]).expect("parses");
        let error = Settings::from_args(cli.settings).expect_err("not a Postgres URL");
        assert!(error.to_string().starts_with("DATABASE_URL is not a valid Postgres URL"), "{error}");
    }
}

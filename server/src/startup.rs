//! Start-up: database, migrations, projections, router. Shared by `main` and the tests.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::FromRef;
use backend::Services;
use backend::read_side::live::spawn_account_feed;
use backend::read_side::{AccountHistory, ReadModel, ReadPools, RedisAccounts, RedisReads, Split, run_projections};
use backend::write_side::{CommandHandler, TransferProcess, TransferRequests, run_transfer_process};
use eventstore::change_feed::ChangeFeed;
use eventstore::projection::StatusCache;
use eventstore::{AppendNotifier, CheckpointWatch};
use leptos::config::LeptosOptions;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, Executor, PgConnection, PgPool};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::configuration::Settings;
use crate::metrics::Metrics;
use crate::routes;
use crate::routes::live::LiveStreams;
use crate::routes::rate_limits::RateLimits;

/// How long requests in flight may take to finish once the server is stopping.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// How long a query waits for a connection to the replica before it reads the primary instead.
const REPLICA_ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);

/// How old a projection status shown to operators, monitors and scrapers may be.
const STATUS_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(1);

/// What every request handler can reach: one pointer, cloned for every middleware and handler
/// of every request, so that a clone is one atomic increment whatever the fields.
#[derive(Clone)]
pub struct AppState(Arc<AppContext>);

impl std::ops::Deref for AppState {
    type Target = AppContext;

    fn deref(&self) -> &AppContext {
        &self.0
    }
}

/// What [`AppState`] points to.
pub struct AppContext {
    pub leptos_options: LeptosOptions,
    pub services: Arc<Services>,
    pub pool: PgPool,
    pub metrics: Arc<Metrics>,
    pub instance_id: String,
    /// What the read model just learned, for the live streams.
    pub change_feed: ChangeFeed,
    pub live_streams: LiveStreams,
    pub rate_limits: RateLimits,
    /// Whose word on the client's address is believed.
    pub trusted_proxies: crate::routes::client_address::TrustedProxies,
    /// `/health`'s last answer.
    pub health: crate::routes::health::HealthCache,
    /// Cancelled when the server stops: live streams end then.
    pub shutdown: CancellationToken,
}

impl FromRef<AppState> for LeptosOptions {
    fn from_ref(state: &AppState) -> LeptosOptions {
        state.leptos_options.clone()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot reach or prepare the database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("cannot migrate the database: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("cannot listen on the address: {0}")]
    Listen(#[from] std::io::Error),
    #[error("cannot use the Redis read store: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("cannot run the projections: {0}")]
    Partitions(#[from] eventstore::projection::AdoptError),
    #[error(
        "the database needs migrating, which this role may not do: set DATABASE_OWNER_URL to the role that owns its tables"
    )]
    NeedsOwner,
    /// Serving would append events that no projection ever reads.
    #[error(transparent)]
    ClusterMoved(eventstore::ClusterMoveError),
}

pub struct Application {
    listener: TcpListener,
    router: Router,
    header_read_timeout: std::time::Duration,
    address: SocketAddr,
    shutdown: CancellationToken,
    background: Vec<JoinHandle<()>>,
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Application, StartupError> {
        let pool = connect(&settings).await?;

        let shutdown = CancellationToken::new();
        let appends = AppendNotifier::new();
        let mut background = appends.spawn_postgres_relay(pool.clone(), shutdown.clone());
        let checkpoints = CheckpointWatch::new(settings.max_read_model_waiters);
        background.extend(checkpoints.spawn_postgres_relay(pool.clone(), shutdown.clone()));
        let redis = match &settings.redis {
            Some(redis) => Some(RedisAccounts::new(&redis.url, &redis.key_prefix, settings.projection_partitions)?),
            None => None,
        };
        let mut read_model = ReadModel::new(read_pools(&settings, &pool), settings.catch_up_bound, checkpoints.clone());
        background.extend(read_model.spawn_replica_monitor(shutdown.clone()));
        if let Some(redis) = &redis {
            read_model = read_model.with_redis(RedisReads::new(redis.clone(), settings.read_store, pool.clone()));
        }
        let commands = CommandHandler::new(pool.clone(), appends.clone(), settings.write);
        let transfer_process = TransferProcess::new(pool.clone(), commands.clone(), appends.clone(), settings.write);
        let services = Arc::new(Services {
            commands,
            transfers: TransferRequests::new(pool.clone(), appends.clone(), settings.write, settings.transfer_deadline),
            read_model,
            history: AccountHistory::new(pool.clone()),
            projection_status: Arc::new(StatusCache::new(pool.clone(), STATUS_MAX_AGE)),
            pool: pool.clone(),
            passwords: backend::identity::Passwords::new(),
            callers: backend::identity::CallerCache::new(settings.callers_remembered_for),
            secure_cookies: settings.secure_cookies,
            master_keys: settings.master_keys.clone(),
            username_cooling_off: settings.username_cooling_off,
            appends: appends.clone(),
        });
        match &settings.master_keys {
            Some(keys) => {
                keys.install();
                background.push(tokio::spawn(rewrap_keys(pool.clone(), keys.current.clone(), shutdown.clone())));
            }
            None if backend::personal::erasure::was_sealed(&pool).await? => tracing::error!(
                "no MASTER_KEY_FILE, yet personal data was sealed in this database: names are now written in clear \
                 beside them, the sealed ones cannot be read, and nobody can be forgotten"
            ),
            None => tracing::warn!(
                "no MASTER_KEY_FILE: personal data is written to the log in clear, and nobody can be forgotten"
            ),
        }
        background.push(services.callers.spawn_postgres_relay(pool.clone(), shutdown.clone()));
        background.push(tokio::spawn(housekeeping(pool.clone(), settings.command_id_retention, shutdown.clone())));
        let split = Split {
            partitions: settings.projection_partitions,
            rebuild_on_change: settings.projection_partitions_rebuild,
        };
        background.extend(
            run_projections(&pool, &appends, &checkpoints, redis.as_ref(), split, &settings.instance_id, &shutdown)
                .await?,
        );
        background.extend(run_transfer_process(&transfer_process, &pool, &appends, &settings.instance_id, &shutdown));
        let (change_feed, feed_task) = spawn_account_feed(pool.clone(), &checkpoints, shutdown.clone());
        background.push(feed_task);

        let metrics = Arc::new(Metrics::new());
        background.push(metrics.spawn_upkeep(shutdown.clone()));
        let state = AppState(Arc::new(AppContext {
            leptos_options: settings.leptos_options.clone(),
            services,
            pool,
            metrics,
            instance_id: settings.instance_id.clone(),
            change_feed,
            live_streams: LiveStreams::new(
                settings.max_live_streams,
                settings.max_live_streams_per_client,
                settings.live_recheck,
            ),
            rate_limits: RateLimits::new(settings.rate_limits),
            trusted_proxies: settings.trusted_proxies.clone(),
            health: Default::default(),
            shutdown: shutdown.clone(),
        }));
        let router = routes::router(state, &settings);
        let listener = TcpListener::bind(settings.address).await?;
        let address = listener.local_addr()?;
        let header_read_timeout = settings.header_read_timeout;
        Ok(Application { listener, router, header_read_timeout, address, shutdown, background })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Stops the server and its background tasks when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serves until SIGTERM, Ctrl-C or the shutdown token, then lets requests in flight and the
    /// projection's current batch finish.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let shutdown = self.shutdown.clone();
        tokio::spawn(cancel_on_signal(shutdown.clone()));
        let serving = async {
            crate::serve::serve(self.listener, self.router, self.header_read_timeout, shutdown.clone()).await;
            Ok(())
        };
        // Requests in flight get a few seconds to finish; a client that stopped reading its live
        // stream (whose end it then never reads) does not hold the shutdown up beyond that.
        let served = tokio::select! {
            served = serving => served,
            _ = async {
                shutdown.cancelled().await;
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            } => {
                tracing::warn!("connections still open after the shutdown grace period; closing them");
                Ok(())
            }
        };
        self.shutdown.cancel();
        for task in self.background {
            let _ = task.await;
        }
        served
    }
}

/// Forgets command ids past their retention, expired sessions and long-revoked tokens, hourly (and at start-up), on
/// every instance: the deletes are idempotent, and a batch at a time.
async fn housekeeping(pool: PgPool, command_id_retention: std::time::Duration, shutdown: CancellationToken) {
    let mut hourly = tokio::time::interval(std::time::Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = hourly.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        match backend::write_side::forget_old_command_ids(&pool, command_id_retention).await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "forgot command ids past their retention"),
            Err(error) => tracing::warn!(%error, "could not purge old command ids; will try again"),
        }
        if let Err(error) = backend::identity::sessions::purge_expired(&pool).await {
            tracing::warn!(%error, "could not purge expired sessions; will try again");
        }
        if let Err(error) = backend::identity::tokens::purge_revoked(&pool).await {
            tracing::warn!(%error, "could not purge long-revoked tokens; will try again");
        }
        if let Err(error) = backend::personal::erasure::drop_cooled_off_names(&pool).await {
            tracing::warn!(%error, "could not drop cooled-off usernames' hashes; will try again");
        }
    }
}

/// Wraps anew, under the current master key, every data key another one wrapped (a rotation:
/// see README), a batch at a time, then every hour (an instance still on the old key may have
/// made some since).
async fn rewrap_keys(pool: PgPool, current: backend::personal::MasterKey, shutdown: CancellationToken) {
    let mut hourly = tokio::time::interval(std::time::Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = hourly.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        match backend::personal::keys::rewrap(&pool, &current, 500).await {
            Ok(rewrapped) if rewrapped.unopenable > 0 => tracing::error!(
                unopenable = rewrapped.unopenable,
                "data keys wrapped by a master key this server was not given: give it as PREVIOUS_MASTER_KEY_FILE"
            ),
            Ok(rewrapped) if rewrapped.done > 0 => {
                tracing::info!(rewrapped = rewrapped.done, master_key = current.id(), "wrapped data keys anew")
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "could not wrap data keys anew; will try again"),
        }
    }
}

/// Creates the database if it is missing and brings its schema up to date. With an owner
/// (`DATABASE_OWNER_URL`), the owner migrates and then grants the server's role
/// (`DATABASE_URL`'s user) what it needs and no more; without one, the server's own role does
/// both (one role for everything, as on a developer's machine).
pub async fn prepare_database(
    database: &PgConnectOptions,
    owner: Option<&PgConnectOptions>,
) -> Result<(), StartupError> {
    let migrating_as = owner.unwrap_or(database);
    ensure_database_exists(migrating_as).await?;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        // Names resolve in the system catalog (implicitly first: listed, it could be put after
        // the schema), then in the schema the tables live in, and nowhere else: not in a schema
        // of the migrating role's name, which another role may own.
        .after_connect(|connection, _| {
            Box::pin(async move {
                connection
                    .execute(
                        "SELECT pg_catalog.set_config('search_path'::text,
                         pg_catalog.quote_ident(pg_catalog.current_schema()::text), false)",
                    )
                    .await
                    .map(drop)
            })
        })
        .connect_with(migrating_as.clone())
        .await?;
    // The server's role alone, on a database an owner migrates (it may create nothing there):
    // nothing to do if the owner has brought it up to date; else say who must.
    if owner.is_none() && !backend::schema::may_create_tables(&pool).await? {
        let up_to_date = backend::schema::is_up_to_date(&pool).await?;
        pool.close().await;
        return if up_to_date { Ok(()) } else { Err(StartupError::NeedsOwner) };
    }
    backend::schema::migrate(&pool).await?;
    if owner.is_some() {
        backend::schema::grant_to_server_role(&pool, database.get_username()).await?;
    }
    pool.close().await;
    Ok(())
}

/// The schema brought up to date, then the server's pool, on a database whose transaction ids
/// the log's positions still fit (`eventstore::check_transaction_ids`).
async fn connect(settings: &Settings) -> Result<PgPool, StartupError> {
    prepare_database(&settings.database, settings.owner_database.as_ref()).await?;
    let pool = PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout)
        .connect_with(settings.database.clone())
        .await?;
    eventstore::check_transaction_ids(&pool).await.map_err(|error| match error {
        eventstore::ClusterMoveError::Database(error) => StartupError::Database(error),
        moved => StartupError::ClusterMoved(moved),
    })?;
    Ok(pool)
}

/// The pools queries read: the primary's, and the replica's if there is one.
fn read_pools(settings: &Settings, pool: &PgPool) -> ReadPools {
    match &settings.read_replica {
        // Lazily: a replica that is down at start-up costs queries nothing (they read the
        // primary until the lag monitor finds it well), and is used as soon as it is.
        Some(replica) => ReadPools::with_replica(
            pool.clone(),
            PgPoolOptions::new()
                .max_connections(settings.max_connections)
                .acquire_timeout(REPLICA_ACQUIRE_TIMEOUT)
                // A statement the replica is slow to answer is asked of the primary after a
                // second; it must not go on running there.
                .connect_lazy_with(replica.database.clone().options([("statement_timeout", "1s")])),
            replica.max_lag,
        ),
        None => ReadPools::primary_only(pool.clone()),
    }
}

/// Why a command-line command on users (`create-operator`, `reset-password`) did nothing.
#[derive(Debug, thiserror::Error)]
pub enum UserCommandError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Database(#[from] StartupError),
    #[error(transparent)]
    Refused(#[from] backend::identity::AdminError),
}

/// `server create-operator [--promote] NAME`: makes a new user NAME an operator with this
/// password (or, with `promote`, an existing customer), after bringing the schema up to date.
pub async fn create_operator(
    database: &PgConnectOptions,
    owner: Option<&PgConnectOptions>,
    name: &str,
    password: &str,
    promote: bool,
) -> Result<(), UserCommandError> {
    use backend::identity::{Passwords, users};
    let (username, password) = user_and_password(name, password)?;
    let pool = administration_pool(database, owner).await?;
    users::create_operator(&pool, &Passwords::new(), &username, &password, promote).await?;
    pool.close().await;
    Ok(())
}

/// `server reset-password NAME`: sets NAME's password, ending every session and token they had
/// (running instances hear of it at once).
pub async fn reset_password(
    database: &PgConnectOptions,
    owner: Option<&PgConnectOptions>,
    name: &str,
    password: &str,
) -> Result<(), UserCommandError> {
    use backend::identity::{Passwords, users};
    let (username, password) = user_and_password(name, password)?;
    let pool = administration_pool(database, owner).await?;
    users::reset_password(&pool, &Passwords::new(), &username, &password).await?;
    pool.close().await;
    Ok(())
}

fn user_and_password(
    name: &str,
    password: &str,
) -> Result<(backend::identity::Username, backend::identity::Password), UserCommandError> {
    use backend::identity::{Password, Username};
    let username = Username::parse(name).map_err(|error| UserCommandError::Invalid(error.to_string()))?;
    let password = Password::parse(password).map_err(UserCommandError::Invalid)?;
    Ok((username, password))
}

/// One connection as the server's role, to a schema brought up to date.
async fn administration_pool(
    database: &PgConnectOptions,
    owner: Option<&PgConnectOptions>,
) -> Result<PgPool, StartupError> {
    prepare_database(database, owner).await?;
    Ok(PgPoolOptions::new().max_connections(1).connect_with(database.clone()).await?)
}

/// Creates the application's database if it is missing, so that a fresh Postgres needs no
/// manual set-up.
async fn ensure_database_exists(options: &PgConnectOptions) -> Result<(), sqlx::Error> {
    let Some(name) = options.get_database().map(str::to_owned) else {
        return Ok(());
    };
    let mut admin = PgConnection::connect_with(&options.clone().database("postgres")).await?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(&name)
        .fetch_one(&mut admin)
        .await?;
    if !exists {
        tracing::info!(database = name, "creating the database");
        let created = admin.execute(format!(r#"CREATE DATABASE "{}""#, name.replace('"', "\"\"")).as_str()).await;
        match created {
            // Another instance starting at the same moment created it first.
            Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("42P04") => {}
            other => {
                other?;
            }
        }
    }
    admin.close().await
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
        _ = shutdown.cancelled() => return,
    }
    tracing::info!("shutting down");
    shutdown.cancel();
}

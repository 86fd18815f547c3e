use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, Executor, PgConnection, PgPool};

pub const DATABASE: &str = "cqrs_bank_bench";

/// The most connections any one pool or client count of the run opens. The published runs size
/// them for B1's 64 clients; the smoke run, part of `scripts/test`, must fit beside the tests in
/// half of a default Postgres's 100 connections (it only shows that every scenario still runs).
static CONNECTION_CAP: AtomicU32 = AtomicU32::new(u32::MAX);

/// Caps every pool and client count of the run at `max` connections.
pub fn cap_connections(max: u32) {
    CONNECTION_CAP.store(max, Ordering::Relaxed);
}

/// `wanted` connections, or fewer under the run's cap.
pub fn connections(wanted: u32) -> u32 {
    wanted.min(CONNECTION_CAP.load(Ordering::Relaxed))
}

/// The connection options of the benchmark database, on the server `DATABASE_URL` names.
pub fn options() -> Result<PgConnectOptions, Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL").map_err(|_| "DATABASE_URL is not set")?;
    Ok(PgConnectOptions::from_str(&url)?.database(DATABASE))
}

/// A freshly created and migrated `cqrs_bank_bench` on the server `DATABASE_URL` names.
///
/// The pool is big enough for B1's 64 clients; connections are opened on demand.
pub async fn fresh() -> Result<PgPool, Box<dyn std::error::Error>> {
    let options = options()?;
    let mut admin = PgConnection::connect_with(&options.clone().database("postgres")).await?;
    admin.execute(format!(r#"DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)"#).as_str()).await?;
    admin.execute(format!(r#"CREATE DATABASE "{DATABASE}""#).as_str()).await?;
    admin.close().await?;
    let pool = pool(80).await?;
    backend::schema::migrate(&pool).await?;
    Ok(pool)
}

/// Another pool on the benchmark database, e.g. one sized like the server's (under the run's
/// cap).
pub async fn pool(max_connections: u32) -> Result<PgPool, Box<dyn std::error::Error>> {
    Ok(PgPoolOptions::new()
        .max_connections(connections(max_connections))
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(options()?)
        .await?)
}

/// Waits until every projection's checkpoint has passed every event in the store (a running
/// server's projections), so that a measurement does not pay for an earlier phase's backlog.
pub async fn wait_for_projections(pool: &PgPool, within: Duration) -> Result<(), Box<dyn std::error::Error>> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let behind = eventstore::projection::behind_the_log(pool, backend::read_side::PROJECTION_NAMES).await?;
        if behind.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("the projections did not catch up within {within:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Inserts valid account events with one statement, bypassing the command handler: for each
/// version `v` in `from_version..=to_version` (outer) and account `a` in `1..=accounts` (inner),
/// an event of stream `stream_id(prefix, a)`. Version 1 opens the account with 100.00; even
/// versions deposit 1.00 and odd ones withdraw 1.00, so no balance ever goes below 99.00.
///
/// The event types, schema version and data are the event codec's (one event of each kind,
/// encoded here, then repeated by the statement with each account's owner set), so they cannot
/// drift from what the application writes; the metadata has the command handler's shape.
pub async fn insert_account_events(
    pool: &PgPool,
    prefix: &str,
    accounts: i64,
    from_version: i64,
    to_version: i64,
) -> Result<u64, sqlx::Error> {
    use backend::event_codec::encode;
    use bank::domain::{AccountEvent, Amount, Money, OwnerId};
    let no_metadata = serde_json::json!({});
    let owner = OwnerId::parse("bench-0").expect("a valid owner");
    let initial_balance = Money::parse("100.00").expect("a valid balance");
    let one = Amount::parse("1.00").expect("a valid amount");
    let created = encode(&AccountEvent::AccountCreated { owner_id: owner, initial_balance }, &no_metadata);
    let deposited = encode(&AccountEvent::MoneyDeposited { amount: one }, &no_metadata);
    let withdrawn = encode(&AccountEvent::MoneyWithdrawn { amount: one }, &no_metadata);
    let inserted = sqlx::query(
        "INSERT INTO events (event_id, stream_type, stream_id, stream_version, event_type, schema_version, data, metadata)
         SELECT gen_random_uuid(), 'account', md5($1 || g.a::text)::uuid, g.v,
                CASE WHEN g.v = 1 THEN $5 WHEN g.v % 2 = 0 THEN $7 ELSE $9 END,
                $11,
                CASE WHEN g.v = 1 THEN jsonb_set($6, '{ownerId}', to_jsonb('bench-' || g.a))
                     WHEN g.v % 2 = 0 THEN $8 ELSE $10 END,
                jsonb_build_object('commandId', g.u, 'correlationId', g.u, 'causationId', g.u,
                                   'issuedAt', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'))
         FROM (SELECT v, a, gen_random_uuid() AS u
               FROM generate_series($3::bigint, $4::bigint) v, generate_series(1, $2::bigint) a
               ORDER BY v, a) g",
    )
    .bind(prefix)
    .bind(accounts)
    .bind(from_version)
    .bind(to_version)
    .bind(&created.event_type)
    .bind(&created.data)
    .bind(&deposited.event_type)
    .bind(&deposited.data)
    .bind(&withdrawn.event_type)
    .bind(&withdrawn.data)
    .bind(created.schema_version)
    .execute(pool)
    .await?;
    Ok(inserted.rows_affected())
}

/// A backlog of `events_per_account` events on each of `accounts` accounts of `prefix`
/// ([`insert_account_events`]), inserted in transactions of about `chunk` events, versions
/// interleaved across accounts as many users would write them; then `ANALYZE`d.
pub async fn insert_backlog(
    pool: &PgPool,
    prefix: &str,
    accounts: i64,
    events_per_account: i64,
    chunk: i64,
) -> Result<(), sqlx::Error> {
    let per_chunk = (chunk / accounts).max(1);
    let mut version = 1;
    while version <= events_per_account {
        let until = (version + per_chunk - 1).min(events_per_account);
        insert_account_events(pool, prefix, accounts, version, until).await?;
        version = until + 1;
    }
    sqlx::query("ANALYZE events").execute(pool).await?;
    Ok(())
}

/// The stream id [`insert_account_events`] gives account `a` of `prefix`.
pub async fn stream_id(pool: &PgPool, prefix: &str, a: i64) -> Result<uuid::Uuid, sqlx::Error> {
    sqlx::query_scalar("SELECT md5($1 || $2::text)::uuid").bind(prefix).bind(a).fetch_one(pool).await
}

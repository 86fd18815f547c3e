//! B1: single-event appends, one per transaction (BEGIN, append, COMMIT), over many streams,
//! through `eventstore::append`, at 1, 8, 32 and 64 clients. Baseline: the raw limit, the same
//! single-row `INSERT INTO events` (same columns, same JSON payloads) and COMMIT sent directly
//! with sqlx, at the same concurrency. Then what users pay: the whole command path
//! (`CommandHandler::handle` of deposits over many accounts) at 32 clients, beside the same
//! raw limit. Every write figure is also printed against pgbench (the machine's physical limit,
//! see `crate::pgbench`), whose transactions are single statements: so B1 measures appends sent
//! that way too, each its own transaction, which is how a command on a warm stream writes.
//! Last, issue 32's figure: the same deposits with the actor's name sealed (a master key, the
//! actor's data key loaded) ÷ in clear (an actor with no key), runs interleaved (see
//! `crate::sealing`).

use std::time::Duration;

use backend::event_codec;
use backend::write_side::{CommandHandler, WriteOptions};
use bank::domain::{AccountCommand, AccountEvent, Amount};
use eventstore::{AppendNotifier, NewEvent};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use super::Outcome;
use crate::diagnose::Probe;
use crate::load::{self, Run};
use crate::report::{self};
use crate::sealing::{self, Measured, Mode};
use crate::server::{create_accounts, envelope_with};
use crate::{B1_APPEND_32, Context};

/// Each client appends round-robin to this many streams of its own.
const STREAMS_PER_CLIENT: usize = 16;
const CONCURRENCIES: [usize; 4] = [1, 8, 32, 64];

pub async fn run(context: Context) -> Outcome {
    let (warmup, duration) = phases(&context);
    report::heading(
        "b1_append",
        &format!("single-event appends, one per transaction, {:.1} s per figure", duration.as_secs_f64()),
    );
    // The physical limit first, while the database is as fresh as for the figures below.
    let pgbench = crate::pgbench::limit(&context).await;
    let (raw_32, append_32) = appends_against_raw_inserts(&context, warmup, duration).await;
    if let Some(pgbench) = pgbench {
        appends_against_pgbench(&context, (warmup, duration), pgbench, &raw_32, &append_32).await;
    }
    context.shared.set(B1_APPEND_32, append_32.rate());
    commands_against_appends(&context, (warmup, duration), pgbench, &raw_32, &append_32).await
}

/// `eventstore::append` beside a raw INSERT at each concurrency; the runs at 32 clients.
async fn appends_against_raw_inserts(context: &Context, warmup: Duration, duration: Duration) -> (Run, Run) {
    let pool = &context.pool;
    let (mut raw_32, mut append_32) = (None, None);
    for concurrency in CONCURRENCIES {
        let probe = Probe::start(context, &format!("raw INSERT, {concurrency} clients"));
        let raw = appends(pool, Path::RawInsert, concurrency, warmup, duration).await;
        probe.finish().await;
        let probe = Probe::start(context, &format!("eventstore::append, {concurrency} clients"));
        let append = appends(pool, Path::EventStore, concurrency, warmup, duration).await;
        probe.finish().await;
        report::against(
            &format!("eventstore::append, {concurrency} clients"),
            append.rate(),
            "raw INSERT",
            raw.rate(),
            "events/s",
        );
        raw.report_errors("raw inserts");
        append.report_errors("appends");
        if concurrency == 32 {
            (raw_32, append_32) = (Some(raw), Some(append));
        }
    }
    let (raw_32, append_32) = (raw_32.expect("32 is measured"), append_32.expect("32 is measured"));
    report::latencies_against(
        "eventstore::append, 32 clients",
        append_32.latencies.as_ref(),
        "raw",
        raw_32.latencies.as_ref(),
    );
    let ratio = append_32.rate() / raw_32.rate();
    report::target("B1: eventstore::append ≥ 0.8 × raw at 32 clients", ratio >= 0.8, &format!("{ratio:.2}"));
    (raw_32, append_32)
}

/// Appends, in a transaction and as their own, beside pgbench's one-INSERT transactions.
async fn appends_against_pgbench(
    context: &Context,
    (warmup, duration): (Duration, Duration),
    pgbench: f64,
    raw_32: &Run,
    append_32: &Run,
) {
    // pgbench's transaction is its one INSERT (autocommit): so is this append, which is how a
    // command on a warm stream sends its events (with its record, in the same statement).
    let probe = Probe::start(context, "eventstore::append as its own transaction, 32 clients");
    let alone = appends(&context.pool, Path::EventStoreAlone, 32, warmup, duration).await;
    probe.finish().await;
    alone.report_errors("appends as their own transactions");
    report::against(
        "eventstore::append, BEGIN/append/COMMIT, 32 clients",
        append_32.rate(),
        "pgbench",
        pgbench,
        "events/s",
    );
    report::against(
        "raw INSERT (sqlx), BEGIN/INSERT/COMMIT, 32 clients",
        raw_32.rate(),
        "pgbench",
        pgbench,
        "events/s",
    );
    report::against(
        "eventstore::append as its own transaction, 32 clients",
        alone.rate(),
        "pgbench",
        pgbench,
        "events/s",
    );
    report::latencies("  its latency", alone.latencies.as_ref());
    let ratio = alone.rate() / pgbench;
    report::target(
        "B1: eventstore::append ≥ 0.6 × pgbench at 32 clients (each its own transaction, as pgbench's)",
        ratio >= 0.6,
        &format!("{ratio:.2}"),
    );
}

/// What users pay: the whole command path, beside the appends it makes.
async fn commands_against_appends(
    context: &Context,
    (warmup, duration): (Duration, Duration),
    pgbench: Option<f64>,
    raw_32: &Run,
    append_32: &Run,
) -> Outcome {
    let handler = CommandHandler::new(context.pool.clone(), AppendNotifier::new(), WriteOptions::default());
    let accounts = create_accounts(&handler, 32 * 32).await?;
    let probe = Probe::start(context, "CommandHandler::handle, 32 clients");
    let commands = deposits(&handler, &accounts, 32, warmup, duration).await;
    probe.finish().await;
    report::against(
        "CommandHandler::handle deposit, 32 clients",
        commands.rate(),
        "raw INSERT",
        raw_32.rate(),
        "cmd/s",
    );
    report::against("  the same", commands.rate(), "eventstore::append", append_32.rate(), "cmd/s");
    if let Some(pgbench) = pgbench {
        report::against("  the same", commands.rate(), "pgbench", pgbench, "cmd/s");
    }
    report::latencies_against("  its latency", commands.latencies.as_ref(), "raw INSERT", raw_32.latencies.as_ref());
    commands.report_errors("deposits");
    sealed_against_clear(context, &handler, &accounts).await
}

/// The same deposits, their metadata naming an actor as the API's does: one whose data key is
/// loaded (sealed), or one with no key (clear), in runs interleaved as `sealing::order` says.
async fn sealed_against_clear(context: &Context, handler: &CommandHandler, accounts: &[Uuid]) -> Outcome {
    use backend::identity::{Password, Passwords, Role, Username, users};
    // Shorter runs than the figures above, and more of them (see `sealing::order`).
    let (warmup, duration) = context.size.pick(
        (Duration::from_millis(100), Duration::from_millis(300)),
        (Duration::from_secs(1), Duration::from_secs(3)),
    );
    let pool = &context.pool;
    let keys = sealing::master_keys();
    let username = Username::parse("bench-sealed")?;
    let password = Password::parse("the bench's own password")?;
    let user = users::create(pool, &Passwords::new(), &username, &password, Role::Customer).await?;
    backend::personal::keys::load_for_writing(pool, &keys.current, user.user_id).await?;
    // Nobody by this id exists or has a key: what they write stays in clear.
    let keyless = Uuid::new_v4();
    let mut runs = Vec::new();
    for mode in sealing::order(context.size) {
        let actor = match mode {
            Mode::Sealed => user.user_id,
            Mode::Clear => keyless,
        };
        let metadata = api_metadata(actor, username.as_str());
        let from = sealing::log_end(pool).await?;
        let probe = Probe::start(context, &format!("CommandHandler::handle, {}, 32 clients", mode.name()));
        let run = deposits_as(handler, accounts, metadata, 32, warmup, duration).await;
        probe.finish().await;
        let (sealed, clear) = sealing::deposits_since(pool, from).await?;
        runs.push(Measured { mode, run, sealed, clear });
    }
    sealing::report("CommandHandler::handle deposit, 32 clients", "cmd/s", &runs)?;
    Ok(())
}

/// The metadata the API adds to a command's events (see `app::api::commands`): who asked, and
/// the client's command id.
fn api_metadata(user_id: Uuid, username: &str) -> serde_json::Map<String, serde_json::Value> {
    let mut metadata = serde_json::Map::new();
    metadata.insert("actor".into(), json!({ "userId": user_id, "username": username }));
    metadata.insert("clientCommandId".into(), json!(Uuid::new_v4()));
    metadata.insert("correlationIdFromClient".into(), json!(false));
    metadata
}

fn phases(context: &Context) -> (Duration, Duration) {
    context.size.pick(
        (Duration::from_millis(100), Duration::from_millis(300)),
        (Duration::from_secs(1), Duration::from_secs(5)),
    )
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// `INSERT INTO events (…) VALUES (…)` and COMMIT, straight from sqlx.
    RawInsert,
    /// `eventstore::append` and COMMIT.
    EventStore,
    /// `eventstore::append` alone, outside any transaction: one statement, committed by itself.
    EventStoreAlone,
}

/// `concurrency` clients appending single events, one per transaction.
pub async fn appends(pool: &PgPool, path: Path, concurrency: usize, warmup: Duration, duration: Duration) -> Run {
    // Streams new to this run: client c's k-th stream is (run, c * STREAMS_PER_CLIENT + k).
    let run = Uuid::new_v4().as_u64_pair().0;
    let pool = pool.clone();
    load::closed_loop(concurrency, warmup, duration, move |client, i| {
        let pool = pool.clone();
        async move {
            let stream_id = Uuid::from_u64_pair(run, (client * STREAMS_PER_CLIENT + i % STREAMS_PER_CLIENT) as u64);
            let expected_version = (i / STREAMS_PER_CLIENT) as i64;
            let event = deposit_event();
            if path == Path::EventStoreAlone {
                let mut conn = pool.acquire().await.map_err(|e| e.to_string())?;
                return eventstore::append(&mut conn, "account", stream_id, expected_version, std::slice::from_ref(&event))
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string());
            }
            let mut tx = pool.begin().await.map_err(|e| e.to_string())?;
            match path {
                Path::RawInsert => {
                    sqlx::query(
                        "INSERT INTO events (event_id, stream_type, stream_id, stream_version, event_type, schema_version,
                             data, metadata)
                         VALUES ($1, 'account', $2, $3, $4, $5, $6, $7)",
                    )
                    .bind(event.event_id)
                    .bind(stream_id)
                    .bind(expected_version + 1)
                    .bind(&event.event_type)
                    .bind(event.schema_version)
                    .bind(&event.data)
                    .bind(&event.metadata)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| e.to_string())?;
                }
                Path::EventStore | Path::EventStoreAlone => {
                    eventstore::append(&mut tx, "account", stream_id, expected_version, std::slice::from_ref(&event))
                        .await
                        .map_err(|e| e.to_string())?;
                }
            }
            tx.commit().await.map_err(|e| e.to_string())
        }
    })
    .await
}

/// A deposit event as the command handler encodes it, with metadata of the same shape.
fn deposit_event() -> NewEvent {
    let command_id = Uuid::new_v4();
    let metadata = json!({
        "commandId": command_id,
        "correlationId": command_id,
        "causationId": command_id,
        "issuedAt": "2026-01-01T12:00:00.123456789Z",
    });
    event_codec::encode(
        &AccountEvent::MoneyDeposited { amount: Amount::parse("1.00").expect("a valid amount") },
        &metadata,
    )
}

/// `concurrency` clients sending deposits through the command handler; client c walks
/// `accounts` round-robin from c, so that no two clients address one account at once when the
/// number of accounts is a multiple of `concurrency`.
pub async fn deposits(
    handler: &CommandHandler,
    accounts: &[Uuid],
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
) -> Run {
    deposits_as(handler, accounts, Default::default(), concurrency, warmup, duration).await
}

/// [`deposits`] whose events carry `metadata` (each with a new client command id, if it has one).
pub async fn deposits_as(
    handler: &CommandHandler,
    accounts: &[Uuid],
    metadata: serde_json::Map<String, serde_json::Value>,
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
) -> Run {
    let (handler, accounts) = (handler.clone(), accounts.to_vec());
    let amount = Amount::parse("1.00").expect("a valid amount");
    load::closed_loop(concurrency, warmup, duration, move |client, i| {
        let handler = handler.clone();
        let account = accounts[(client + i * concurrency) % accounts.len()];
        let mut metadata = metadata.clone();
        if metadata.contains_key("clientCommandId") {
            metadata.insert("clientCommandId".into(), json!(Uuid::new_v4()));
        }
        async move {
            handler
                .handle(envelope_with(account, AccountCommand::Deposit { amount }, metadata))
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    })
    .await
}

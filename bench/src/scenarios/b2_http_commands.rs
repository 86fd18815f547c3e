//! B2: `POST /api/commands/deposit` as JSON from 32 keep-alive connections to the whole server
//! running in this process (its default settings: a pool of 20 connections, both projections
//! following), deposits spread round-robin over 1,024 accounts.
//!
//! Baseline: the same deposits through `CommandHandler::handle` called in-process, at the same
//! concurrency, on a pool of the server's size, while the server's projections follow them
//! (woken through NOTIFY as in production), so that the ratio is what HTTP adds: the load
//! generator, axum, the Leptos server function's decoding and the JSON answer.
//!
//! Then issue 32's figure: the same HTTP load on a server given a master key (the bench user's
//! name sealed in every deposit's metadata) ÷ on one without (in clear), each run on a server
//! started for it, runs interleaved (see `crate::sealing`).

use std::time::Duration;

use backend::write_side::{CommandHandler, WriteOptions};
use eventstore::AppendNotifier;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::Outcome;
use super::b1_append;
use crate::diagnose::Probe;
use crate::http::{self, Kind, Requests};
use crate::sealing::{self, Measured, Mode};
use crate::server::{Server, create_accounts};
use crate::{B2_MAX_RATE, Context, database, report};

pub const CONNECTIONS: usize = 32;

pub async fn run(context: Context) -> Outcome {
    let (warmup, duration) = phases(&context);
    report::heading(
        "b2_http_commands",
        &format!(
            "POST /api/commands/deposit, {CONNECTIONS} connections ({}), {:.1} s per figure",
            http::generator_name(),
            duration.as_secs_f64()
        ),
    );
    let server = Server::start().await?;
    let measured = measure(&context, &server, warmup, duration).await;
    server.stop().await;
    let accounts = measured?;
    sealed_against_clear(&context, &accounts).await
}

/// The HTTP deposits on a server with a master key and on one without, each run on a server
/// started for it (a server's master key is set at start), once its projections are current.
async fn sealed_against_clear(context: &Context, accounts: &[Uuid]) -> Outcome {
    // Shorter runs than the figures above, and more of them (see `sealing::order`).
    let (warmup, duration) = context.size.pick(
        (Duration::from_millis(200), Duration::from_millis(500)),
        (Duration::from_secs(2), Duration::from_secs(5)),
    );
    let keys = sealing::master_keys();
    let mut runs = Vec::new();
    for mode in sealing::order(context.size) {
        let server = match mode {
            Mode::Sealed => Server::start_with(|settings| settings.master_keys = Some(keys.clone())).await?,
            Mode::Clear => Server::start().await?,
        };
        let measured = async {
            database::wait_for_projections(&context.pool, Duration::from_secs(120)).await?;
            if mode == Mode::Clear {
                // The data keys loaded for an earlier sealed run would seal again: the cache is
                // process-wide, and a server without a master key loads none.
                backend::personal::keys::clear_cache();
            }
            let from = sealing::log_end(&context.pool).await?;
            let probe = Probe::start(context, &format!("HTTP, {}", mode.name()));
            let run =
                http::closed_loop(&server.base, &Requests::new(Kind::Deposit, accounts), CONNECTIONS, warmup, duration)
                    .await?;
            probe.finish().await;
            let (sealed, clear) = sealing::deposits_since(&context.pool, from).await?;
            database::wait_for_projections(&context.pool, Duration::from_secs(120)).await?;
            Ok::<_, Box<dyn std::error::Error>>(Measured { mode, run, sealed, clear })
        }
        .await;
        server.stop().await;
        runs.push(measured?);
    }
    sealing::report(&format!("HTTP deposit, {CONNECTIONS} connections"), "cmd/s", &runs)?;
    Ok(())
}

fn phases(context: &Context) -> (Duration, Duration) {
    context.size.pick(
        (Duration::from_millis(200), Duration::from_millis(500)),
        (Duration::from_secs(2), Duration::from_secs(10)),
    )
}

/// The HTTP and in-process figures; the accounts they deposit to.
async fn measure(
    context: &Context,
    server: &Server,
    warmup: Duration,
    duration: Duration,
) -> Result<Vec<Uuid>, Box<dyn std::error::Error>> {
    let accounts = prepare_accounts(context, (CONNECTIONS * 32).max(64)).await?;

    let handler_pool = database::pool(server.max_connections).await?;
    let appends = AppendNotifier::new();
    let stop_relay = CancellationToken::new();
    let relay = appends.spawn_postgres_relay(handler_pool.clone(), stop_relay.clone());
    let handler = CommandHandler::new(handler_pool.clone(), appends, WriteOptions::default());
    let probe = Probe::start(context, "in-process handler");
    let in_process = b1_append::deposits(&handler, &accounts, CONNECTIONS, warmup, duration).await;
    probe.finish().await;
    stop_relay.cancel();
    for task in relay {
        let _ = task.await;
    }
    handler_pool.close().await;
    database::wait_for_projections(&context.pool, Duration::from_secs(120)).await?;

    let probe = Probe::start(context, "HTTP");
    let over_http =
        http::closed_loop(&server.base, &Requests::new(Kind::Deposit, &accounts), CONNECTIONS, warmup, duration)
            .await?;
    probe.finish().await;
    report::against(
        &format!("HTTP deposit, {CONNECTIONS} connections"),
        over_http.rate(),
        "in-process handler",
        in_process.rate(),
        "cmd/s",
    );
    report::latencies(&format!("  HTTP latency ({})", http::generator_name()), over_http.latencies.as_ref());
    report::latencies("  in-process handler latency", in_process.latencies.as_ref());
    over_http.report_errors("HTTP deposits");
    in_process.report_errors("in-process deposits");
    if let Some(pgbench) = crate::pgbench::limit(context).await {
        let label = format!("HTTP deposit, {CONNECTIONS} connections");
        report::against(&label, over_http.rate(), "pgbench", pgbench, "cmd/s");
        let ratio = over_http.rate() / pgbench;
        report::target("B2: HTTP deposits ≥ 0.3 × pgbench at 32 connections", ratio >= 0.3, &format!("{ratio:.2}"));
    }
    if let Some(latencies) = over_http.latencies {
        let p99 = latencies.p99.as_secs_f64() * 1000.0;
        report::target("B2: HTTP deposit p99 < 20 ms at 32 connections", p99 < 20.0, &format!("{p99:.1} ms"));
    }
    context.shared.set(B2_MAX_RATE, over_http.rate());
    Ok(accounts)
}

/// Opens `count` accounts through the command handler and waits until the server's
/// projections have them.
pub async fn prepare_accounts(context: &Context, count: usize) -> Result<Vec<Uuid>, Box<dyn std::error::Error>> {
    let handler = CommandHandler::new(context.pool.clone(), AppendNotifier::new(), WriteOptions::default());
    let accounts = create_accounts(&handler, count).await?;
    database::wait_for_projections(&context.pool, Duration::from_secs(120)).await?;
    Ok(accounts)
}

/// B2's maximum deposit rate: as B2 measured it earlier in this run, or, if it did not run,
/// measured now on `server` (briefly) and waited for by the projections; said either way.
pub async fn max_rate_of_this_run(
    context: &Context,
    server: &Server,
    accounts: &[Uuid],
) -> Result<f64, Box<dyn std::error::Error>> {
    if let Some(max) = context.shared.get(B2_MAX_RATE) {
        report::note(&format!("B2's maximum, measured earlier in this run: {max:.0} cmd/s"));
        return Ok(max);
    }
    let max = max_rate(server, accounts, context.size.pick(Duration::from_millis(500), Duration::from_secs(5))).await?;
    report::note(&format!("B2 did not run: its maximum, measured now: {max:.0} cmd/s"));
    database::wait_for_projections(&context.pool, Duration::from_secs(120)).await?;
    Ok(max)
}

/// The server's deposit throughput at [`CONNECTIONS`], measured briefly, for a scenario run
/// without B2.
async fn max_rate(server: &Server, accounts: &[Uuid], duration: Duration) -> Result<f64, Box<dyn std::error::Error>> {
    let run =
        http::closed_loop(&server.base, &Requests::new(Kind::Deposit, accounts), CONNECTIONS, Duration::ZERO, duration)
            .await?;
    Ok(run.rate())
}

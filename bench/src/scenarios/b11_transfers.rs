//! B11: transfers end to end. `POST /api/commands/transfer` between 1,024 accounts (each to the
//! next, 1.00 at a time) to the whole server in this process; each transfer is then taken by the
//! transfer process through its debit, credit and records — five commands in all, each its own
//! transaction — until `TransferCompleted`.
//!
//! - The maximum: 32 clients request transfers back to back for the run's duration; the rate is
//!   the transfers completed divided by the time from the first request to the last completion
//!   (the process may finish after the requests stop, and that time counts).
//! - The time to complete, at half that rate (open loop, so a stall shows): from the request's
//!   event to the completion's, as the event store recorded them (one clock, Postgres's).
//!
//! Baseline: B2's single-command rate (HTTP deposits at 32 connections), measured earlier in
//! this run or now: a transfer is five commands and a hop through the log.

use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

use super::Outcome;
use super::b2_http_commands::{self, prepare_accounts};
use crate::http;
use crate::load;
use crate::report;
use crate::server::Server;
use crate::{Context, database};

const CLIENTS: usize = 32;

pub async fn run(context: Context) -> Outcome {
    let duration = context.size.pick(Duration::from_secs(1), Duration::from_secs(10));
    report::heading(
        "b11_transfers",
        &format!("POST /api/commands/transfer, requested → completed, {:.1} s per figure", duration.as_secs_f64()),
    );
    // The longest deadline: the closed loop queues transfers faster than they complete, and a
    // transfer undone at its deadline would measure the deadline, not the process.
    let server = Server::start_with(|settings| settings.transfer_deadline = Duration::from_secs(3600)).await?;
    let measured = measure(&context, &server, duration).await;
    server.stop().await;
    measured
}

async fn measure(context: &Context, server: &Server, duration: Duration) -> Outcome {
    let accounts = prepare_accounts(context, 1024).await?;
    let single_command = b2_http_commands::max_rate_of_this_run(context, server, &accounts).await?;

    // The maximum, closed loop.
    let first = requested_so_far(&context.pool).await?;
    let client = http::client();
    let base = server.base.clone();
    let ring = accounts.clone();
    let run = load::closed_loop(CLIENTS, Duration::ZERO, duration, move |c, i| {
        let from = (c + i * CLIENTS) % ring.len();
        request(client.clone(), base.clone(), ring[from], ring[(from + 1) % ring.len()])
    })
    .await;
    run.report_errors("transfer requests");
    let finished = wait_until_finished(&context.pool, first, Duration::from_secs(300)).await?;
    let (completed, span) = completed_since(&context.pool, first).await?;
    let max = report::per_second(completed, span);
    report::note(&format!(
        "{completed} transfers completed of {finished} finished ({} requested in {:.1} s, answered at {:.0}/s), \
         the last {:.1} s after the first request",
        run.ok,
        duration.as_secs_f64(),
        run.rate(),
        span.as_secs_f64()
    ));
    report::against(
        &format!("transfers completed, {CLIENTS} clients"),
        max,
        "B2 HTTP deposits (commands/s)",
        single_command,
        "/s",
    );

    // Half of it, open loop: how long one takes.
    let rate = (max / 2.0).max(1.0);
    let first = requested_so_far(&context.pool).await?;
    let client = http::client();
    let base = server.base.clone();
    let ring = accounts.clone();
    let run = load::open_loop(rate, duration, move |i| {
        let from = (i * 7) % ring.len();
        request(client.clone(), base.clone(), ring[from], ring[(from + 1) % ring.len()])
    })
    .await;
    run.report_errors("transfer requests at half the maximum");
    wait_until_finished(&context.pool, first, Duration::from_secs(300)).await?;
    let mut times = completion_times(&context.pool, first).await?;
    report::latencies(
        &format!("  requested → completed at {rate:.0} transfers/s (half the maximum), from the events' times"),
        report::Latencies::of(&mut times).as_ref(),
    );
    report::latencies("  request answered (HTTP)", run.latencies.as_ref());
    Ok(())
}

async fn request(client: reqwest::Client, base: String, from: Uuid, to: Uuid) -> Result<(), String> {
    let response = client
        .post(format!("{base}/api/commands/transfer"))
        .header("content-type", "application/json")
        .body(format!(r#"{{"fromAccountId":"{from}","toAccountId":"{to}","amount":"1.00"}}"#))
        .send()
        .await
        .map_err(|error| error.to_string())?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("{}: {}", response.status(), response.text().await.unwrap_or_default()))
    }
}

/// The global position below which every transfer requested so far lies.
async fn requested_so_far(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT coalesce(max(global_position), 0) FROM events").fetch_one(pool).await
}

/// Waits until every transfer requested after `after` has finished; how many there are. Reads
/// the events after `after` only (a range of the primary key), every 100 ms.
async fn wait_until_finished(pool: &PgPool, after: i64, bound: Duration) -> Result<i64, Box<dyn std::error::Error>> {
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        let (requested, finished): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE event_type = 'TransferRequested'),
                    count(*) FILTER (WHERE event_type IN ('TransferCompleted', 'TransferFailed'))
             FROM events WHERE global_position > $1 AND stream_type = 'transfer'",
        )
        .bind(after)
        .fetch_one(pool)
        .await?;
        // Finished, and the process has read past everything its steps appended (it reads the
        // whole log, its own events too): the next phase then pays for none of this one's tail.
        let process = [backend::write_side::transfers::PROCESS_NAME];
        let process_behind = !eventstore::projection::behind_the_log(pool, &process).await?.is_empty();
        if requested == finished && !process_behind {
            database::wait_for_projections(pool, bound).await?;
            return Ok(finished);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("{} of {requested} transfers did not finish", requested - finished).into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Transfers requested after `after` that completed, and the time from the first request to the
/// last completion.
async fn completed_since(pool: &PgPool, after: i64) -> Result<(usize, Duration), sqlx::Error> {
    let (count, seconds): (i64, Option<f64>) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE c.event_type = 'TransferCompleted'),
                extract(epoch FROM max(c.recorded_at) - min(r.recorded_at))::float8
         FROM events r JOIN events c ON c.stream_id = r.stream_id AND c.event_type IN ('TransferCompleted', 'TransferFailed')
         WHERE r.event_type = 'TransferRequested' AND r.global_position > $1",
    )
    .bind(after)
    .fetch_one(pool)
    .await?;
    Ok((count as usize, Duration::from_secs_f64(seconds.unwrap_or(0.0).max(0.001))))
}

/// Each completed transfer's time from its request's event to its completion's.
async fn completion_times(pool: &PgPool, after: i64) -> Result<Vec<Duration>, sqlx::Error> {
    let seconds: Vec<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM c.recorded_at - r.recorded_at)::float8
         FROM events r JOIN events c ON c.stream_id = r.stream_id AND c.event_type = 'TransferCompleted'
         WHERE r.event_type = 'TransferRequested' AND r.global_position > $1",
    )
    .bind(after)
    .fetch_all(pool)
    .await?;
    Ok(seconds.into_iter().map(|s| Duration::from_secs_f64(s.max(0.0))).collect())
}

//! B5: loading one account (`account_store::load(conn, id, LATEST)`, what every command does
//! first) from streams of 100, 10k and 100k events, with a snapshot at the latest multiple of
//! 100 (written by `account_store::save`, as the handler does) and without any snapshot.
//! Each figure is the median of repeated loads on one connection.
//!
//! Baseline: the 100-event stream, loaded the same way. Target: with snapshots, flat in stream
//! length.

use std::time::{Duration, Instant};

use backend::account_store::{self, LATEST};
use sqlx::PgConnection;
use uuid::Uuid;

use super::Outcome;
use crate::{Context, database, report};

/// The handler's default snapshot interval.
const SNAPSHOT_INTERVAL: i64 = 100;

pub async fn run(context: Context) -> Outcome {
    let lengths: [i64; 3] = context.size.pick([10, 100, 1_000], [100, 10_000, 100_000]);
    report::heading(
        "b5_aggregate_load",
        &format!("load one account of {lengths:?} events, with and without snapshots"),
    );
    let pool = &context.pool;
    let mut conn = pool.acquire().await?;
    let mut streams = Vec::new();
    for length in lengths {
        let with = format!("b5-with-{length}-");
        let without = format!("b5-without-{length}-");
        database::insert_account_events(pool, &with, 1, 1, length).await?;
        database::insert_account_events(pool, &without, 1, 1, length).await?;
        let (with, without) =
            (database::stream_id(pool, &with, 1).await?, database::stream_id(pool, &without, 1).await?);
        let snapshot_at = length / SNAPSHOT_INTERVAL * SNAPSHOT_INTERVAL;
        if snapshot_at > 0 {
            let state = account_store::load(&mut conn, with, snapshot_at).await?.state;
            account_store::save(&mut conn, with, snapshot_at, &state).await?;
        }
        streams.push((length, with, without));
    }
    sqlx::query("ANALYZE").execute(pool).await?;

    let (min_loads, min_time) = context.size.pick((3, Duration::from_millis(20)), (5, Duration::from_secs(1)));
    let mut baseline: Option<(f64, f64)> = None;
    let mut flatness = 0.0;
    for (length, with, without) in streams {
        let (with_ms, with_folded) = time_loads(&mut conn, with, min_loads, min_time).await?;
        let (without_ms, without_folded) = time_loads(&mut conn, without, min_loads, min_time).await?;
        let (base_with, base_without) = *baseline.get_or_insert((with_ms, without_ms));
        let base_label = format!("{} events", lengths[0]);
        report::against_fine(
            &format!("load, {length} events, snapshots ({with_folded} folded)"),
            with_ms,
            &base_label,
            base_with,
            "ms",
        );
        report::against_fine(
            &format!("load, {length} events, none ({without_folded} folded)"),
            without_ms,
            &base_label,
            base_without,
            "ms",
        );
        flatness = with_ms / base_with;
    }
    let longest = lengths[lengths.len() - 1];
    report::target(
        &format!("B5: with snapshots, flat in stream length ({longest} events ≤ 2 × {})", lengths[0]),
        flatness <= 2.0,
        &format!("{flatness:.2}"),
    );
    Ok(())
}

/// The median time of repeated loads (at least `min_loads`, for at least `min_time`), and how
/// many events each load folded.
async fn time_loads(
    conn: &mut PgConnection,
    account: Uuid,
    min_loads: usize,
    min_time: Duration,
) -> Result<(f64, usize), Box<dyn std::error::Error>> {
    let folded = account_store::load(conn, account, LATEST).await?.events.len();
    let started = Instant::now();
    let mut times = Vec::new();
    while times.len() < min_loads || (started.elapsed() < min_time && times.len() < 10_000) {
        let began = Instant::now();
        let loaded = account_store::load(conn, account, LATEST).await?;
        times.push(began.elapsed());
        std::hint::black_box(loaded);
    }
    times.sort_unstable();
    Ok((report::millis(times[times.len() / 2]), folded))
}

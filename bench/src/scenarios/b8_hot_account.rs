//! B8: one hot account must not starve the others. Deposits into ordinary accounts, paced at a
//! modest rate, while 64 connections deposit into one single account as fast as they are
//! answered — more connections than the server's pool holds.
//!
//! Baseline: the same paced deposits on the same server in the same run, with nothing else
//! going on. Commands of one account queue in the server's process before they take a
//! database connection, so the hot account holds one connection, not the pool; without that
//! queue the paced deposits waited seconds for a connection, or answered 503.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Outcome;
use super::b2_http_commands::prepare_accounts;
use crate::server::Server;
use crate::{Context, http, load, report};

const HOT_CONNECTIONS: usize = 64;
const RATE: f64 = 100.0;

pub async fn run(context: Context) -> Outcome {
    let paced_for = context.size.pick(Duration::from_millis(500), Duration::from_secs(10));
    report::heading(
        "b8_hot_account",
        &format!("deposits into other accounts at {RATE:.0}/s while {HOT_CONNECTIONS} connections hammer one account"),
    );
    // The server first: its projections are what the accounts are prepared against.
    let server = Server::start().await?;
    let accounts = prepare_accounts(&context, 257).await?;
    let (hot, others) = accounts.split_first().expect("accounts were made");
    let (hot, others) = (*hot, Arc::new(others.to_vec()));

    let paced = |others: Arc<Vec<uuid::Uuid>>, base: String| {
        let client = http::client();
        load::open_loop(RATE, paced_for, move |i| {
            let (client, base, account) = (client.clone(), base.clone(), others[i % others.len()]);
            async move { http::deposit(&client, &base, account).await.map(|_| ()) }
        })
    };
    let idle = paced(others.clone(), server.base.clone()).await;

    let stop = CancellationToken::new();
    let hot_accepted = Arc::new(AtomicUsize::new(0));
    let hammers: Vec<_> = (0..HOT_CONNECTIONS)
        .map(|_| {
            let (client, base, stop, accepted) =
                (http::client(), server.base.clone(), stop.clone(), hot_accepted.clone());
            tokio::spawn(async move {
                while !stop.is_cancelled() {
                    if http::deposit(&client, &base, hot).await.is_ok() {
                        accepted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    let loaded = paced(others, server.base.clone()).await;
    let hot_rate = report::per_second(hot_accepted.load(Ordering::Relaxed), started.elapsed());
    stop.cancel();
    for hammer in hammers {
        let _ = hammer.await;
    }
    server.stop().await;

    report::latencies_against(
        "other accounts, one account hot",
        loaded.latencies.as_ref(),
        "idle",
        idle.latencies.as_ref(),
    );
    report::figure("  the hot account meanwhile", hot_rate, "cmd/s");
    idle.report_errors("idle deposits");
    loaded.report_errors("deposits beside the hot account");
    if let (Some(loaded_latencies), Some(idle_latencies)) = (&loaded.latencies, &idle.latencies) {
        let ratio = report::millis(loaded_latencies.p99) / report::millis(idle_latencies.p99);
        report::target(
            "B8: other accounts' p99 within 2× idle, no errors",
            ratio <= 2.0 && loaded.errors == 0,
            &format!("p99 ratio {ratio:.2}, {} errors", loaded.errors),
        );
    }
    Ok(())
}

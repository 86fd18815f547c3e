//! B3: from a command's HTTP answer to the read model showing it, under a background load of
//! deposits paced at half of B2's maximum (open loop, so the load does not ease off when the
//! server slows down).
//!
//! Samplers deposit into accounts of their own and then wait for the result two ways:
//! - as a client does: `GET /api/queries/accounts/{id}?after=<token>`, repeated until the
//!   answer is not stale and its `asOf` has passed the token (the server itself waits, polling
//!   every 10 ms, up to its bound);
//! - at the source: the `account_summary` checkpoint polled in SQL every millisecond until it
//!   has passed the token.
//!
//! Baseline: the same commands' own latency (request to answer).

use std::time::{Duration, Instant};

use eventstore::Position;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use super::Outcome;
use super::b2_http_commands::{self, CONNECTIONS, prepare_accounts};
use crate::diagnose::Probe;
use crate::http::{self, Kind};
use crate::load;
use crate::report::{self, Latencies};
use crate::server::Server;
use crate::{B3_QUERY_P99, Context, database};

/// Samplers per method.
const SAMPLERS: usize = 2;
/// A sampler's pause between samples, so that samples do not queue behind one another.
const PAUSE: Duration = Duration::from_millis(5);

pub async fn run(context: Context) -> Outcome {
    report::heading("b3_command_to_visible", "command answer → visible in the read model, at half of B2's load");
    let server = Server::start().await?;
    let measured = measure(&context, &server).await;
    server.stop().await;
    measured
}

#[derive(Clone, Copy)]
enum Method {
    Query,
    Checkpoint,
}

async fn measure(context: &Context, server: &Server) -> Outcome {
    let (warmup, duration) = context
        .size
        .pick((Duration::from_millis(300), Duration::from_secs(1)), (Duration::from_secs(2), Duration::from_secs(15)));
    let mut accounts = prepare_accounts(context, CONNECTIONS * 32 + 2 * SAMPLERS).await?;
    let own: Vec<Uuid> = accounts.split_off(CONNECTIONS * 32);
    let max = b2_http_commands::max_rate_of_this_run(context, server, &accounts).await?;
    let rate = (max / 2.0).max(10.0);

    let background = {
        let (client, base) = (http::client(), server.base.clone());
        tokio::spawn(load::open_loop(rate, warmup + duration, move |i| {
            http::send(client.clone(), base.clone(), Kind::Deposit, accounts[i % accounts.len()])
        }))
    };
    tokio::time::sleep(warmup).await;
    let probe = Probe::start(context, "sampling");
    let deadline = Instant::now() + duration;
    let samplers = own.iter().enumerate().map(|(n, &account)| {
        let method = if n % 2 == 0 { Method::Query } else { Method::Checkpoint };
        let base = server.base.clone();
        tokio::spawn(async move { sample(method, &base, account, deadline).await.map(|samples| (method, samples)) })
    });
    let results = futures::future::join_all(samplers).await;
    probe.finish().await;
    let background = background.await?;

    let (mut commands, mut via_query, mut via_checkpoint) = (Vec::new(), Vec::new(), Vec::new());
    for result in results {
        let (method, samples) = result??;
        for (command, visible) in samples {
            commands.push(command);
            match method {
                Method::Query => via_query.push(visible),
                Method::Checkpoint => via_checkpoint.push(visible),
            }
        }
    }
    let commands = Latencies::of(&mut commands);
    let via_query = Latencies::of(&mut via_query);
    let via_checkpoint = Latencies::of(&mut via_checkpoint);
    report::figure("background load (paced, HTTP deposits)", background.rate(), "cmd/s");
    report::note(&format!("asked for {rate:.0} cmd/s = half of {max:.0}"));
    report::latencies("  background deposits' latency", background.latencies.as_ref());
    background.report_errors("background deposits");
    report::latencies_against("visible: GET ?after=<token>", via_query.as_ref(), "command", commands.as_ref());
    report::latencies_against(
        "visible: checkpoint passes token (SQL)",
        via_checkpoint.as_ref(),
        "command",
        commands.as_ref(),
    );
    report::latencies("  visible: GET ?after=<token>, in full", via_query.as_ref());
    if let Some(via_query) = via_query {
        let p99 = report::millis(via_query.p99);
        context.shared.set(B3_QUERY_P99, p99);
        report::target("B3: p99 < 25 ms, as a client sees it (GET ?after)", p99 < 25.0, &format!("{p99:.1} ms"));
    }
    Ok(())
}

/// Until `deadline`: deposit into `account`, then wait until the deposit is visible. Returns
/// (command latency, answer → visible) per sample.
async fn sample(
    method: Method,
    base: &str,
    account: Uuid,
    deadline: Instant,
) -> Result<Vec<(Duration, Duration)>, String> {
    let client = http::client();
    let mut conn = match method {
        Method::Checkpoint => Some(
            PgConnection::connect_with(&database::options().map_err(|e| e.to_string())?)
                .await
                .map_err(|e| e.to_string())?,
        ),
        Method::Query => None,
    };
    let mut samples = Vec::new();
    while Instant::now() < deadline {
        let sent = Instant::now();
        let token = http::deposit(&client, base, account).await?;
        let answered = Instant::now();
        loop {
            let visible = match conn.as_mut() {
                None => {
                    let (stale, as_of) = http::account_after(&client, base, account, token).await?;
                    !stale && as_of >= token
                }
                Some(conn) => checkpoint(conn).await? >= token,
            };
            if visible {
                break;
            }
            if answered.elapsed() > Duration::from_secs(30) {
                return Err(format!("deposit {token} not visible after 30 s"));
            }
            if conn.is_some() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        samples.push((answered - sent, answered.elapsed()));
        tokio::time::sleep(PAUSE).await;
    }
    if let Some(conn) = conn {
        let _ = conn.close().await;
    }
    Ok(samples)
}

async fn checkpoint(conn: &mut PgConnection) -> Result<Position, String> {
    eventstore::projection::checkpoint(&mut *conn, backend::read_side::account_summary::PROJECTION_NAME)
        .await
        .map_err(|e| e.to_string())
}

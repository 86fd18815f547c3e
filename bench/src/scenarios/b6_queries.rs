//! B6: `GET /api/queries/accounts/{id}` against the in-process server (its default settings,
//! 1,024 accounts in the read model): the maximum throughput from 32 keep-alive connections,
//! then the latency at a fixed 1,000 requests/s (open loop: each request timed from when it
//! was due).
//!
//! Baseline: the same SELECT the read model runs (the `account_summary` row joined with its
//! checkpoint), sent directly with sqlx by as many clients, on a pool of the server's size, and
//! at the same fixed rate.

use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

use super::Outcome;
use super::b2_http_commands::prepare_accounts;
use crate::diagnose::Probe;
use crate::http::{self, Kind, Requests};
use crate::load;
use crate::report;
use crate::server::Server;
use crate::{Context, database};

const CONNECTIONS: usize = 32;

/// The read model's own statement (`backend::read_side::ReadModel::account`).
fn account_select() -> String {
    format!("{} WHERE s.account_id = $2", backend::read_side::SUMMARY_SELECT)
}

pub async fn run(context: Context) -> Outcome {
    let (rate, _) = paced(&context);
    report::heading(
        "b6_queries",
        &format!(
            "GET /api/queries/accounts/{{id}}: {CONNECTIONS} connections ({}), then {rate:.0} requests/s",
            http::generator_name()
        ),
    );
    let server = Server::start().await?;
    let measured = measure(&context, &server).await;
    server.stop().await;
    measured
}

fn paced(context: &Context) -> (f64, Duration) {
    context.size.pick((200.0, Duration::from_secs(1)), (1_000.0, Duration::from_secs(15)))
}

async fn measure(context: &Context, server: &Server) -> Outcome {
    let (warmup, duration) = context.size.pick(
        (Duration::from_millis(200), Duration::from_millis(500)),
        (Duration::from_secs(2), Duration::from_secs(10)),
    );
    let (rate, paced_for) = paced(context);
    let accounts = prepare_accounts(context, CONNECTIONS * 32).await?;
    let direct_pool = database::pool(server.max_connections).await?;

    let probe = Probe::start(context, "HTTP, closed loop");
    let over_http =
        http::closed_loop(&server.base, &Requests::new(Kind::AccountQuery, &accounts), CONNECTIONS, warmup, duration)
            .await?;
    probe.finish().await;
    let probe = Probe::start(context, "sqlx, closed loop");
    let direct = {
        let (pool, accounts) = (direct_pool.clone(), accounts.clone());
        load::closed_loop(CONNECTIONS, warmup, duration, move |c, i| {
            select(pool.clone(), accounts[(c + i * CONNECTIONS) % accounts.len()])
        })
        .await
    };
    probe.finish().await;
    report::against(
        &format!("HTTP GET account, {CONNECTIONS} connections"),
        over_http.rate(),
        "sqlx SELECT",
        direct.rate(),
        "req/s",
    );
    report::latencies_against("  latency", over_http.latencies.as_ref(), "sqlx", direct.latencies.as_ref());
    over_http.report_errors("HTTP queries");
    direct.report_errors("SELECTs");

    let probe = Probe::start(context, "HTTP, paced");
    let paced_http = {
        let (client, base, accounts) = (http::client(), server.base.clone(), accounts.clone());
        load::open_loop(rate, paced_for, move |i| {
            http::send(client.clone(), base.clone(), Kind::AccountQuery, accounts[i % accounts.len()])
        })
        .await
    };
    probe.finish().await;
    let paced_direct = {
        let (pool, accounts) = (direct_pool.clone(), accounts.clone());
        load::open_loop(rate, paced_for, move |i| select(pool.clone(), accounts[i % accounts.len()])).await
    };
    report::latencies_against(
        &format!("HTTP GET account at {rate:.0}/s"),
        paced_http.latencies.as_ref(),
        "sqlx",
        paced_direct.latencies.as_ref(),
    );
    report::latencies("  HTTP, from when due", paced_http.latencies.as_ref());
    report::latencies("  HTTP, from the actual send", paced_http.service.as_ref());
    paced_http.report_errors("paced HTTP queries");
    paced_direct.report_errors("paced SELECTs");
    if let Some(latencies) = &paced_http.latencies {
        let p99 = report::millis(latencies.p99);
        report::target(&format!("B6: p99 < 5 ms at {rate:.0} requests/s"), p99 < 5.0, &format!("{p99:.2} ms"));
    }
    direct_pool.close().await;
    Ok(())
}

async fn select(pool: PgPool, account: Uuid) -> Result<(), String> {
    let row = sqlx::query(&account_select())
        .bind(backend::read_side::account_summary::PROJECTION_NAME)
        .bind(account)
        .fetch_optional(&pool)
        .await
        .map_err(|e| e.to_string())?;
    row.map(|_| ()).ok_or_else(|| format!("account {account} is not in the read model"))
}

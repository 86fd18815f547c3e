//! B10: the two read stores side by side. Two in-process servers on one database (1,024
//! accounts), one reading Redis (`READ_STORE=redis`), the other Postgres: `GET` an account
//! and the high-value query (the 100 highest balances), each at its maximum from 32 keep-alive
//! connections, then at a fixed 1,000 requests/s (open loop: each request timed from when it
//! was due) — or, for a query whose maximum (from either store) is below 2,000/s here, at half
//! that maximum, so that the paced run measures latency rather than a queue (it says which).
//!
//! Baseline: the same query served from Postgres, in the same run.

use std::time::Duration;

use uuid::Uuid;

use super::Outcome;
use super::b2_http_commands::prepare_accounts;
use crate::http::{self, Kind, Requests};
use crate::redis_store::BenchRedis;
use crate::server::Server;
use crate::{Context, load, report};

const CONNECTIONS: usize = 32;

pub async fn run(context: Context) -> Outcome {
    let (rate, _) = paced(&context);
    report::heading(
        "b10_redis_queries",
        &format!(
            "GET account and the high-value query, from Redis and from Postgres: {CONNECTIONS} connections ({}), then {rate:.0} requests/s",
            http::generator_name()
        ),
    );
    let redis = BenchRedis::new("b10")?;
    let settings = redis.settings.clone();
    let from_redis = Server::start_with(|s| {
        s.redis = Some(settings);
        s.read_store = backend::read_side::ReadStore::Redis;
    })
    .await?;
    let from_postgres = Server::start().await?;
    let measured = async {
        // Opened by the command handler; both servers' projections follow.
        let accounts = prepare_accounts(&context, CONNECTIONS * 32).await?;
        wait_until_served_by_redis(&from_redis, accounts[0]).await?;
        for kind in [Kind::AccountQuery, Kind::HighValueQuery] {
            compare(&context, kind, &accounts, &from_redis, &from_postgres).await?;
        }
        Ok::<(), Box<dyn std::error::Error>>(())
    }
    .await;
    from_redis.stop().await;
    from_postgres.stop().await;
    redis.clear().await?;
    measured
}

fn paced(context: &Context) -> (f64, Duration) {
    context.size.pick((200.0, Duration::from_secs(1)), (1_000.0, Duration::from_secs(15)))
}

/// The Redis projection builds from the first event once the server starts.
async fn wait_until_served_by_redis(server: &Server, account: Uuid) -> Outcome {
    let client = http::client();
    for _ in 0..600 {
        let answer: serde_json::Value =
            client.get(format!("{}/api/queries/accounts/{account}", server.base)).send().await?.json().await?;
        if answer["servedBy"] == "redis" {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err("Redis did not answer within 60 s".into())
}

async fn compare(context: &Context, kind: Kind, accounts: &[Uuid], redis: &Server, postgres: &Server) -> Outcome {
    let (warmup, duration) = context.size.pick(
        (Duration::from_millis(200), Duration::from_millis(500)),
        (Duration::from_secs(2), Duration::from_secs(10)),
    );
    let (rate, paced_for) = paced(context);
    let what = match kind {
        Kind::AccountQuery => "GET account",
        _ => "high-value query",
    };
    let requests = Requests::new(kind, accounts);
    let from_redis = http::closed_loop(&redis.base, &requests, CONNECTIONS, warmup, duration).await?;
    let from_postgres = http::closed_loop(&postgres.base, &requests, CONNECTIONS, warmup, duration).await?;
    report::against(
        &format!("{what} from Redis, {CONNECTIONS} connections"),
        from_redis.rate(),
        "Postgres",
        from_postgres.rate(),
        "req/s",
    );
    report::latencies_against("  latency", from_redis.latencies.as_ref(), "Postgres", from_postgres.latencies.as_ref());
    from_redis.report_errors(&format!("{what} from Redis"));
    from_postgres.report_errors(&format!("{what} from Postgres"));

    let slower = from_redis.rate().min(from_postgres.rate());
    let rate = if slower < 2.0 * rate && context.size != crate::Size::Smoke {
        report::note(&format!(
            "{what}: {rate:.0}/s is beyond what this machine serves ({slower:.0}/s at most): paced at half that"
        ));
        (slower / 2.0).floor().max(1.0)
    } else {
        rate
    };
    let paced_at = |server: &Server| {
        let (client, base, accounts) = (http::client(), server.base.clone(), accounts.to_vec());
        load::open_loop(rate, paced_for, move |i| {
            http::send(client.clone(), base.clone(), kind, accounts[i % accounts.len()])
        })
    };
    let paced_redis = paced_at(redis).await;
    let paced_postgres = paced_at(postgres).await;
    report::latencies_against(
        &format!("{what} at {rate:.0}/s from Redis"),
        paced_redis.latencies.as_ref(),
        "Postgres",
        paced_postgres.latencies.as_ref(),
    );
    paced_redis.report_errors(&format!("paced {what} from Redis"));
    paced_postgres.report_errors(&format!("paced {what} from Postgres"));
    let ratio = from_redis.rate() / from_postgres.rate();
    report::target(&format!("B10: {what}, Redis's maximum ≥ Postgres's"), ratio >= 1.0, &format!("{ratio:.2}"));
    Ok(())
}

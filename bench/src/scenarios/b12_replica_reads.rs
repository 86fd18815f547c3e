//! B12: queries from a streaming replica. A private primary and hot standby of it
//! (`scripts/replica-pair`, on free ports; the machine's own Postgres allows no replication),
//! a backlog of accounts projected on the primary and replayed by the standby; then the account
//! query (`ReadModel::account`, what `GET /api/queries/accounts/{id}` runs) at its maximum from
//! 32 clients: all on the primary's pool, then half on the primary's and half on the
//! replica's (two pools).
//!
//! Baseline: the primary alone, in the same run. Both servers share this machine's two cores,
//! so the figure says what a replica costs and carries here, not what a second host would add.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use backend::read_side::{AccountSummaryProjection, ReadModel, ReadPools};
use eventstore::{AppendNotifier, CheckpointWatch, Progress, ProjectionRunner};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

use super::Outcome;
use crate::{Context, database, report};

const CLIENTS: usize = 32;
const ACCOUNTS: i64 = 1_024;

pub async fn run(context: Context) -> Outcome {
    report::heading(
        "b12_replica_reads",
        &format!(
            "the account query at its maximum from {CLIENTS} clients: primary only, then primary + streaming replica"
        ),
    );
    let pair = Pair::start()?;
    let measured = measure(&context, &pair).await;
    pair.stop();
    measured
}

async fn measure(context: &Context, pair: &Pair) -> Outcome {
    let (warmup, duration) = context.size.pick(
        (Duration::from_millis(200), Duration::from_millis(500)),
        (Duration::from_secs(2), Duration::from_secs(10)),
    );
    let primary = connect(&pair.url(pair.primary_port), 40).await?;
    backend::schema::migrate(&primary).await?;
    database::insert_account_events(&primary, "b12-", ACCOUNTS, 1, 2).await?;
    let runner =
        ProjectionRunner::new(primary.clone(), AccountSummaryProjection, AppendNotifier::new().subscribe(), "bench");
    while let Progress::Applied(_) | Progress::HeldBack = runner.run_batch().await.map_err(|e| e.to_string())? {}
    let accounts: Vec<Uuid> = sqlx::query_scalar("SELECT account_id FROM account_summary").fetch_all(&primary).await?;
    let replica = connect(&pair.url(pair.standby_port), 40).await?;
    wait_for_replay(&replica, accounts.len() as i64).await?;

    let checkpoints = CheckpointWatch::new(1_000);
    let bound = Duration::from_secs(2);
    let on_primary = ReadModel::new(ReadPools::primary_only(primary.clone()), bound, checkpoints.clone());
    let with_replica = ReadModel::new(
        ReadPools::with_replica(primary.clone(), replica.clone(), Duration::from_secs(5)),
        bound,
        checkpoints.clone(),
    );
    let shutdown = tokio_util::sync::CancellationToken::new();
    serving(&with_replica, &shutdown).await?;

    let alone = closed_loop(std::slice::from_ref(&on_primary), &accounts, warmup, duration).await?;
    let both = closed_loop(&[on_primary, with_replica], &accounts, warmup, duration).await?;
    shutdown.cancel();
    report::against(
        &format!("account query, {CLIENTS} clients, primary + replica (two pools)"),
        both,
        "primary only",
        alone,
        "req/s",
    );
    report::note(&format!("B12: primary + replica ÷ primary only = {:.2}", both / alone));
    primary.close().await;
    replica.close().await;
    Ok(())
}

/// Starts the replica's lag measurement (what makes queries read it) and waits until it serves.
async fn serving(model: &ReadModel, shutdown: &tokio_util::sync::CancellationToken) -> Outcome {
    model.spawn_replica_monitor(shutdown.clone());
    for _ in 0..100 {
        if model.replica_health().is_some_and(|health| health.serving) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("the replica does not serve: {:?}", model.replica_health()).into())
}

/// Account queries from `CLIENTS` clients spread over `models` for `duration` after `warmup`;
/// the rate of answered queries. Every answer must find its account.
async fn closed_loop(
    models: &[ReadModel],
    accounts: &[Uuid],
    warmup: Duration,
    duration: Duration,
) -> Result<f64, Box<dyn std::error::Error>> {
    let counting = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let model = models[client % models.len()].clone();
            let accounts = accounts.to_vec();
            let (counting, stop, answered, failed) = (counting.clone(), stop.clone(), answered.clone(), failed.clone());
            tokio::spawn(async move {
                let mut n = client;
                while !stop.load(Ordering::Relaxed) {
                    n += CLIENTS;
                    let found = matches!(
                        model.account(accounts[n % accounts.len()], None).await,
                        Ok(backend::read_side::AccountLookup::Found(_))
                    );
                    if counting.load(Ordering::Relaxed) {
                        if found {
                            answered.fetch_add(1, Ordering::Relaxed)
                        } else {
                            failed.fetch_add(1, Ordering::Relaxed)
                        };
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(warmup).await;
    counting.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(duration).await;
    counting.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await?;
    }
    let failed = failed.load(Ordering::Relaxed);
    if failed > 0 {
        return Err(format!("{failed} account queries found no account").into());
    }
    Ok(report::per_second(answered.load(Ordering::Relaxed), elapsed))
}

async fn connect(url: &str, max_connections: u32) -> Result<PgPool, Box<dyn std::error::Error>> {
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(30))
        .connect(url)
        .await?)
}

/// Waits until the standby has replayed the projected accounts.
async fn wait_for_replay(replica: &PgPool, accounts: i64) -> Outcome {
    for _ in 0..300 {
        let replayed: Option<i64> =
            sqlx::query_scalar("SELECT count(*) FROM account_summary").fetch_one(replica).await.ok();
        if replayed == Some(accounts) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err("the standby did not replay the accounts within 30 s".into())
}

/// A private primary and standby, by the scripts' `scripts/replica-pair`.
struct Pair {
    folder: String,
    primary_port: u16,
    standby_port: u16,
}

impl Pair {
    fn start() -> Result<Pair, Box<dyn std::error::Error>> {
        let free_port =
            || std::net::TcpListener::bind("127.0.0.1:0").map(|listener| listener.local_addr().map(|a| a.port()));
        let (primary_port, standby_port) = (free_port()??, free_port()??);
        let pair = Pair {
            folder: format!("/var/tmp/cqrs-bank-bench-pair-{}", std::process::id()),
            primary_port,
            standby_port,
        };
        let output = Command::new("bash")
            .arg(script())
            .args(["start", &pair.folder, &primary_port.to_string(), &standby_port.to_string()])
            .output()?;
        if !output.status.success() {
            pair.stop();
            return Err(
                format!("scripts/replica-pair start failed: {}", String::from_utf8_lossy(&output.stderr)).into()
            );
        }
        Ok(pair)
    }

    fn url(&self, port: u16) -> String {
        format!("postgres://postgres@127.0.0.1:{port}/postgres")
    }

    fn stop(&self) {
        let _ = Command::new("bash").arg(script()).args(["stop", &self.folder]).output();
        let _ = std::fs::remove_dir_all(&self.folder);
    }
}

fn script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/replica-pair")
}

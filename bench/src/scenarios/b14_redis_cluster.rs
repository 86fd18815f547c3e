//! B14: the Redis read store on one Redis and on a Redis Cluster of three masters (started here
//! from `redis-server`, on this machine). The store is split into three partitions both times,
//! so that on the cluster each partition is a slot, on a master of its own. B4's backlog is
//! drained by the three partitions' runners at once, then the store answers account reads from
//! 32 tasks (`RedisAccounts::account`, what `GET /api/queries/accounts/{id}` asks Redis; the
//! HTTP around it is B10's).
//!
//! Baseline: the same on the one Redis (`REDIS_URL`), in the same run. Every process shares the
//! same two cores, so the ratio is what the cluster costs, not what it would gain on machines of
//! their own.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backend::read_side::RedisAccounts;
use eventstore::projection::{ExternalProjection, ExternalProjectionRunner, Partition, PartitionShare, adopt_count};
use eventstore::{AppendNotifier, Progress};
use rust_decimal::Decimal;
use sqlx::PgPool;
use uuid::Uuid;

use super::Outcome;
use crate::report::{self, Latencies};
use crate::{Context, Size, database};

const EVENTS_PER_ACCOUNT: i64 = 100;
const CHUNK: i64 = 50_000;
const PARTITIONS: u32 = 3;
const READERS: usize = 32;

pub async fn run(context: Context) -> Outcome {
    let events: i64 = match context.size {
        Size::Smoke => 2_000,
        Size::Default | Size::Big => 100_000,
    };
    let accounts = events / EVENTS_PER_ACCOUNT;
    report::heading(
        "b14_redis_cluster",
        &format!(
            "the Redis store in {PARTITIONS} partitions, on one Redis and on a 3-master cluster: {events} events over \
             {accounts} accounts caught up, then account reads from {READERS} tasks"
        ),
    );
    let Some(cluster) = LocalCluster::start().await? else {
        report::note("B14 skipped: redis-server and redis-cli are not on the PATH (scripts/test installs them)");
        return Ok(());
    };
    let pool = &context.pool;
    database::insert_backlog(pool, "b14-", accounts, EVENTS_PER_ACCOUNT, CHUNK).await?;
    let mut ids = Vec::with_capacity(accounts as usize);
    for a in 1..=accounts {
        ids.push(database::stream_id(pool, "b14-", a).await?);
    }
    let read_for = context.size.pick(Duration::from_secs(1), Duration::from_secs(10));

    let single_url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".to_owned());
    let prefix = format!("cqrs-bank-bench-b14-{}:", std::process::id());
    let mut measured = Vec::new();
    for url in [single_url.as_str(), cluster.url.as_str()] {
        let store = RedisAccounts::new(url, &prefix, PARTITIONS)?;
        let outcome = async {
            let (applied, took) = catch_up(pool, &store).await?;
            verify(&store, accounts).await?;
            let (reads, took_reads, latencies) = read(&store, &ids, read_for).await?;
            Ok::<_, Box<dyn std::error::Error>>((
                report::per_second(applied, took),
                report::per_second(reads, took_reads),
                latencies,
            ))
        }
        .await;
        store.retire(PARTITIONS, None).await?;
        measured.push(outcome?);
    }
    let [(catch_single, reads_single, latencies_single), (catch_cluster, reads_cluster, latencies_cluster)] =
        <[_; 2]>::try_from(measured).map_err(|_| "two stores measured")?;
    report::against("Redis catch-up, 3 partitions on 3 masters", catch_cluster, "one Redis", catch_single, "events/s");
    report::against("account reads from the cluster", reads_cluster, "one Redis", reads_single, "reads/s");
    report::latencies_against("  latency", latencies_cluster.as_ref(), "one Redis", latencies_single.as_ref());
    report::note(&format!(
        "B14: cluster ÷ one Redis: catch-up {:.2}, reads {:.2} (one machine: the overhead, not a speed-up)",
        catch_cluster / catch_single,
        reads_cluster / reads_single
    ));
    Ok(())
}

/// Drains the backlog into `store` with its partitions' runners at once, from the first event;
/// returns (events applied, elapsed).
async fn catch_up(pool: &PgPool, store: &RedisAccounts) -> Result<(usize, Duration), Box<dyn std::error::Error>> {
    // From the first event: the runs before left checkpoint rows (a count change deletes them).
    adopt_count(pool, RedisAccounts::NAME, &[], PARTITIONS + 1, true).await?;
    adopt_count(pool, RedisAccounts::NAME, &[], PARTITIONS, true).await?;
    let share = Arc::new(PartitionShare::new(RedisAccounts::NAME, PARTITIONS));
    let started = Instant::now();
    let tasks: Vec<_> = Partition::all(PARTITIONS)
        .map(|partition| {
            let runner =
                ExternalProjectionRunner::new(pool.clone(), store.clone(), AppendNotifier::new().subscribe(), "bench")
                    .partition(partition, share.clone());
            tokio::spawn(async move {
                loop {
                    match runner.run_step().await.map_err(|error| error.to_string())? {
                        Progress::Applied(_) => {}
                        Progress::CaughtUp | Progress::NotLeading | Progress::SwapPending => break,
                        Progress::HeldBack => tokio::time::sleep(Duration::from_millis(1)).await,
                    }
                }
                Ok::<(), String>(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    // Each partition reads past every event and applies its own: together, every event once
    // (`verify` checks the balances).
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(pool).await?;
    Ok((applied as usize, started.elapsed()))
}

/// The store ranks every account of the backlog with the balance it says.
async fn verify(store: &RedisAccounts, accounts: i64) -> Outcome {
    let ranked = store.highest(Decimal::ZERO, None, accounts + 1).await?.value;
    let total: Decimal = ranked.iter().map(|account| account.current_balance).sum();
    let each = if EVENTS_PER_ACCOUNT % 2 == 0 { Decimal::from(101) } else { Decimal::from(100) };
    if ranked.len() as i64 != accounts || total != each * Decimal::from(accounts) {
        return Err(format!(
            "the store does not match the backlog: {} accounts of {accounts}, total {total}",
            ranked.len()
        )
        .into());
    }
    Ok(())
}

/// Reads accounts from `READERS` tasks for `duration`; returns (reads, elapsed, latencies).
async fn read(
    store: &RedisAccounts,
    ids: &[Uuid],
    duration: Duration,
) -> Result<(usize, Duration, Option<Latencies>), Box<dyn std::error::Error>> {
    let ids = Arc::new(ids.to_vec());
    let started = Instant::now();
    let tasks: Vec<_> = (0..READERS)
        .map(|reader| {
            let (store, ids) = (store.clone(), ids.clone());
            tokio::spawn(async move {
                let mut samples = Vec::new();
                let mut i = reader;
                while started.elapsed() < duration {
                    let asked = Instant::now();
                    let found = store.account(ids[i % ids.len()]).await.map_err(|error| error.to_string())?;
                    if found.value.is_none() {
                        return Err(format!("account {} is not in the store", ids[i % ids.len()]));
                    }
                    samples.push(asked.elapsed());
                    i += READERS;
                }
                Ok::<Vec<Duration>, String>(samples)
            })
        })
        .collect();
    let mut samples = Vec::new();
    for task in tasks {
        samples.extend(task.await??);
    }
    let elapsed = started.elapsed();
    Ok((samples.len(), elapsed, Latencies::of(&mut samples)))
}

/// Three `redis-server`s of the benchmark's own made one cluster (masters only), removed when
/// dropped.
struct LocalCluster {
    url: String,
    nodes: Vec<Child>,
    dir: std::path::PathBuf,
}

impl LocalCluster {
    /// `None` without `redis-server` and `redis-cli`.
    async fn start() -> Result<Option<LocalCluster>, Box<dyn std::error::Error>> {
        let found = |tool: &str| Command::new(tool).arg("--version").output().is_ok_and(|out| out.status.success());
        if !found("redis-server") || !found("redis-cli") {
            return Ok(None);
        }
        let dir = std::env::temp_dir().join(format!("cqrs-bank-bench-cluster-{}", std::process::id()));
        let mut cluster = LocalCluster { url: String::new(), nodes: Vec::new(), dir };
        let mut addresses = Vec::new();
        for _ in 0..3 {
            let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let node_dir = cluster.dir.join(port.to_string());
            std::fs::create_dir_all(&node_dir)?;
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .args(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"])
                .arg("--dir")
                .arg(&node_dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            cluster.nodes.push(child);
            addresses.push(format!("127.0.0.1:{port}"));
        }
        for address in &addresses {
            wait_for(&format!("redis-server at {address}"), || answers(address, &["PING"], "PONG")).await?;
        }
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .output()?;
        if !created.status.success() {
            return Err(format!("redis-cli --cluster create: {}", String::from_utf8_lossy(&created.stderr)).into());
        }
        for address in &addresses {
            wait_for(&format!("the cluster whole at {address}"), || {
                answers(address, &["CLUSTER", "INFO"], "cluster_state:ok")
            })
            .await?;
        }
        cluster.url = format!("redis+cluster://{}", addresses.join(","));
        Ok(Some(cluster))
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.kill();
            let _ = node.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether `redis-cli` at `address` answers `args` with a text containing `expected`.
fn answers(address: &str, args: &[&str], expected: &str) -> bool {
    let Some((host, port)) = address.rsplit_once(':') else { return false };
    Command::new("redis-cli")
        .args(["-h", host, "-p", port])
        .args(args)
        .output()
        .is_ok_and(|out| out.status.success() && String::from_utf8_lossy(&out.stdout).contains(expected))
}

/// Asks `ready` every 100 ms, for at most 30 s.
async fn wait_for(what: &str, ready: impl Fn() -> bool) -> Outcome {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready() {
        if Instant::now() >= deadline {
            return Err(format!("{what}: not ready within 30 s").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

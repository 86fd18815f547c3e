//! The Redis read store on a Redis Cluster of three masters with a replica each, started by the
//! test from `redis-server` (scripts/test installs it), the store split into four partitions (a
//! slot each): under load, a manual failover of one partition's master, a `kill -9` of
//! another's, and a partition's slot migrated to another master. Afterwards Redis holds what the
//! log folds to, and no answer from it ever showed money the log did not hold.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rust_decimal::Decimal;
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use testkit::{PATIENCE, eventually, when};
use uuid::Uuid;

use backend::read_side::ReadStore;
use eventstore::projection::Partition;

use crate::helpers::spawn_app_with;
use crate::read_model::replay;
use crate::redis_store::{RedisSpace, wait_for_redis};

/// How long a node may be silent before the cluster counts it failed (`cluster-node-timeout`):
/// long enough that a busy machine's pauses fail nobody over, short enough that a killed
/// master's replica takes over within seconds.
const NODE_TIMEOUT_MS: u64 = 3_000;

/// Six `redis-server`s of the test's own, made one cluster: three masters, a replica each.
struct PrivateCluster {
    nodes: Vec<(u16, Option<Child>)>,
    dir: std::path::PathBuf,
}

impl PrivateCluster {
    async fn start() -> PrivateCluster {
        let dir = std::env::temp_dir().join(format!("cqrs-bank-redis-cluster-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut nodes = Vec::new();
        for _ in 0..6 {
            let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let node_dir = dir.join(port.to_string());
            std::fs::create_dir_all(&node_dir).unwrap();
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .args(["--cluster-enabled", "yes", "--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()])
                .args(["--cluster-config-file", "nodes.conf"])
                .arg("--dir")
                .arg(&node_dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server runs (scripts/test installs it)");
            nodes.push((port, Some(child)));
        }
        let cluster = PrivateCluster { nodes, dir };
        for (port, _) in &cluster.nodes {
            eventually(&format!("redis-server answering on port {port}"), PATIENCE, || node_command(*port, &["PING"]))
                .await;
        }
        let addresses: Vec<String> = cluster.nodes.iter().map(|(port, _)| format!("127.0.0.1:{port}")).collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(Stdio::null())
            .output()
            .expect("redis-cli runs");
        assert!(created.status.success(), "redis-cli --cluster create: {}", String::from_utf8_lossy(&created.stderr));
        cluster.wait_until_whole().await;
        cluster
    }

    /// `redis+cluster://` with every node.
    fn url(&self) -> String {
        let nodes: Vec<String> = self.nodes.iter().map(|(port, _)| format!("127.0.0.1:{port}")).collect();
        format!("redis+cluster://{}", nodes.join(","))
    }

    /// Waits until every running node says the cluster is whole and that `slot` has a master.
    async fn wait_until_whole(&self) {
        for (port, child) in &self.nodes {
            if child.is_none() {
                continue;
            }
            eventually(&format!("node {port} sees the cluster whole"), PATIENCE, || async move {
                let info = node_command(*port, &["CLUSTER", "INFO"]).await.map_err(|e| e.to_string())?;
                when((), |()| info.contains("cluster_state:ok")).map_err(|()| info)
            })
            .await;
        }
    }

    /// The port of the master serving `slot`, as the node at `asked` sees it.
    async fn master_of(&self, slot: u16) -> u16 {
        let asked = self.running().next().expect("a node runs");
        eventually(&format!("a master serving slot {slot}"), PATIENCE, || async move {
            let nodes = node_command(asked, &["CLUSTER", "NODES"]).await.map_err(|e| e.to_string())?;
            let master = nodes.lines().find(|line| {
                let fields: Vec<&str> = line.split(' ').collect();
                fields.len() > 8
                    && fields[2].contains("master")
                    && !fields[2].contains("fail")
                    && fields[8..].iter().any(|range| serves(range, slot))
            });
            master.and_then(port_of).ok_or(nodes)
        })
        .await
    }

    /// The port of a replica of the master at `master`.
    async fn replica_of(&self, master: u16) -> u16 {
        eventually(&format!("a replica of {master}"), PATIENCE, || async move {
            let nodes = node_command(master, &["CLUSTER", "NODES"]).await.map_err(|e| e.to_string())?;
            let master_id = nodes.lines().find(|line| line.contains("myself")).and_then(|line| line.split(' ').next());
            let master_id = master_id.ok_or_else(|| nodes.clone())?.to_owned();
            let replica = nodes.lines().find(|line| {
                let fields: Vec<&str> = line.split(' ').collect();
                fields.len() > 3 && fields[2].contains("slave") && !fields[2].contains("fail") && fields[3] == master_id
            });
            replica.and_then(port_of).ok_or(nodes)
        })
        .await
    }

    /// The ports of the masters that run.
    async fn masters(&self) -> Vec<u16> {
        let asked = self.running().next().expect("a node runs");
        let nodes = node_command(asked, &["CLUSTER", "NODES"]).await.unwrap();
        nodes
            .lines()
            .filter(|line| {
                let flags = line.split(' ').nth(2).unwrap_or_default();
                flags.contains("master") && !flags.contains("fail")
            })
            .filter_map(port_of)
            .collect()
    }

    /// Has the replica at `replica` take `slot` over from its master (`CLUSTER FAILOVER`),
    /// asking again every 10 s while it has not: a manual failover that times out is not retried
    /// by Redis, and one asked again while under way starts over.
    async fn fail_over_to(&self, replica: u16, slot: u16) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let _ = node_command(replica, &["CLUSTER", "FAILOVER"]).await;
            let asked = tokio::time::Instant::now();
            while asked.elapsed() < Duration::from_secs(10) {
                if self.master_of(slot).await == replica {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert!(tokio::time::Instant::now() < deadline, "{replica} did not take slot {slot} over");
        }
    }

    /// Moves `slot` from the master at `from` to the one at `to`, as `redis-cli --cluster
    /// reshard` does: the target imports, the source migrates, the keys go over in batches
    /// (clients meanwhile follow `ASK`), then every master is told the slot's new owner.
    async fn migrate(&self, slot: u16, from: u16, to: u16) {
        let (slot, from_id, to_id) = (
            slot.to_string(),
            node_command(from, &["CLUSTER", "MYID"]).await.unwrap(),
            node_command(to, &["CLUSTER", "MYID"]).await.unwrap(),
        );
        node_command(to, &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id]).await.unwrap();
        node_command(from, &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id]).await.unwrap();
        for batch in 0.. {
            let keys = node_keys(from, &slot).await;
            if keys.is_empty() {
                break;
            }
            assert!(batch < 1_000, "slot {slot} still has keys after 1,000 batches of 100");
            let mut migrate = vec!["MIGRATE", "127.0.0.1"];
            let port = to.to_string();
            migrate.extend([port.as_str(), "", "0", "5000", "KEYS"]);
            migrate.extend(keys.iter().map(String::as_str));
            node_command(from, &migrate).await.unwrap();
        }
        for master in self.masters().await {
            node_command(master, &["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]).await.unwrap();
        }
    }

    fn running(&self) -> impl Iterator<Item = u16> + '_ {
        self.nodes.iter().filter(|(_, child)| child.is_some()).map(|(port, _)| *port)
    }

    /// `kill -9` of the node at `port`.
    fn kill(&mut self, port: u16) {
        let (_, child) = self.nodes.iter_mut().find(|(p, _)| *p == port).expect("a node of the cluster");
        let mut child = child.take().expect("the node runs");
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.nodes {
            if let Some(mut child) = child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether `range` of a `CLUSTER NODES` line (`5461-10922` or `42`) holds `slot`.
fn serves(range: &str, slot: u16) -> bool {
    match range.split_once('-') {
        Some((low, high)) => {
            low.parse::<u16>().is_ok_and(|low| low <= slot) && high.parse::<u16>().is_ok_and(|high| slot <= high)
        }
        None => range.parse::<u16>() == Ok(slot),
    }
}

/// The port in a `CLUSTER NODES` line's `ip:port@cport`.
fn port_of(line: &str) -> Option<u16> {
    let address = line.split(' ').nth(1)?;
    address.split('@').next()?.rsplit_once(':')?.1.parse().ok()
}

/// Up to 100 keys of `slot` on the node at `port`.
async fn node_keys(port: u16, slot: &str) -> Vec<String> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("CLUSTER").arg("GETKEYSINSLOT").arg(slot).arg(100).query_async(&mut connection).await.unwrap()
}

/// One command to one node, its answer as text.
async fn node_command(port: u16, args: &[&str]) -> redis::RedisResult<String> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
    let mut connection = tokio::time::timeout(Duration::from_secs(2), client.get_multiplexed_async_connection())
        .await
        .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "timed out")))??;
    let mut command = redis::cmd(args[0]);
    for arg in &args[1..] {
        command.arg(*arg);
    }
    let answer: redis::Value = tokio::time::timeout(Duration::from_secs(10), command.query_async(&mut connection))
        .await
        .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "no answer in 10 s")))??;
    Ok(match answer {
        redis::Value::Okay => "OK".to_owned(),
        redis::Value::Int(n) => n.to_string(),
        other => redis::from_redis_value(other)?,
    })
}

/// Deposits of 1.00 on every account, one at a time each, until `stop`; counts the acknowledged.
fn keep_depositing(
    app: &crate::helpers::TestApp,
    ids: &[String],
    stop: &Arc<AtomicBool>,
    acknowledged: &Arc<AtomicU64>,
) -> Vec<tokio::task::JoinHandle<()>> {
    ids.iter()
        .map(|id| {
            let (client, address, id) = (app.client.clone(), app.address.clone(), id.clone());
            let (stop, acknowledged) = (stop.clone(), acknowledged.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let answer = client
                        .post(format!("{address}/api/commands/deposit"))
                        .json(&json!({"accountId": id, "amount": "1.00"}))
                        .send()
                        .await
                        .expect("the request is answered");
                    assert!(answer.status().is_success(), "a deposit failed: {}", answer.text().await.unwrap());
                    acknowledged.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect()
}

/// Reads the accounts until `stop`: whatever answers (Redis, or Postgres while a slot has no
/// master), never a balance above the opening 100 and the deposits acknowledged by then (each
/// account has one deposit on its way at most).
fn keep_reading(
    app: &crate::helpers::TestApp,
    ids: &[String],
    stop: &Arc<AtomicBool>,
    acknowledged: &Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    let (client, address, ids) = (app.client.clone(), app.address.clone(), ids.to_vec());
    let (stop, acknowledged) = (stop.clone(), acknowledged.clone());
    tokio::spawn(async move {
        while !stop.load(Ordering::SeqCst) {
            for id in &ids {
                let answer = client.get(format!("{address}/api/queries/accounts/{id}")).send().await.unwrap();
                assert!(answer.status().is_success(), "a query failed: {}", answer.text().await.unwrap());
                let answer: Value = answer.json().await.unwrap();
                let most = Decimal::from(100 + acknowledged.load(Ordering::SeqCst) + ids.len() as u64);
                let balance = money(&answer["currentBalance"]);
                assert!(balance <= most, "{id} showed {balance}, more than the log can hold ({most}): {answer}");
                assert_eq!(balance.fract(), Decimal::ZERO, "{id} showed {balance}: not 100 plus whole deposits");
            }
        }
    })
}

/// An amount of the HTTP contract (a JSON number, exact).
fn money(amount: &Value) -> Decimal {
    amount.to_string().trim_matches('"').parse().unwrap_or_else(|_| panic!("an amount: {amount}"))
}

/// Waits until `count` more deposits than `from` are acknowledged.
async fn wait_for_deposits(acknowledged: &AtomicU64, from: u64, count: u64) {
    eventually(&format!("{count} more deposits"), PATIENCE, || async {
        let now = acknowledged.load(Ordering::SeqCst);
        when(now, |now| *now >= from + count)
    })
    .await;
}

/// The slot of `partition`'s keys in the store `space` names.
async fn slot_of(cluster: &PrivateCluster, space: &RedisSpace, partition: Partition) -> u16 {
    let key = space.key_in(partition, "projection");
    let asked = cluster.running().next().expect("a node runs");
    node_command(asked, &["CLUSTER", "KEYSLOT", &key]).await.unwrap().parse().unwrap()
}

#[sqlx::test(migrations = false)]
async fn on_a_cluster_the_store_outlives_a_failover_a_killed_master_and_a_slot_move(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    // Given: a cluster of three masters with a replica each, the store on it in four
    // partitions, and accounts in every partition.
    const PARTITIONS: u32 = 4;
    let mut cluster = PrivateCluster::start().await;
    let mut space = RedisSpace::at(cluster.url());
    space.partitions = PARTITIONS;
    let redis = space.settings();
    let app = spawn_app_with(db, move |settings| {
        settings.redis = Some(redis);
        settings.read_store = ReadStore::Redis;
        settings.projection_partitions = PARTITIONS;
    })
    .await;
    let mut ids: Vec<String> = Vec::new();
    while ids.len() < 8 || !Partition::all(PARTITIONS).all(|p| ids.iter().any(|id| in_partition(id, p))) {
        ids.push(app.account_id("alice", 100.0).await);
    }
    let store = space.accounts();
    wait_for_redis(&app.pool, &store).await;
    let (stop, acknowledged) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let writers = keep_depositing(&app, &ids, &stop, &acknowledged);
    let reader = keep_reading(&app, &ids, &stop, &acknowledged);
    wait_for_deposits(&acknowledged, 0, 20).await;

    // When: partition 0's master hands its slot to its replica (CLUSTER FAILOVER) under load,
    let slot = slot_of(&cluster, &space, Partition { index: 0, count: PARTITIONS }).await;
    let first = cluster.master_of(slot).await;
    let successor = cluster.replica_of(first).await;
    cluster.fail_over_to(successor, slot).await;
    wait_for_deposits(&acknowledged, acknowledged.load(Ordering::SeqCst), 20).await;

    // partition 1's master is killed (-9), and its replica takes over,
    let slot = slot_of(&cluster, &space, Partition { index: 1, count: PARTITIONS }).await;
    let killed = cluster.master_of(slot).await;
    cluster.kill(killed);
    eventually("a replica took over the slot after the kill", PATIENCE, || async {
        when(cluster.master_of(slot).await, |master| *master != killed)
    })
    .await;
    wait_for_deposits(&acknowledged, acknowledged.load(Ordering::SeqCst), 20).await;

    // and partition 2's slot moves to another master, its keys in batches, under load.
    let slot = slot_of(&cluster, &space, Partition { index: 2, count: PARTITIONS }).await;
    let from = cluster.master_of(slot).await;
    let to = *cluster.masters().await.iter().find(|master| **master != from).expect("another master");
    cluster.migrate(slot, from, to).await;
    eventually("the slot served by its new master", PATIENCE, || async {
        when(cluster.master_of(slot).await, |master| *master == to)
    })
    .await;
    wait_for_deposits(&acknowledged, acknowledged.load(Ordering::SeqCst), 20).await;
    stop.store(true, Ordering::SeqCst);
    for writer in writers {
        writer.await.unwrap();
    }
    reader.await.unwrap();

    // Then: Redis holds what the log folds to, account by account, and ranks those alone.
    wait_for_redis(&app.pool, &store).await;
    let (expected, _) = replay(&app.pool).await;
    assert_eq!(expected.len(), ids.len());
    for (id, summary) in &expected {
        let view = store.account(*id).await.unwrap().value.unwrap_or_else(|| panic!("Redis lacks account {id}"));
        assert_eq!((view.current_balance, view.version), (summary.current_balance, summary.version), "account {id}");
    }
    let ranked = store.highest(Decimal::ZERO, None, 100).await.unwrap().value;
    let mut by_balance: Vec<(Decimal, Uuid)> = expected.values().map(|s| (s.current_balance, s.account_id)).collect();
    by_balance.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let ranked: Vec<(Decimal, Uuid)> = ranked.iter().map(|a| (a.current_balance, a.account_id)).collect();
    assert_eq!(ranked, by_balance, "the merged ranking is the log's, in the Postgres query's order");
    // And each account is read from Redis again, at the balance the log holds.
    for id in &ids {
        let balance = expected[&id.parse::<Uuid>().unwrap()].current_balance;
        eventually(&format!("account {id} read from Redis again"), PATIENCE, || async {
            let answer: Value = app.get(&format!("/api/queries/accounts/{id}")).await.json().await.unwrap();
            when(answer, |answer| answer["servedBy"] == "redis")
        })
        .await;
        let answer: Value = app.get(&format!("/api/queries/accounts/{id}")).await.json().await.unwrap();
        assert_eq!(money(&answer["currentBalance"]), balance);
    }
}

/// Whether the account `id` is in `partition`.
fn in_partition(id: &str, partition: Partition) -> bool {
    Partition::of_stream(id.parse().unwrap(), partition.count) == partition
}

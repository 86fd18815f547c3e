//! The Redis read store against a real Redis: exactly once (a batch applied twice, two instances
//! and a kill -9, FLUSHALL mid-load, Redis stopped and started), the same answers as Postgres,
//! and every query answered from Postgres while Redis is away.
//!
//! Tests share the Redis `TEST_REDIS_URL` names (default `redis://127.0.0.1:6379/15`, a database
//! of its own), each under a key prefix of its own, removed when the test ends. Tests that stop,
//! restart or flush Redis start a private `redis-server` of their own.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use backend::read_side::RedisAccounts;
use eventstore::projection::{CompareAndSet, ExternalBatch, ExternalProjection, LogPlace, Partition};
use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use server::configuration::RedisSettings;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use testkit::{PATIENCE, eventually, when};
use uuid::Uuid;

use crate::helpers::{TestApp, spawn_app_with};
use crate::read_model::{Summary, replay};

/// A key prefix of this test's own in a Redis; its keys go when it is dropped.
pub struct RedisSpace {
    pub url: String,
    pub prefix: String,
    /// How many partitions the store is split into (the server's `PROJECTION_PARTITIONS`).
    pub partitions: u32,
}

impl RedisSpace {
    /// In the tests' shared Redis database.
    pub fn shared() -> RedisSpace {
        let url = std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/15".to_owned());
        RedisSpace::at(url)
    }

    pub fn at(url: String) -> RedisSpace {
        RedisSpace { url, prefix: format!("test-{}:", Uuid::new_v4().simple()), partitions: 1 }
    }

    /// The key `name` of the store split in one (after the prefix and the partition's hash tag).
    pub fn key(&self, name: &str) -> String {
        self.key_in(Partition::WHOLE, name)
    }

    /// The key `name` of `partition`.
    pub fn key_in(&self, partition: Partition, name: &str) -> String {
        format!("{}{}{name}", self.prefix, backend::read_side::redis_accounts::slot_tag(partition))
    }

    pub fn settings(&self) -> RedisSettings {
        RedisSettings { url: self.url.clone(), key_prefix: self.prefix.clone() }
    }

    pub fn accounts(&self) -> RedisAccounts {
        RedisAccounts::new(&self.url, &self.prefix, self.partitions).expect("a valid Redis URL")
    }

    /// A command on a connection of its own (none is kept: the server may be stopped).
    fn command(&self, command: &redis::Cmd) -> redis::RedisResult<Value> {
        let mut connection = redis::Client::open(self.url.as_str())?.get_connection()?;
        let value: redis::Value = command.query(&mut connection)?;
        Ok(match value {
            redis::Value::Int(n) => json!(n),
            _ => Value::Null,
        })
    }

    /// How many accounts the store ranks by balance.
    fn ranked(&self) -> i64 {
        let count = self.command(redis::cmd("ZCARD").arg(self.key("balances"))).expect("Redis answers");
        count.as_i64().unwrap()
    }
}

impl Drop for RedisSpace {
    fn drop(&mut self) {
        let Ok(mut connection) = redis::Client::open(self.url.as_str()).and_then(|c| c.get_connection()) else {
            return;
        };
        let keys: Vec<String> =
            redis::cmd("KEYS").arg(format!("{}*", self.prefix)).query(&mut connection).unwrap_or_default();
        if !keys.is_empty() {
            let _: redis::RedisResult<i64> = redis::cmd("DEL").arg(keys).query(&mut connection);
        }
    }
}

/// A `redis-server` of the test's own on a free port, keeping nothing on disk.
pub struct PrivateRedis {
    child: Option<Child>,
    pub port: u16,
}

impl PrivateRedis {
    pub async fn start() -> PrivateRedis {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut redis = PrivateRedis { child: None, port };
        redis.restart().await;
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts it (again, empty) and waits until it answers.
    pub async fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (scripts/test installs it)");
        self.child = Some(child);
        let url = self.url();
        eventually(&format!("redis-server answering on port {}", self.port), PATIENCE, || async {
            let mut connection = redis::Client::open(url.as_str())?.get_multiplexed_async_connection().await?;
            redis::cmd("PING").query_async::<String>(&mut connection).await
        })
        .await;
    }

    /// Stops it at once (its data goes with it).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

pub async fn spawn_with_redis(db: PgConnectOptions, space: &RedisSpace, read_store: &str) -> TestApp {
    let (redis, read_store) = (space.settings(), read_store.parse().unwrap());
    spawn_app_with(db, move |settings| {
        settings.redis = Some(redis);
        settings.read_store = read_store;
    })
    .await
}

/// The answer without the `servedBy` fields (of the list and of each account).
fn without_served_by(mut answer: Value) -> Value {
    answer.as_object_mut().unwrap().remove("servedBy");
    for account in answer["accounts"].as_array_mut().into_iter().flatten() {
        account.as_object_mut().unwrap().remove("servedBy");
    }
    answer
}

/// The Redis projection's status, as the operators read it.
pub async fn redis_status(app: &TestApp) -> Value {
    let all: Value = app.post_as_operator("/api/operations/projections", &json!({})).await.json().await.unwrap();
    all.as_array().unwrap().iter().find(|p| p["name"] == "redis_accounts").cloned().unwrap_or_default()
}

/// Waits until the Redis store has applied every event and is not rebuilding.
pub async fn wait_for_redis(pool: &PgPool, accounts: &RedisAccounts) {
    eventually("the Redis store caught up", PATIENCE, || async {
        let head = eventstore::store::head(pool).await.unwrap();
        match accounts.progress().await {
            Ok(progress) if !progress.rebuilding && progress.as_of().is_some_and(|at| at >= head) => Ok(()),
            seen => Err(format!("{seen:?}")),
        }
    })
    .await;
}

/// Every account of a fresh fold of the event store, as the Redis store holds it; and no other.
pub async fn assert_redis_equals_replay(pool: &PgPool, space: &RedisSpace) {
    let accounts = space.accounts();
    wait_for_redis(pool, &accounts).await;
    let (expected, _) = replay(pool).await;
    for (id, summary) in &expected {
        let view = accounts.account(*id).await.unwrap().value.unwrap_or_else(|| panic!("Redis lacks account {id}"));
        let stored = Summary {
            account_id: view.account_id,
            owner_id: view.owner_id,
            current_balance: view.current_balance,
            total_deposits: view.total_deposits,
            total_withdrawals: view.total_withdrawals,
            transaction_count: view.transaction_count,
            last_transaction: view.last_transaction,
            created_at: view.created_at,
            version: view.version,
            status: view.status.as_str().to_owned(),
        };
        assert_eq!(&stored, summary, "Redis differs for {id}");
    }
    assert_eq!(space.ranked(), expected.len() as i64, "Redis ranks other accounts than the replay holds");
}

#[sqlx::test(migrations = false)]
async fn a_batch_applied_twice_changes_nothing(_: PgPoolOptions, db: PgConnectOptions) {
    let app = crate::helpers::spawn_app(db).await;
    let id = app.account_id("alice", 100.0).await;
    app.deposit(&id, "25.50").await;
    app.withdraw(&id, "0.50").await;
    // A reader sees an event once no transaction that began before it is still open.
    let log = eventually("the three events readable", PATIENCE, || async {
        let read =
            eventstore::read_batch(&app.pool, eventstore::Position::START, 100, bank::domain::AccountEvent::TYPES)
                .await
                .unwrap();
        when(read, |read| read.events.len() == 3)
    })
    .await;
    let space = RedisSpace::shared();
    let accounts = space.accounts();
    let log_identity = eventstore::log_identity(&app.pool).await.unwrap().unwrap().to_string();
    let to = LogPlace { position: log.read_to.unwrap(), event: log.read_to_event };
    let batch = ExternalBatch {
        partition: Partition::WHOLE,
        epoch: 0,
        log: &log_identity,
        from: None,
        to,
        events: &log.events,
        rebuilding: false,
    };

    assert_eq!(accounts.apply(&batch).await.unwrap(), CompareAndSet::Applied);
    let first = accounts.account(id.parse().unwrap()).await.unwrap();
    assert_eq!(accounts.apply(&batch).await.unwrap(), CompareAndSet::CheckpointMoved);
    let second = accounts.account(id.parse().unwrap()).await.unwrap();

    assert_eq!(second, first);
    assert_eq!(second.as_of(), log.read_to);
    let view = second.value.unwrap();
    assert_eq!((view.current_balance, view.transaction_count), (Decimal::new(12500, 2), 3));
    assert_eq!(space.ranked(), 1);
}

#[sqlx::test(migrations = false)]
async fn both_read_stores_give_the_same_answers(_: PgPoolOptions, db: PgConnectOptions) {
    let space = RedisSpace::shared();
    let redis = spawn_with_redis(db.clone(), &space, "redis").await;
    let postgres = spawn_with_redis(db, &space, "postgres").await;
    // Ties on the balance, cents, and a wide range: the order must agree to the last account.
    let mut ids = Vec::new();
    for balance in [500.0, 500.0, 500.0, 1200.25, 0.01, 999999.99, 750.5, 750.5] {
        ids.push(redis.account_id("alice", balance).await);
    }
    redis.deposit(&ids[4], "499.99").await;
    redis.wait_for_projection().await;
    wait_for_redis(&redis.pool, &space.accounts()).await;

    for id in &ids {
        let from_redis: Value = redis.get(&format!("/api/queries/accounts/{id}")).await.json().await.unwrap();
        let from_postgres: Value = postgres.get(&format!("/api/queries/accounts/{id}")).await.json().await.unwrap();
        assert_eq!(from_redis["servedBy"], "redis", "{from_redis}");
        assert_eq!(from_postgres["servedBy"], "postgres", "{from_postgres}");
        assert_eq!(without_served_by(from_redis), without_served_by(from_postgres));
    }
    let operator = redis.operator_client().await;
    for min in ["0", "500", "500.00", "750.51", "1000000"] {
        let ask = |app: &TestApp| {
            operator
                .post(format!("{}/api/queries/high-value-accounts", app.address))
                .json(&json!({"minBalance": min}))
                .send()
        };
        let from_redis: Value = ask(&redis).await.unwrap().json().await.unwrap();
        let from_postgres: Value = ask(&postgres).await.unwrap().json().await.unwrap();
        assert_eq!(from_redis["servedBy"], "redis");
        assert_eq!(from_postgres["servedBy"], "postgres");
        assert!(!from_redis["accounts"].as_array().unwrap().is_empty() || min == "1000000");
        assert_eq!(without_served_by(from_redis), without_served_by(from_postgres), "minBalance {min}");
    }
    // A customer's own, from the owner's ranking.
    let mine: Value =
        redis.post("/api/queries/high-value-accounts", &json!({"minBalance": "1"})).await.json().await.unwrap();
    assert_eq!(mine["servedBy"], "redis");
    assert_eq!(mine["accounts"].as_array().unwrap().len(), 8);
    let other = redis.sign_up("bob").await;
    let theirs: Value = other
        .client
        .post(format!("{}/api/queries/high-value-accounts", redis.address))
        .json(&json!({"minBalance": "0"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(theirs["accounts"], json!([]));

    // A store marked as rebuilding is not read (no event comes that would unmark it).
    let mut connection = redis::Client::open(space.url.as_str()).unwrap().get_connection().unwrap();
    let projection = space.key("projection");
    let _: () = redis::cmd("HSET").arg(&projection).arg("rebuilding").arg("1").query(&mut connection).unwrap();
    let answer: Value = redis.get(&format!("/api/queries/accounts/{}", ids[0])).await.json().await.unwrap();
    assert_eq!(answer["servedBy"], "postgres", "{answer}");
}

#[sqlx::test(migrations = false)]
async fn with_redis_down_queries_answer_from_postgres_and_redis_is_rebuilt_when_back(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let mut server = PrivateRedis::start().await;
    let space = RedisSpace::at(server.url());
    let app = spawn_with_redis(db, &space, "auto").await;
    let id = app.account_id("alice", 300.0).await;
    app.wait_for_projection().await;
    wait_for_redis(&app.pool, &space.accounts()).await;
    let answer: Value = app.get(&format!("/api/queries/accounts/{id}")).await.json().await.unwrap();
    assert_eq!(answer["servedBy"], "redis");

    server.stop();
    let deposited = app.deposit(&id, 10).await;
    assert_eq!(deposited.status(), StatusCode::OK, "commands do not need Redis");
    let token = deposited.json::<Value>().await.unwrap()["position"].as_str().unwrap().to_owned();
    let read = app.account_after(&id, &token).await;
    assert_eq!((read["servedBy"].as_str(), read["currentBalance"].as_f64()), (Some("postgres"), Some(310.0)));
    let high = app.post("/api/queries/high-value-accounts", &json!({"minBalance": "1"})).await;
    assert_eq!(high.status(), StatusCode::OK);
    assert_eq!(high.json::<Value>().await.unwrap()["servedBy"], "postgres");
    // The operators see why.
    eventually("the operators told Redis is unavailable", PATIENCE, || async {
        when(redis_status(&app).await, |shown| {
            shown["lastError"].as_str().is_some_and(|error| error.contains("read store unavailable"))
        })
    })
    .await;

    // Back, empty: the projection notices and rebuilds it from the first event.
    server.restart().await;
    app.deposit(&id, 5).await;
    assert_redis_equals_replay(&app.pool, &space).await;
    // Redis serves again once it is no longer resting after the last failed read (1 s) and its
    // rebuild is marked done, which may be a moment after its content is whole.
    let answer = eventually("Redis serving again", PATIENCE, || async {
        let answer: Value = app.get(&format!("/api/queries/accounts/{id}")).await.json().await.unwrap();
        when(answer, |answer| answer["servedBy"] == "redis")
    })
    .await;
    assert_eq!(answer["currentBalance"].as_f64(), Some(315.0), "{answer}");
    // Postgres records the rebuild's end just after Redis, and the status is read at most 1 s old.
    eventually("the Redis projection running without error", PATIENCE, || async {
        when(redis_status(&app).await, |shown| shown["state"] == "running" && shown["lastError"].is_null())
    })
    .await;
}

#[sqlx::test(migrations = false)]
async fn flushall_mid_load_is_noticed_and_rebuilt_to_a_replay(_: PgPoolOptions, db: PgConnectOptions) {
    let server = PrivateRedis::start().await;
    let space = RedisSpace::at(server.url());
    let app = spawn_with_redis(db, &space, "auto").await;
    let mut ids = Vec::new();
    for n in 0..10 {
        ids.push(app.account_id("alice", 100.0 + f64::from(n)).await);
    }
    let (stop, accepted) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let load = {
        let (client, address, ids) = (app.client.clone(), app.address.clone(), ids.clone());
        let (stop, accepted) = (stop.clone(), accepted.clone());
        tokio::spawn(async move {
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let route = if n.is_multiple_of(4) { "withdraw" } else { "deposit" };
                let body = json!({"accountId": ids[n % ids.len()], "amount": format!("{}.{:02}", n % 5 + 1, n % 100)});
                let sent = client.post(format!("{address}/api/commands/{route}")).json(&body).send().await;
                if sent.is_ok_and(|response| response.status().is_success()) {
                    accepted.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let accepted_more = |more: usize| {
        let (accepted, target) = (accepted.clone(), accepted.load(Ordering::Relaxed) + more);
        async move {
            eventually(&format!("{more} more commands accepted"), PATIENCE, || async {
                when(accepted.load(Ordering::Relaxed), |&accepted| accepted >= target)
            })
            .await
        }
    };
    // Commands before, and commands after, the flush.
    accepted_more(20).await;
    space.command(&redis::cmd("FLUSHALL")).expect("FLUSHALL");
    accepted_more(20).await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();

    assert_redis_equals_replay(&app.pool, &space).await;
}

#[sqlx::test(migrations = false)]
async fn two_instances_and_a_kill_9_of_the_leader_leave_redis_equal_to_a_replay(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    use crate::multi_instance::{Load, create_accounts, leader_of, wait_until_led_by};
    use crate::processes::{operator_client, spawn_server_with};

    let server = PrivateRedis::start().await;
    let space = RedisSpace::at(server.url());
    let redis_env = [("REDIS_URL", space.url.clone()), ("REDIS_KEY_PREFIX", space.prefix.clone())];
    let a = spawn_server_with(&db, "instance-a", &redis_env);
    let client = operator_client(&db, &a).await;
    let b = spawn_server_with(&db, "instance-b", &redis_env);
    let accounts = create_accounts(&client, &a, 20).await;

    let load = Load::start(&client, vec![a.address.clone(), b.address.clone()], accounts);
    load.accepted_more(50).await;
    let leader = leader_of(&client, &b, "redis_accounts").await;
    let (mut victim, survivor) = if leader == a.instance { (a, b) } else { (b, a) };
    victim.kill_9();
    load.accepted_more(50).await;
    load.stop().await;

    let pool = PgPool::connect_with(db).await.unwrap();
    assert_redis_equals_replay(&pool, &space).await;
    wait_until_led_by(&client, &survivor, &["redis_accounts"]).await;
}

#[sqlx::test(migrations = false)]
async fn a_store_built_from_another_databases_log_is_rebuilt_from_this_one(_: PgPoolOptions, db: PgConnectOptions) {
    let space = RedisSpace::shared();
    let app = spawn_with_redis(db, &space, "auto").await;
    let id = app.account_id("alice", 40.0).await;
    wait_for_redis(&app.pool, &space.accounts()).await;
    // As if the database were dropped and made again (a new log) while Redis kept its keys: a
    // checkpoint of another log, and an account this log never had.
    let stranger = Uuid::new_v4();
    let projection = space.key("projection");
    let mut connection = redis::Client::open(space.url.as_str()).unwrap().get_connection().unwrap();
    let stored: String = redis::cmd("HGET").arg(&projection).arg("checkpoint").query(&mut connection).unwrap();
    let (_, position) = stored.split_once('@').unwrap();
    let _: () = redis::cmd("HSET")
        .arg(space.key(&format!("account:{stranger}")))
        .arg("owner_id")
        .arg("mallory")
        .query(&mut connection)
        .unwrap();
    let account_key = space.key(&format!("account:{id}"));
    let _: () = redis::cmd("HSET").arg(&account_key).arg("balance").arg("999999").query(&mut connection).unwrap();
    let _: () = redis::cmd("HSET")
        .arg(&projection)
        .arg("checkpoint")
        .arg(format!("{}@{position}", Uuid::new_v4()))
        .query(&mut connection)
        .unwrap();
    // Never served: whichever store answers, the balance is this database's.
    let answer: Value = app.get(&format!("/api/queries/accounts/{id}")).await.json().await.unwrap();
    assert_eq!(answer["currentBalance"].as_f64(), Some(40.0), "{answer}");
    app.deposit(&id, 2).await;

    assert_redis_equals_replay(&app.pool, &space).await;
    let exists: i64 =
        redis::cmd("EXISTS").arg(space.key(&format!("account:{stranger}"))).query(&mut connection).unwrap();
    assert_eq!(exists, 0, "the other log's account is gone");
}

#[sqlx::test(migrations = false)]
async fn an_operators_rebuild_empties_redis_and_builds_it_again(_: PgPoolOptions, db: PgConnectOptions) {
    let space = RedisSpace::shared();
    let app = spawn_with_redis(db, &space, "auto").await;
    let id = app.account_id("alice", 70.0).await;
    wait_for_redis(&app.pool, &space.accounts()).await;
    // A key the projection never wrote, under its prefix: a rebuild starts from nothing.
    let leftover = space.key(&format!("account:{}", Uuid::new_v4()));
    let mut connection = redis::Client::open(space.url.as_str()).unwrap().get_connection().unwrap();
    let _: () = redis::cmd("HSET").arg(&leftover).arg("owner_id").arg("nobody").query(&mut connection).unwrap();

    let pulled = app
        .post_as_operator("/api/operations/rebuild-projection", &json!({"name": "redis_accounts", "reason": "a test"}))
        .await;
    assert_eq!(pulled.status(), StatusCode::OK);
    app.deposit(&id, 1).await;

    eventually("the rebuilt Redis projection running", PATIENCE, || async {
        when(redis_status(&app).await, |status| status["state"] == "running")
    })
    .await;
    assert_redis_equals_replay(&app.pool, &space).await;
    let exists: i64 = redis::cmd("EXISTS").arg(&leftover).query(&mut connection).unwrap();
    assert_eq!(exists, 0);
    let answer: Value = app.get(&format!("/api/queries/accounts/{id}")).await.json().await.unwrap();
    assert_eq!((answer["servedBy"].as_str(), answer["currentBalance"].as_f64()), (Some("redis"), Some(71.0)));
}

#[sqlx::test(migrations = false)]
async fn a_store_that_went_back_to_an_older_checkpoint_is_rebuilt_not_applied_twice(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let space = RedisSpace::shared();
    let app = spawn_with_redis(db, &space, "auto").await;
    let id = app.account_id("alice", 10.0).await;
    wait_for_redis(&app.pool, &space.accounts()).await;
    let mut connection = redis::Client::open(space.url.as_str()).unwrap().get_connection().unwrap();
    let projection = space.key("projection");
    let older: String = redis::cmd("HGET").arg(&projection).arg("checkpoint").query(&mut connection).unwrap();
    for _ in 0..3 {
        app.deposit(&id, 1).await;
    }
    app.wait_for_projection().await;
    wait_for_redis(&app.pool, &space.accounts()).await;
    // As a Redis restored from an old snapshot would be: the newer data, an older checkpoint.
    // Applying the deposits again from there would count them twice.
    let _: () = redis::cmd("HSET").arg(&projection).arg("checkpoint").arg(&older).query(&mut connection).unwrap();
    app.deposit(&id, 1).await;

    assert_redis_equals_replay(&app.pool, &space).await;
    let view = space.accounts().account(id.parse().unwrap()).await.unwrap().value.unwrap();
    assert_eq!((view.current_balance, view.transaction_count), (Decimal::from(14), 5));
}

#[sqlx::test(migrations = false)]
async fn a_fence_of_another_history_refuses_nothing_and_one_of_this_history_is_shown(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let space = RedisSpace::shared();
    let app = spawn_with_redis(db, &space, "auto").await;
    let id = app.account_id("alice", 30.0).await;
    wait_for_redis(&app.pool, &space.accounts()).await;
    // The history the store is built in: the log's, and the generation of its partition count.
    let log = eventstore::projection::store_history(&app.pool, "redis_accounts").await.unwrap().unwrap();
    let (projection, fence) = (space.key("projection"), space.key("fence"));
    // As if the database were made anew under a Redis that kept its keys: the store and its
    // fence are of another history, whose leaders reached epoch 99; this database's start at 1.
    let other = "1.1.1.00000000-0000-0000-0000-000000000001";
    space.command(redis::cmd("SET").arg(&fence).arg(format!("99@{other}"))).unwrap();
    space.command(redis::cmd("HSET").arg(&projection).arg("checkpoint").arg(format!("{other}@1:1@-"))).unwrap();
    app.deposit(&id, 1).await;
    assert_redis_equals_replay(&app.pool, &space).await;
    // Served once the rebuild is marked done, which may be a moment after its content is whole.
    let answer = eventually("Redis serving the rebuilt store", PATIENCE, || async {
        let answer: Value = app.get(&format!("/api/queries/accounts/{id}")).await.json().await.unwrap();
        when(answer, |answer| answer["servedBy"] == "redis")
    })
    .await;
    assert_eq!(answer["currentBalance"].as_f64(), Some(31.0), "{answer}");

    // A fence of this history at an epoch no leader of it has reached refuses the clear: the
    // store is not rebuilt behind a later leader's back, and the status says so.
    space.command(redis::cmd("SET").arg(&fence).arg(format!("999999@{log}"))).unwrap();
    space.command(redis::cmd("HSET").arg(&projection).arg("checkpoint").arg(format!("{other}@1:1@-"))).unwrap();
    let status = eventually("the refusal on the status", PATIENCE, || async {
        when(redis_status(&app).await, |status| {
            status["lastError"].as_str().is_some_and(|error| error.contains("fence refuses"))
        })
    })
    .await;
    let answer: Value = app.get(&format!("/api/queries/accounts/{id}")).await.json().await.unwrap();
    assert_eq!(answer["servedBy"].as_str(), Some("postgres"), "{answer}\n{status}");
}

#[sqlx::test(migrations = false)]
async fn a_redis_that_may_evict_keys_is_not_read_and_a_lost_key_is_rebuilt(_: PgPoolOptions, db: PgConnectOptions) {
    let server = PrivateRedis::start().await;
    let space = RedisSpace::at(server.url());
    let mut connection = redis::Client::open(space.url.as_str()).unwrap().get_connection().unwrap();
    // A memory limit with a policy that evicts any key under pressure.
    let _: () = redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg("100mb").query(&mut connection).unwrap();
    let _: () =
        redis::cmd("CONFIG").arg("SET").arg("maxmemory-policy").arg("allkeys-lru").query(&mut connection).unwrap();
    let app = spawn_with_redis(db.clone(), &space, "auto").await;
    let id = app.account_id("alice", 12.0).await;
    wait_for_redis(&app.pool, &space.accounts()).await;
    // Built and current, but never read: an evicted balance would be served as missing.
    let answer: Value = app.get(&format!("/api/queries/accounts/{id}")).await.json().await.unwrap();
    assert_eq!(answer["servedBy"].as_str(), Some("postgres"), "{answer}");
    let status = eventually("the risk on the status", PATIENCE, || async {
        when(redis_status(&app).await, |status| {
            status["lastError"].as_str().is_some_and(|error| error.contains("maxmemory-policy allkeys-lru"))
        })
    })
    .await;
    assert_eq!(status["state"], "running", "{status}");
    drop(app);

    // With noeviction, read again (by a server that starts after the change: the setting is
    // looked at once a minute).
    let _: () =
        redis::cmd("CONFIG").arg("SET").arg("maxmemory-policy").arg("noeviction").query(&mut connection).unwrap();
    let app = spawn_with_redis(db, &space, "auto").await;
    eventually("Redis read", PATIENCE, || async {
        let answer: Value = app.get(&format!("/api/queries/accounts/{id}")).await.json().await.unwrap();
        when(answer, |answer| answer["servedBy"] == "redis")
    })
    .await;
    // A key the store's checkpoint says it holds, gone (as an eviction would leave it): the next
    // change to that account rebuilds the store, and says why.
    let _: () = redis::cmd("DEL").arg(space.key(&format!("account:{id}"))).query(&mut connection).unwrap();
    app.deposit(&id, 1).await;
    assert_redis_equals_replay(&app.pool, &space).await;
    let status = redis_status(&app).await;
    assert!(status["rebuildReason"].as_str().is_some_and(|why| why.contains("lost data")), "{status}");
}

#[sqlx::test(migrations = false)]
async fn a_new_partition_count_builds_the_store_anew_in_its_partitions_and_drops_the_old(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    // Given: the store built whole, by an instance that runs one partition.
    let space = RedisSpace::shared();
    let whole = spawn_with_redis(db.clone(), &space, "redis").await;
    let mut ids = Vec::new();
    for balance in [10.0, 20.0, 30.0, 40.0, 50.0, 60.0] {
        let id = whole.account_id("alice", balance).await;
        whole.deposit(&id, "0.25").await;
        ids.push(id);
    }
    wait_for_redis(&whole.pool, &space.accounts()).await;
    let mut connection = redis::Client::open(space.url.as_str()).unwrap().get_connection().unwrap();
    let exists = |connection: &mut redis::Connection, key: &str| -> i64 {
        redis::cmd("EXISTS").arg(key).query(connection).unwrap()
    };
    assert_eq!(exists(&mut connection, &space.key("balances")), 1);

    // When: an instance starts with three partitions, allowed to change the count.
    let split = RedisSpace { url: space.url.clone(), prefix: space.prefix.clone(), partitions: 3 };
    let redis = split.settings();
    let three = spawn_app_with(db, move |settings| {
        settings.redis = Some(redis);
        settings.read_store = "redis".parse().unwrap();
        settings.projection_partitions = 3;
        settings.projection_partitions_rebuild = true;
    })
    .await;
    three.deposit(&ids[0], "1.00").await;

    // Then: the three partitions hold what the log folds to, and the whole store's keys are gone.
    let store = split.accounts();
    wait_for_redis(&three.pool, &store).await;
    let (expected, _) = replay(&three.pool).await;
    for (id, summary) in &expected {
        let view = store.account(*id).await.unwrap().value.unwrap_or_else(|| panic!("Redis lacks account {id}"));
        assert_eq!((view.current_balance, view.version), (summary.current_balance, summary.version));
    }
    let ranked = store.highest(Decimal::ZERO, None, 100).await.unwrap();
    assert_eq!(ranked.value.len(), expected.len());
    assert_eq!(ranked.partitions.len(), 3, "every partition was read");
    let whole_keys: Vec<String> = ["projection", "balances", "fence", &format!("account:{}", ids[0])]
        .iter()
        .map(|name| space.key(name))
        .collect();
    eventually("the whole store's keys removed", PATIENCE, || async {
        let mut connection = redis::Client::open(space.url.as_str()).unwrap().get_connection().unwrap();
        let left: Vec<&String> = whole_keys.iter().filter(|key| exists(&mut connection, key) > 0).collect();
        when(left.len(), |left| *left == 0).map_err(|_| format!("{left:?}"))
    })
    .await;
    // Served from the split store (a read that takes over 250 ms goes to Postgres: asked again).
    let answer = eventually("the account served from the split store", PATIENCE, || async {
        let answer: Value = three.get(&format!("/api/queries/accounts/{}", ids[0])).await.json().await.unwrap();
        when(answer, |answer| answer["servedBy"] == "redis")
    })
    .await;
    assert_eq!(answer["currentBalance"].as_f64(), Some(11.25), "{answer}");
}

#[sqlx::test(migrations = false)]
async fn what_an_earlier_adoption_of_the_same_count_left_is_of_another_history(_: PgPoolOptions, db: PgConnectOptions) {
    // Given: the store built whole, then the count changed to two and back to one, while its
    // first build's keys stayed (as if their removal had failed), with a fence of an epoch the
    // new leaders have not reached.
    let space = RedisSpace::shared();
    let first = spawn_with_redis(db.clone(), &space, "redis").await;
    let id = first.account_id("alice", 40.0).await;
    wait_for_redis(&first.pool, &space.accounts()).await;
    let earlier = eventstore::projection::store_history(&first.pool, "redis_accounts").await.unwrap().unwrap();
    let mut connection = redis::Client::open(space.url.as_str()).unwrap().get_connection().unwrap();
    let stale_checkpoint: String =
        redis::cmd("HGET").arg(space.key("projection")).arg("checkpoint").query(&mut connection).unwrap();
    first.stop();
    let count = |partitions: u32| {
        let redis = space.settings();
        move |settings: &mut server::configuration::Settings| {
            settings.redis = Some(redis);
            settings.read_store = "redis".parse().unwrap();
            settings.projection_partitions = partitions;
            settings.projection_partitions_rebuild = true;
        }
    };
    let two = spawn_app_with(db.clone(), count(2)).await;
    eventually("the whole store's keys removed", PATIENCE, || async {
        let mut connection = redis::Client::open(space.url.as_str()).unwrap().get_connection().unwrap();
        let left: i64 = redis::cmd("EXISTS").arg(space.key("projection")).query(&mut connection).unwrap();
        when(left, |left| *left == 0)
    })
    .await;
    two.stop();
    space.command(redis::cmd("HSET").arg(space.key("projection")).arg("checkpoint").arg(&stale_checkpoint)).unwrap();
    space.command(redis::cmd("SET").arg(space.key("fence")).arg(format!("99@{earlier}"))).unwrap();

    // When: an instance adopts one partition again and the account changes.
    let again = spawn_app_with(db, count(1)).await;
    again.deposit(&id, "2.50").await;

    // Then: the leftovers are not taken for the new build's: it is built from the first event,
    // not stuck behind the old fence, and served.
    assert_ne!(eventstore::projection::store_history(&again.pool, "redis_accounts").await.unwrap().unwrap(), earlier);
    let answer = eventually("the account served from the new build", PATIENCE, || async {
        let answer: Value = again.get(&format!("/api/queries/accounts/{id}")).await.json().await.unwrap();
        when(answer, |answer| answer["servedBy"] == "redis" && answer["currentBalance"].as_f64() == Some(42.5))
    })
    .await;
    assert_eq!(answer["transactionCount"], 2, "{answer}");
    assert_redis_equals_replay(&again.pool, &space).await;
}

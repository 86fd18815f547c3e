//! The database given another history of its log under a Redis that kept its keys — restored
//! from a dump, or from a base backup — as an operator does after a bad deploy: Redis never
//! serves money the log no longer has, and is rebuilt from the history the database has.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, Executor, PgConnection};
use testkit::{PATIENCE, eventually, when};

use crate::private_postgres::PrivatePostgres;
use crate::processes::{OPERATOR, ServerProcess, database_url, operator_client, spawn_server_at};
use crate::redis_store::RedisSpace;

fn redis_env(space: &RedisSpace) -> [(&'static str, String); 2] {
    [("REDIS_URL", space.url.clone()), ("REDIS_KEY_PREFIX", space.prefix.clone())]
}

/// The account as the server answers it (without waiting): its balance and which store said so.
async fn balance(client: &reqwest::Client, server: &ServerProcess, id: &str) -> (f64, String) {
    let read: Value =
        client.get(format!("{}/api/queries/accounts/{id}", server.address)).send().await.unwrap().json().await.unwrap();
    (read["currentBalance"].as_f64().unwrap_or(f64::NAN), read["servedBy"].as_str().unwrap_or_default().to_owned())
}

async fn deposit(client: &reqwest::Client, server: &ServerProcess, id: &str, amount: i64) -> Value {
    let response = client
        .post(format!("{}/api/commands/deposit", server.address))
        .json(&json!({"accountId": id, "amount": amount}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "deposit: {}", response.status());
    response.json().await.unwrap()
}

/// The sequence of the issue that found it, on the database at `url`, `restore` doing the
/// operator's part between the two servers: an account of 100, a backup, five deposits of 1,000
/// that Redis serves (5,100), the server stopped, the backup restored, a server started again.
async fn restored_under_redis(url: &str, backup: impl FnOnce() -> PathBuf, restore: impl AsyncFnOnce(&Path)) {
    let space = RedisSpace::shared();
    let mut before = spawn_server_at(url, "before", &redis_env(&space));
    let database = PgConnectOptions::from_str(url).unwrap();
    let client = operator_client(&database, &before).await;
    let id = before.create_account(&client, OPERATOR, 100).await["accountId"].as_str().unwrap().to_owned();
    // The backup holds the account in the read model too (the projection applies the creation
    // a moment after the command is answered): the restored server answers it at once.
    eventually("the read model holding the account", PATIENCE, || async {
        when(balance(&client, &before, &id).await, |(balance, _)| *balance == 100.0)
    })
    .await;
    let backup = backup();
    for _ in 0..5 {
        deposit(&client, &before, &id, 1000).await;
    }
    eventually("Redis serving the 5,100", PATIENCE, || async {
        when(balance(&client, &before, &id).await, |(balance, by)| *balance == 5100.0 && by == "redis")
    })
    .await;
    assert!(before.terminate(PATIENCE).is_some_and(|status| status.success()), "the server stops");

    restore(&backup).await;
    let after = spawn_server_at(url, "after", &redis_env(&space));
    // At once, whichever store answers: the restored log's 100, never the 5,100 it no longer has.
    assert_eq!(balance(&client, &after, &id).await.0, 100.0);
    // A new deposit, read with its own token: 101, never 5,101.
    let accepted = deposit(&client, &after, &id, 1).await;
    let token = accepted["position"].as_str().unwrap();
    let read: Value = eventually("the read model past the deposit", PATIENCE, || async {
        let read: Value = client
            .get(format!("{}/api/queries/accounts/{id}?after={token}", after.address))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        when(read, |read| read["stale"] == json!(false))
    })
    .await;
    assert_eq!(read["currentBalance"].as_f64(), Some(101.0), "{read}");
    // Redis, rebuilt from the history the database has, serves again; the status says why.
    eventually("Redis serving the restored history", PATIENCE, || async {
        when(balance(&client, &after, &id).await, |(balance, by)| *balance == 101.0 && by == "redis")
    })
    .await;
    let health = after.health(&client).await;
    let redis = health["projections"].as_array().unwrap().iter().find(|p| p["name"] == "redis_accounts").unwrap();
    let why = redis["rebuildReason"].as_str().unwrap_or_default();
    assert!(why.contains("history"), "rebuilt because {why:?}: {health}");
}

#[sqlx::test(migrations = false)]
async fn after_a_dump_is_restored_redis_serves_no_money_the_log_no_longer_has(_: PgPoolOptions, db: PgConnectOptions) {
    let url = database_url(&db);
    let name = db.get_database().unwrap().to_owned();
    let dump = std::env::temp_dir().join(format!("cqrs-bank-test-{name}.dump"));
    restored_under_redis(
        &url,
        || {
            run("pg_dump", &["--format=custom", &format!("--file={}", dump.display()), &url]);
            dump.clone()
        },
        async |dump: &Path| {
            // Dropped and made again, then restored: another database, with the dump's log.
            let mut admin = PgConnection::connect_with(&db.clone().database("postgres")).await.unwrap();
            admin.execute(format!(r#"DROP DATABASE "{name}" WITH (FORCE)"#).as_str()).await.unwrap();
            admin.execute(format!(r#"CREATE DATABASE "{name}""#).as_str()).await.unwrap();
            run("pg_restore", &[&format!("--dbname={url}"), &dump.display().to_string()]);
        },
    )
    .await;
    let _ = std::fs::remove_file(dump);
}

#[sqlx::test(migrations = false)]
async fn after_a_base_backup_is_restored_redis_serves_no_money_the_log_no_longer_has(
    _: PgPoolOptions,
    _db: PgConnectOptions,
) {
    // The same cluster, timeline, database and first event: only the event at Redis's
    // checkpoint, which the restored log does not have, tells the histories apart.
    let cluster = PrivatePostgres::start().await;
    let url = cluster.url("bank");
    restored_under_redis(&url, || cluster.base_backup(), async |backup: &Path| cluster.restore(backup).await).await;
}

/// Runs a PostgreSQL client program; panics with its output if it fails.
fn run(program: &str, args: &[&str]) {
    let output = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program} runs: {e}"));
    assert!(output.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

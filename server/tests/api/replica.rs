//! Queries from a hot standby fed by streaming replication: tokens honoured across it, and the
//! primary answering — never a 5xx — while it is down. Needs a private primary and standby
//! (`scripts/replica-pair`), started once, by the one test here.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use serde_json::{Value, json};

use crate::private_postgres::ReplicaPair;
use crate::processes::{OPERATOR, ServerProcess, spawn_server_at};

const DATABASE: &str = "bank";

/// The server's metric `name`, if it reports it.
async fn metric(client: &reqwest::Client, server: &ServerProcess, name: &str) -> Option<f64> {
    let text = client.get(format!("{}/metrics", server.address)).send().await.ok()?.text().await.ok()?;
    text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

async fn wait_until_replica_serving(client: &reqwest::Client, server: &ServerProcess, serving: bool) {
    let wanted = if serving { 1.0 } else { 0.0 };
    for _ in 0..300 {
        if metric(client, server, "cqrs_bank_replica_serving").await == Some(wanted) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the replica's serving metric never became {wanted}");
}

async fn deposit(client: &reqwest::Client, server: &ServerProcess, account: &str, amount: i64) -> Value {
    let response = client
        .post(format!("{}/api/commands/deposit", server.address))
        .json(&json!({"accountId": account, "amount": amount}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn account_after(client: &reqwest::Client, server: &ServerProcess, account: &str, token: &str) -> (u16, Value) {
    let response = client
        .get(format!("{}/api/queries/accounts/{account}?after={token}", server.address))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn balance(account: &Value) -> Decimal {
    account["currentBalance"].to_string().trim_matches('"').parse().unwrap()
}

#[tokio::test]
async fn queries_read_the_replica_with_tokens_honoured_and_fall_back_to_the_primary_while_it_is_down() {
    let pair = ReplicaPair::start().await;
    let server = spawn_server_at(
        &pair.primary_url(DATABASE),
        "replica-reader",
        &[("DATABASE_READ_URL", pair.standby_url(DATABASE)), ("DATABASE_READ_MAX_LAG_SECONDS", "5".to_owned())],
    );
    let client = crate::processes::operator_client(&pair.primary_url(DATABASE).parse().unwrap(), &server).await;
    wait_until_replica_serving(&client, &server, true).await;
    assert!(metric(&client, &server, "cqrs_bank_replica_lag_bytes").await.is_some());
    assert!(metric(&client, &server, "cqrs_bank_replica_lag_seconds").await.is_some());

    // Read your writes across the replica: every read with the command's token sees the command.
    let created = server.create_account(&client, OPERATOR, 100).await;
    let account = created["accountId"].as_str().unwrap().to_owned();
    let mut expected = Decimal::from(100);
    let mut from_replica = 0;
    for n in 1..=30 {
        let accepted = deposit(&client, &server, &account, n).await;
        expected += Decimal::from(n);
        let (status, view) = account_after(&client, &server, &account, accepted["position"].as_str().unwrap()).await;
        assert_eq!(status, 200, "{view}");
        assert_eq!(view["stale"], false, "{view}");
        assert_eq!(balance(&view), expected, "{view}");
        if view["servedBy"] == "postgres-replica" {
            from_replica += 1;
        }
    }
    assert!(from_replica >= 25, "only {from_replica} of 30 reads came from the replica");

    // The replica stops and starts again under load: every answer 2xx, from the primary while
    // it is down, from the replica again once it is back.
    let stop = Arc::new(AtomicBool::new(false));
    let (answered, failed, by_primary) =
        (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (client, address, account) = (client.clone(), server.address.clone(), account.clone());
            let (stop, answered, failed, by_primary) =
                (stop.clone(), answered.clone(), failed.clone(), by_primary.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let response = client
                        .get(format!("{address}/api/queries/accounts/{account}"))
                        .timeout(Duration::from_secs(10))
                        .send()
                        .await;
                    match response {
                        Ok(response) if response.status().is_success() => {
                            let view: Value = response.json().await.unwrap();
                            answered.fetch_add(1, Ordering::Relaxed);
                            if view["servedBy"] == "postgres" {
                                by_primary.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Ok(response) => {
                            eprintln!("{} {}", response.status(), response.text().await.unwrap_or_default());
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(error) => {
                            eprintln!("{error}");
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    pair.stop_standby();
    let stopped = Instant::now();
    // Commands go on, and their tokens are honoured by the primary meanwhile.
    for n in 1..=5 {
        let accepted = deposit(&client, &server, &account, n).await;
        expected += Decimal::from(n);
        let (status, view) = account_after(&client, &server, &account, accepted["position"].as_str().unwrap()).await;
        assert_eq!((status, &view["stale"]), (200, &json!(false)), "{view}");
        assert_eq!(balance(&view), expected, "{view}");
    }
    wait_until_replica_serving(&client, &server, false).await;
    tokio::time::sleep(Duration::from_millis(1500).saturating_sub(stopped.elapsed())).await;
    pair.start_standby();
    wait_until_replica_serving(&client, &server, true).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for worker in load {
        worker.await.unwrap();
    }
    let (answered, failed, by_primary) =
        (answered.load(Ordering::Relaxed), failed.load(Ordering::Relaxed), by_primary.load(Ordering::Relaxed));
    assert_eq!(failed, 0, "{failed} queries failed ({answered} answered)");
    assert!(by_primary > 0, "no query was answered by the primary while the replica was down");
    assert!(answered > by_primary, "no query was answered by the replica");

    // Back on the replica, with what was written while it was down.
    let accepted = deposit(&client, &server, &account, 1).await;
    expected += Decimal::ONE;
    let (status, view) = account_after(&client, &server, &account, accepted["position"].as_str().unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(balance(&view), expected, "{view}");
    assert_eq!(view["servedBy"], "postgres-replica", "{view}");
    drop(server);
}

//! Queries from a hot standby fed by streaming replication: tokens honoured across it, and the
//! primary answering — never a 5xx — while it is down. Needs a private primary and standby
//! (`scripts/replica-pair`), started once, by the one test here.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use rust_decimal::Decimal;
use serde_json::{Value, json};
use testkit::{PATIENCE, eventually, when};

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
    eventually(&format!("the replica's serving metric at {wanted}"), PATIENCE, || async {
        when(metric(client, server, "cqrs_bank_replica_serving").await, |&seen| seen == Some(wanted))
    })
    .await;
}

/// Queries of one account from four clients, until stopped: how many were answered, by which
/// store, and how many failed.
struct Queries {
    stop: Arc<AtomicBool>,
    by_replica: Arc<AtomicUsize>,
    by_primary: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Queries {
    fn start(client: &reqwest::Client, server: &ServerProcess, account: &str) -> Queries {
        let stop = Arc::new(AtomicBool::new(false));
        let (by_replica, by_primary, failed) =
            (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let workers = (0..4)
            .map(|_| {
                let (client, url) = (client.clone(), format!("{}/api/queries/accounts/{account}", server.address));
                let (stop, by_replica, by_primary, failed) =
                    (stop.clone(), by_replica.clone(), by_primary.clone(), failed.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        match client.get(&url).timeout(Duration::from_secs(10)).send().await {
                            Ok(response) if response.status().is_success() => {
                                let view: Value = response.json().await.unwrap();
                                let by = if view["servedBy"] == "postgres" { &by_primary } else { &by_replica };
                                by.fetch_add(1, Ordering::Relaxed);
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
        Queries { stop, by_replica, by_primary, failed, workers }
    }

    /// Waits until `more` queries beyond those so far have been answered by the store `counted`
    /// counts.
    async fn answered_more(&self, store: &str, more: usize) {
        let counted = if store == "replica" { &self.by_replica } else { &self.by_primary };
        let target = counted.load(Ordering::Relaxed) + more;
        eventually(&format!("{more} more queries answered by the {store}"), PATIENCE, || async {
            when(counted.load(Ordering::Relaxed), |&answered| answered >= target)
        })
        .await;
    }

    /// Stops the clients; how many queries failed.
    async fn stop(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        for worker in self.workers {
            worker.await.unwrap();
        }
        self.failed.load(Ordering::Relaxed)
    }
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

/// The account as a read with `token` answers it once it answers fresh (200, not stale). A
/// stale answer is the server's bound (2 s) running out first, as a busy machine may make it:
/// the read is made again.
async fn account_after(client: &reqwest::Client, server: &ServerProcess, account: &str, token: &str) -> Value {
    eventually(&format!("a fresh read of the account past {token}"), PATIENCE, || async {
        let response = client
            .get(format!("{}/api/queries/accounts/{account}?after={token}", server.address))
            .timeout(PATIENCE)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let view: Value = response.json().await.unwrap_or(Value::Null);
        // 503: the read model does not know the account yet and has not reached the token.
        assert!(matches!(status, 200 | 503), "{status}: {view}");
        when(view, |view| status == 200 && view["stale"] == false)
    })
    .await
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
        let view = account_after(&client, &server, &account, accepted["position"].as_str().unwrap()).await;
        assert_eq!(balance(&view), expected, "{view}");
        if view["servedBy"] == "postgres-replica" {
            from_replica += 1;
        }
    }
    // And the replica serves them, unless it is more than a moment behind (then the primary
    // answers), as a busy machine may make it for a while: then more such reads show it.
    if from_replica == 0 {
        let kept = std::cell::Cell::new(expected);
        eventually("a read with a token served by the replica", PATIENCE, || async {
            let accepted = deposit(&client, &server, &account, 1).await;
            kept.set(kept.get() + Decimal::ONE);
            let view = account_after(&client, &server, &account, accepted["position"].as_str().unwrap()).await;
            assert_eq!(balance(&view), kept.get(), "{view}");
            when(view, |view| view["servedBy"] == "postgres-replica")
        })
        .await;
        expected = kept.get();
    }

    // The replica stops and starts again under load: every answer 2xx, from the primary while
    // it is down, from the replica again once it is back.
    let load = Queries::start(&client, &server, &account);
    load.answered_more("replica", 20).await;
    pair.stop_standby();
    // Commands go on, and their tokens are honoured by the primary meanwhile.
    for n in 1..=5 {
        let accepted = deposit(&client, &server, &account, n).await;
        expected += Decimal::from(n);
        let view = account_after(&client, &server, &account, accepted["position"].as_str().unwrap()).await;
        assert_eq!(balance(&view), expected, "{view}");
    }
    wait_until_replica_serving(&client, &server, false).await;
    load.answered_more("primary", 20).await;
    pair.start_standby();
    wait_until_replica_serving(&client, &server, true).await;
    load.answered_more("replica", 20).await;
    let failed = load.stop().await;
    assert_eq!(failed, 0, "{failed} queries failed");

    // Back on the replica, with what was written while it was down.
    let accepted = deposit(&client, &server, &account, 1).await;
    expected += Decimal::ONE;
    let view = account_after(&client, &server, &account, accepted["position"].as_str().unwrap()).await;
    assert_eq!(balance(&view), expected, "{view}");
    eventually("the replica serving the account as it is now", PATIENCE, || async {
        let view: Value = client
            .get(format!("{}/api/queries/accounts/{account}", server.address))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        when(view, |view| view["servedBy"] == "postgres-replica" && balance(view) == expected)
    })
    .await;
    drop(server);
}

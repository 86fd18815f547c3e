//! Projections split into partitions by stream, led by several instances at once: balanced,
//! taken over when an instance dies, every event applied exactly once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::multi_instance::{create_accounts, start_load};
use crate::processes::{ServerProcess, operator_client, spawn_server_with};
use crate::read_model::assert_read_model_equals_replay;

const PARTITIONS: u32 = 4;
const SPLIT: [&str; 2] = ["account_summary", "account_ledger"];

fn partition_names() -> Vec<String> {
    SPLIT.iter().flat_map(|name| (0..PARTITIONS).map(move |k| format!("{name}/{k}-of-{PARTITIONS}"))).collect()
}

/// Who leads each partition now, as the health answer says.
fn leaders(health: &Value) -> BTreeMap<String, String> {
    health["projections"]
        .as_array()
        .into_iter()
        .flatten()
        // The status names an owner only while its lease is live.
        .filter(|p| p["name"].as_str().is_some_and(|name| name.contains("-of-")))
        .filter_map(|p| Some((p["name"].as_str()?.to_owned(), p["ownerInstance"].as_str()?.to_owned())))
        .collect()
}

/// Waits until `done` holds of the health answer, or panics after `within`.
async fn wait_for_health(
    client: &reqwest::Client,
    server: &ServerProcess,
    within: Duration,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let started = Instant::now();
    let mut health = Value::Null;
    while started.elapsed() < within {
        health = server.health(client).await;
        if done(&health) {
            return health;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("not {what} within {within:?}: {health}");
}

#[sqlx::test(migrations = false)]
async fn four_partitions_on_two_instances_are_balanced_taken_over_after_a_kill_9_and_apply_every_event_once(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let split = [("PROJECTION_PARTITIONS", PARTITIONS.to_string())];
    let a = spawn_server_with(&db, "instance-a", &split);
    let client = operator_client(&db, &a).await;
    let accounts = create_accounts(&client, &a, 24).await;
    let b = spawn_server_with(&db, "instance-b", &split);

    let stop = Arc::new(AtomicBool::new(false));
    let load = start_load(&client, vec![a.address.clone(), b.address.clone()], accounts.clone(), stop.clone());

    // B joined after A led every partition: A lets half of them go, B takes them.
    let names = partition_names();
    let health = wait_for_health(&client, &a, Duration::from_secs(20), "balanced", |health| {
        let led = leaders(health);
        let of = |instance: &str| led.values().filter(|owner| *owner == instance).count();
        names.iter().all(|name| led.contains_key(name)) && of(&a.instance) == 4 && of(&b.instance) == 4
    })
    .await;
    for name in SPLIT {
        let led = leaders(&health);
        let by_a = (0..PARTITIONS).filter(|k| led[&format!("{name}/{k}-of-{PARTITIONS}")] == a.instance).count();
        assert_eq!(by_a, 2, "{name}: two partitions each: {led:?}");
    }

    // B dies under load: A leads every partition again within seconds.
    let (mut victim, survivor) = (b, a);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    victim.kill_9();
    let killed = Instant::now();
    wait_for_health(&client, &survivor, Duration::from_secs(15), "all led by the survivor", |health| {
        let led = leaders(health);
        names.iter().all(|name| led.get(name) == Some(&survivor.instance))
    })
    .await;
    let taken_over = killed.elapsed();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::Relaxed);
    let accepted = load.await.unwrap();
    assert!(accepted > 50, "only {accepted} commands got through");
    assert!(taken_over < Duration::from_secs(10), "took {taken_over:?} to lead every partition again");

    wait_for_health(&client, &survivor, Duration::from_secs(30), "caught up", |health| {
        let all = health["projections"].as_array().cloned().unwrap_or_default();
        names.iter().all(|name| all.iter().any(|p| p["name"] == name.as_str() && p["lagEvents"] == 0))
    })
    .await;
    let pool = PgPool::connect_with(db).await.unwrap();
    assert_read_model_equals_replay(&pool).await;

    // Exactly once, counted: the partitions of each projection applied, between them, every
    // account event once — not one more after the kill, not one less.
    let account_events: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = ANY($1)")
        .bind(app::domain::AccountEvent::TYPES)
        .fetch_one(&pool)
        .await
        .unwrap();
    for name in SPLIT {
        let applied: i64 = sqlx::query_scalar(
            "SELECT sum(events_applied)::bigint FROM projection_checkpoints WHERE starts_with(projection_name, $1 || '/')",
        )
        .bind(name)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(applied, account_events, "{name}'s partitions applied {applied} of {account_events} events");
        let unsplit: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM projection_checkpoints WHERE projection_name = $1)")
                .bind(name)
                .fetch_one(&pool)
                .await
                .unwrap();
        assert!(!unsplit, "{name} is not run unsplit beside its partitions");
    }
}

#[sqlx::test(migrations = false)]
async fn a_new_partition_count_rebuilds_the_tables_and_an_instance_of_the_old_count_applies_nothing(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    // Unsplit first, with money moved.
    let whole = spawn_server_with(&db, "whole", &[]);
    let client = operator_client(&db, &whole).await;
    let accounts = create_accounts(&client, &whole, 6).await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = start_load(&client, vec![whole.address.clone()], accounts, stop.clone());
    tokio::time::sleep(Duration::from_millis(800)).await;

    // An instance with three partitions starts: the tables are rebuilt from the first event,
    // and the unsplit instance, still running, stops applying.
    let split = spawn_server_with(
        &db,
        "split",
        &[("PROJECTION_PARTITIONS", "3".to_owned()), ("PROJECTION_PARTITIONS_REBUILD", "yes".to_owned())],
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    let names: Vec<String> = SPLIT.iter().flat_map(|name| (0..3).map(move |k| format!("{name}/{k}-of-3"))).collect();
    let health = wait_for_health(&client, &split, Duration::from_secs(30), "caught up", |health| {
        let all = health["projections"].as_array().cloned().unwrap_or_default();
        let led = leaders(health);
        names.iter().all(|name| {
            led.get(name) == Some(&"split".to_owned())
                && all.iter().any(|p| p["name"] == name.as_str() && p["lagEvents"] == 0)
        })
    })
    .await;
    assert!(
        health["projections"].as_array().unwrap().iter().all(|p| p["name"] != "account_summary"),
        "the unsplit checkpoint is gone: {health}"
    );
    let pool = PgPool::connect_with(db).await.unwrap();
    assert_read_model_equals_replay(&pool).await;
    drop(whole);
}

#[sqlx::test(migrations = false)]
async fn partitions_a_member_never_leads_are_taken_by_another_after_three_leases(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    // A member that says it runs the projection but never leads (wedged, out of connections):
    // its share must not stay unled.
    let pool = PgPool::connect_with(db.clone()).await.unwrap();
    let ghost = {
        let pool = pool.clone();
        tokio::spawn(async move {
            loop {
                let _ = sqlx::query(
                    "INSERT INTO projection_members (projection_name, instance, partitions)
                     SELECT name, 'ghost', 4 FROM unnest($1::text[]) AS name
                     ON CONFLICT (projection_name, instance) DO UPDATE SET seen_at = clock_timestamp()",
                )
                .bind(&SPLIT[..])
                .execute(&pool)
                .await;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };
    let a = spawn_server_with(&db, "instance-a", &[("PROJECTION_PARTITIONS", PARTITIONS.to_string())]);
    let client = operator_client(&db, &a).await;
    let names = partition_names();
    // At first A leads its share only: two of each projection's four.
    wait_for_health(&client, &a, Duration::from_secs(10), "half led", |health| leaders(health).len() == 4).await;
    // Then, the ghost's partitions having gone unled for three leases, all of them.
    let health = wait_for_health(&client, &a, Duration::from_secs(30), "all led", |health| {
        let led = leaders(health);
        names.iter().all(|name| led.get(name) == Some(&a.instance))
    })
    .await;
    ghost.abort();
    assert_eq!(leaders(&health).len(), 8, "{health}");
}

//! Projections split into partitions by stream, led by several instances at once: balanced,
//! taken over when an instance dies, every event applied exactly once.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use testkit::{PATIENCE, eventually, when};

use crate::multi_instance::{Load, create_accounts};
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

/// Waits until `done` holds of the health answer.
async fn wait_for_health(
    client: &reqwest::Client,
    server: &ServerProcess,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    eventually(what, PATIENCE, || async { when(server.health(client).await, &done) }).await
}

/// Whether every partition's checkpoint says it is caught up.
fn caught_up(health: &Value, names: &[String]) -> bool {
    let all = health["projections"].as_array().cloned().unwrap_or_default();
    names.iter().all(|name| all.iter().any(|p| p["name"] == name.as_str() && p["lagEvents"] == 0))
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

    let load = Load::start(&client, vec![a.address.clone(), b.address.clone()], accounts.clone());

    // B joined after A led every partition: B asks for partitions, A lets half of them go, B
    // takes them.
    let names = partition_names();
    let health = wait_for_health(&client, &a, "balanced", |health| {
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

    // B dies under load: A leads every partition again, and the load goes on.
    load.accepted_more(30).await;
    let (mut victim, survivor) = (b, a);
    victim.kill_9();
    wait_for_health(&client, &survivor, "all led by the survivor", |health| {
        let led = leaders(health);
        names.iter().all(|name| led.get(name) == Some(&survivor.instance))
    })
    .await;
    load.accepted_more(30).await;
    load.stop().await;

    wait_for_health(&client, &survivor, "caught up", |health| caught_up(health, &names)).await;
    let pool = PgPool::connect_with(db).await.unwrap();
    assert_read_model_equals_replay(&pool).await;

    // Exactly once, counted: the partitions of each projection applied, between them, every
    // account event once — not one more after the kill, not one less.
    let account_events: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = ANY($1)")
        .bind(bank::domain::AccountEvent::TYPES)
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
    let load = Load::start(&client, vec![whole.address.clone()], accounts);
    load.accepted_more(30).await;

    // An instance with three partitions starts: the tables are rebuilt from the first event,
    // and the unsplit instance, still running, stops applying.
    let split = spawn_server_with(
        &db,
        "split",
        &[("PROJECTION_PARTITIONS", "3".to_owned()), ("PROJECTION_PARTITIONS_REBUILD", "yes".to_owned())],
    );
    let names: Vec<String> = SPLIT.iter().flat_map(|name| (0..3).map(move |k| format!("{name}/{k}-of-3"))).collect();
    wait_for_health(&client, &split, "every partition led by the split instance", |health| {
        let led = leaders(health);
        names.iter().all(|name| led.get(name) == Some(&"split".to_owned()))
    })
    .await;
    load.accepted_more(30).await;
    load.stop().await;
    let health = wait_for_health(&client, &split, "caught up", |health| caught_up(health, &names)).await;
    assert!(
        health["projections"].as_array().unwrap().iter().all(|p| p["name"] != "account_summary"),
        "the unsplit checkpoint is gone: {health}"
    );
    let pool = PgPool::connect_with(db).await.unwrap();
    assert_read_model_equals_replay(&pool).await;
    drop(whole);
}

#[sqlx::test(migrations = false)]
async fn partitions_a_member_never_leads_are_taken_by_another_after_three_leases_and_kept(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    // A member that says it runs the projection but never leads (wedged, out of connections):
    // its share must not stay unled, nor be let go and taken back over and over. It is a member
    // before A starts, so that A's fair share is half the partitions.
    server::startup::prepare_database(&db, None).await.expect("the database is migrated");
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
    eventually("the ghost a member", PATIENCE, || async {
        let members: i64 = sqlx::query_scalar("SELECT count(*) FROM projection_members WHERE instance = 'ghost'")
            .fetch_one(&pool)
            .await
            .unwrap();
        when(members, |&members| members == 2)
    })
    .await;
    let a = spawn_server_with(&db, "instance-a", &[("PROJECTION_PARTITIONS", PARTITIONS.to_string())]);
    let client = operator_client(&db, &a).await;
    let names = partition_names();
    // At first A leads its share only: two of each projection's four.
    wait_for_health(&client, &a, "half led", |health| leaders(health).len() == 4).await;
    // Then, the ghost's partitions having gone unled for three leases, all of them.
    wait_for_health(&client, &a, "all led", |health| {
        let led = leaders(health);
        names.iter().all(|name| led.get(name) == Some(&a.instance))
    })
    .await;

    // And it keeps them: for five leases of A's membership rounds, no partition changes hands
    // (every leadership that begins takes a new epoch).
    let leadership = || async {
        sqlx::query_as::<_, (String, Option<String>, i64)>(
            "SELECT projection_name, owner_instance, leader_epoch
             FROM projection_checkpoints WHERE projection_name LIKE '%-of-4' ORDER BY 1",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
    };
    let before = leadership().await;
    let rounds_from: time::OffsetDateTime =
        sqlx::query_scalar("SELECT clock_timestamp()").fetch_one(&pool).await.unwrap();
    eventually("five leases of membership rounds", PATIENCE, || async {
        let rounds_to: Option<time::OffsetDateTime> =
            sqlx::query_scalar("SELECT min(seen_at) FROM projection_members WHERE instance = 'instance-a'")
                .fetch_one(&pool)
                .await
                .unwrap();
        when(rounds_to, |to| to.is_some_and(|to| to - rounds_from > time::Duration::seconds(5 * 4)))
    })
    .await;
    let after = leadership().await;
    ghost.abort();
    assert_eq!(after.len(), 8, "{after:?}");
    assert_eq!(before, after, "the partitions changed hands while the ghost was a member");
    assert!(after.iter().all(|(_, owner, _)| owner.as_deref() == Some("instance-a")), "{after:?}");
}

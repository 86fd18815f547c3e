//! The projection runner against a real Postgres: batches and checkpoints commit together.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use eventstore::{
    ApplyError, Appends, NewEvent, Progress, Projection, ProjectionError, ProjectionRunner, ProjectionState, RecordedEvent,
    Target, append,
};
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Records every event it sees in a table, and fails on the event numbered `fail_on`.
struct Recorder {
    fail_on: Arc<AtomicI64>,
}

impl Projection for Recorder {
    fn name(&self) -> &'static str {
        "recorder"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["recorded"]
    }

    async fn apply(&self, conn: &mut PgConnection, events: &[RecordedEvent], target: &Target) -> Result<(), ApplyError> {
        for event in events {
            let n = event.data["n"].as_i64().unwrap();
            sqlx::query(&format!("INSERT INTO {} (n, position) VALUES ($1, $2)", target.table("recorded")))
                .bind(n)
                .bind(event.global_position)
                .execute(&mut *conn)
                .await?;
            if n == self.fail_on.load(Ordering::SeqCst) {
                return Err(ApplyError::Event { position: event.position(), reason: "told to fail".into() });
            }
        }
        Ok(())
    }
}

fn counted(n: i64) -> NewEvent {
    NewEvent {
        event_id: Uuid::new_v4(),
        event_type: "Counted".into(),
        schema_version: 1,
        data: json!({ "n": n }),
        metadata: json!({}),
    }
}

/// A `recorded` table (in apply order), `events` events numbered 1.., and a runner.
async fn setup_with(pool: &PgPool, events: i64, appends: &Appends) -> (ProjectionRunner<Recorder>, Arc<AtomicI64>) {
    // UNIQUE (position): applying an event twice would fail loudly.
    sqlx::query("CREATE TABLE recorded (seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, n bigint NOT NULL, position bigint NOT NULL UNIQUE)")
        .execute(pool)
        .await
        .unwrap();
    let stream = Uuid::new_v4();
    let mut conn = pool.acquire().await.unwrap();
    for n in 1..=events {
        append(&mut conn, stream, n - 1, &[counted(n)]).await.unwrap();
    }
    let fail_on = Arc::new(AtomicI64::new(-1));
    let runner = ProjectionRunner::new(pool.clone(), Recorder { fail_on: fail_on.clone() }, appends.subscribe(), "test");
    (runner.batch_size(4), fail_on)
}

async fn setup(pool: &PgPool, events: i64) -> (ProjectionRunner<Recorder>, Arc<AtomicI64>) {
    setup_with(pool, events, &Appends::new()).await
}

/// Runs one batch. The snapshot horizon is cluster-wide, so a transaction of a test running
/// beside this one (in another database) can hold events back for a moment: wait it out.
async fn next_batch(runner: &ProjectionRunner<Recorder>) -> Result<Progress, ProjectionError> {
    for _ in 0..500 {
        match runner.run_batch().await {
            Ok(Progress::HeldBack) => tokio::time::sleep(Duration::from_millis(20)).await,
            other => return other,
        }
    }
    Ok(Progress::HeldBack)
}

/// The numbers of the events applied, in the order they were applied.
async fn recorded(pool: &PgPool) -> Vec<i64> {
    sqlx::query_scalar("SELECT n FROM recorded ORDER BY seq").fetch_all(pool).await.unwrap()
}

/// Waits (up to 10 s) until `count` events have been applied.
async fn wait_for_recorded(pool: &PgPool, count: usize) -> Vec<i64> {
    for _ in 0..500 {
        let applied = recorded(pool).await;
        if applied.len() >= count {
            return applied;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    recorded(pool).await
}

#[sqlx::test(migrations = "../migrations")]
async fn batches_apply_every_event_once_in_order(pool: PgPool) {
    let (runner, _) = setup(&pool, 10).await;
    let mut batches = 0;
    while let Progress::Applied(applied) = next_batch(&runner).await.unwrap() {
        assert!(applied <= 4, "a batch of {applied} exceeds the batch size");
        batches += 1;
    }
    assert!(batches >= 3);
    assert_eq!(next_batch(&runner).await.unwrap(), Progress::CaughtUp);
    assert_eq!(recorded(&pool).await, (1..=10).collect::<Vec<_>>());
    let checkpoint = eventstore::projection::checkpoint(&pool, "recorder").await.unwrap();
    let last: i64 = sqlx::query_scalar("SELECT max(global_position) FROM events").fetch_one(&pool).await.unwrap();
    assert_eq!(checkpoint.global_position, last);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_failing_event_is_named_and_what_came_before_it_is_kept(pool: PgPool) {
    let (runner, fail_on) = setup(&pool, 6).await;
    fail_on.store(6, Ordering::SeqCst);
    let error = loop {
        match next_batch(&runner).await {
            Ok(Progress::Applied(_)) => continue,
            Ok(other) => panic!("the batch with event 6 did not fail: {other:?}"),
            Err(error) => break error,
        }
    };
    assert!(error.to_string().contains("told to fail"));
    assert!(matches!(error, ProjectionError::Poison { ref event_type, .. } if event_type == "Counted"));
    // The recorder wrote event 6's row before failing on it: the rollback took it away. The
    // events before it in its batch were applied one by one, and the checkpoint is just before it.
    let applied = recorded(&pool).await;
    assert_eq!(applied, vec![1, 2, 3, 4, 5]);
    let checkpoint = eventstore::projection::checkpoint(&pool, "recorder").await.unwrap();
    let last_applied: Option<i64> =
        sqlx::query_scalar("SELECT max(position) FROM recorded").fetch_one(&pool).await.unwrap();
    assert_eq!(checkpoint.global_position, last_applied.unwrap_or(0));

    fail_on.store(-1, Ordering::SeqCst);
    while let Progress::Applied(_) = next_batch(&runner).await.unwrap() {}
    assert_eq!(recorded(&pool).await, (1..=6).collect::<Vec<_>>());
}

#[sqlx::test(migrations = "../migrations")]
async fn the_runner_follows_new_events_until_cancelled(pool: PgPool) {
    let (runner, _) = setup(&pool, 3).await;
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(runner.run(shutdown.clone()));
    assert_eq!(wait_for_recorded(&pool, 3).await, vec![1, 2, 3]);
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), task).await.expect("the runner stops").unwrap();
}

#[sqlx::test(migrations = "../migrations")]
async fn an_event_committed_late_is_delivered_in_order_exactly_once(pool: PgPool) {
    let appends = Appends::new();
    let (runner, _) = setup_with(&pool, 0, &appends).await;
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(runner.idle_poll(Duration::from_millis(50)).run(shutdown.clone()));

    // A appends first (the lower position) but stays open; B appends after it and commits.
    let mut a = pool.begin().await.unwrap();
    append(&mut a, Uuid::new_v4(), 0, &[counted(1)]).await.unwrap();
    let mut b = pool.acquire().await.unwrap();
    let b_appended = append(&mut b, Uuid::new_v4(), 0, &[counted(2)]).await.unwrap();
    appends.committed();

    // The reader runs while A is open: it must not take B and move its checkpoint past A.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(recorded(&pool).await, Vec::<i64>::new(), "B was read while A was still open");

    a.commit().await.unwrap();
    appends.committed();
    assert_eq!(wait_for_recorded(&pool, 2).await, vec![1, 2]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(recorded(&pool).await, vec![1, 2], "an event was applied twice");
    let checkpoint = eventstore::projection::checkpoint(&pool, "recorder").await.unwrap();
    assert_eq!(checkpoint, b_appended.position);

    shutdown.cancel();
    task.await.unwrap();
}

#[sqlx::test(migrations = "../migrations")]
async fn another_process_wakes_the_reader_through_notify(pool: PgPool) {
    // Two `Appends` are two processes: one appends, the other's reader follows.
    let (writer, reader) = (Appends::new(), Appends::new());
    let shutdown = CancellationToken::new();
    let mut relays = writer.spawn_postgres_relay(pool.clone(), shutdown.clone());
    relays.extend(reader.spawn_postgres_relay(pool.clone(), shutdown.clone()));
    let (runner, _) = setup_with(&pool, 0, &reader).await;
    // Polling alone would take a minute: only a notification can make the reader this quick.
    let task = tokio::spawn(runner.idle_poll(Duration::from_secs(60)).run(shutdown.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await; // the first catch-up batch and LISTEN

    let mut conn = pool.acquire().await.unwrap();
    append(&mut conn, Uuid::new_v4(), 0, &[counted(7)]).await.unwrap();
    writer.committed();
    assert_eq!(wait_for_recorded(&pool, 1).await, vec![7]);

    // Knock out the reader's LISTEN connection, then append without any notification: the
    // reader catches up when it reconnects.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let terminated: i64 = sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
         WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(terminated >= 1, "no LISTEN connection found");
    append(&mut conn, Uuid::new_v4(), 0, &[counted(8)]).await.unwrap();
    assert_eq!(wait_for_recorded(&pool, 2).await, vec![7, 8]);

    shutdown.cancel();
    task.await.unwrap();
    for relay in relays {
        relay.await.unwrap();
    }
}

/// Polls the status of `name` until `done` says so (up to 15 s).
async fn wait_for_status(
    pool: &PgPool,
    name: &str,
    done: impl Fn(&eventstore::ProjectionStatus) -> bool,
) -> eventstore::ProjectionStatus {
    let mut last = None;
    for _ in 0..750 {
        let status = eventstore::projection::status(pool).await.unwrap();
        if let Some(status) = status.into_iter().find(|s| s.name == name) {
            if done(&status) {
                return status;
            }
            last = Some(status);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("status of {name} never got there: {last:?}");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_poison_event_stops_its_projection_until_retried_or_skipped(pool: PgPool) {
    let appends = Appends::new();
    let (runner, fail_on) = setup_with(&pool, 5, &appends).await;
    fail_on.store(3, Ordering::SeqCst);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(runner.idle_poll(Duration::from_millis(50)).run(shutdown.clone()));

    let failed = wait_for_status(&pool, "recorder", |s| s.state == ProjectionState::Failed).await;
    assert!(failed.last_error.as_deref().unwrap().contains("told to fail"), "{failed:?}");
    let third: (i64, i64) = sqlx::query_as(
        "SELECT transaction_id::text::bigint, global_position FROM events WHERE data->>'n' = '3'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(failed.failed_position.map(|p| (p.transaction_id, p.global_position)), Some(third));
    assert_eq!(recorded(&pool).await, vec![1, 2]);
    assert_eq!(failed.summary, "failed");

    // The other projections keep running: the account summary follows new events meanwhile.
    // (Shown in the server's tests; here the recorder alone stays put.)
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(recorded(&pool).await, vec![1, 2]);

    // Retried without a fix, it fails again at the same event.
    assert!(eventstore::projection::retry(&pool, "recorder").await.unwrap());
    wait_for_status(&pool, "recorder", |s| s.state == ProjectionState::Failed).await;
    // Skipped: the skip is recorded, and the projection moves on.
    assert!(eventstore::projection::skip_failed_event(&pool, "recorder").await.unwrap());
    assert_eq!(wait_for_recorded(&pool, 4).await, vec![1, 2, 4, 5]);
    let skipped: (i64, String) = sqlx::query_as("SELECT global_position, error FROM skipped_events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(skipped.0, third.1);
    assert!(skipped.1.contains("told to fail"));
    // Neither lever works on a projection that has not failed.
    assert!(!eventstore::projection::retry(&pool, "recorder").await.unwrap());
    assert!(!eventstore::projection::skip_failed_event(&pool, "recorder").await.unwrap());

    shutdown.cancel();
    task.await.unwrap();
}

#[sqlx::test(migrations = "../migrations")]
async fn one_instance_leads_and_another_takes_over_when_it_stops(pool: PgPool) {
    let appends = Appends::new();
    let (first, _) = setup_with(&pool, 3, &appends).await;
    let second = ProjectionRunner::new(pool.clone(), Recorder { fail_on: Arc::new(AtomicI64::new(-1)) }, appends.subscribe(), "second")
        .batch_size(4);
    let (stop_first, stop_second) = (CancellationToken::new(), CancellationToken::new());
    let first = tokio::spawn(first.idle_poll(Duration::from_millis(50)).run(stop_first.clone()));
    let led = wait_for_status(&pool, "recorder", |s| s.owner_instance.is_some()).await;
    assert_eq!(led.owner_instance.as_deref(), Some("test"));
    let second = tokio::spawn(second.idle_poll(Duration::from_millis(50)).run(stop_second.clone()));
    assert_eq!(wait_for_recorded(&pool, 3).await, vec![1, 2, 3]);

    // The first stops (a clean shutdown releases the lock at once); the second takes over
    // and applies what comes next, exactly once (the recorded table refuses duplicates).
    stop_first.cancel();
    first.await.unwrap();
    let taken = wait_for_status(&pool, "recorder", |s| s.owner_instance.as_deref() == Some("second")).await;
    assert_eq!(taken.summary, "running");
    let mut conn = pool.acquire().await.unwrap();
    append(&mut conn, Uuid::new_v4(), 0, &[counted(4)]).await.unwrap();
    appends.committed();
    assert_eq!(wait_for_recorded(&pool, 4).await, vec![1, 2, 3, 4]);

    stop_second.cancel();
    second.await.unwrap();
    let status = eventstore::projection::status(&pool).await.unwrap();
    assert_eq!(status.iter().find(|s| s.name == "recorder").unwrap().summary, "not running");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_rebuild_builds_shadow_tables_and_swaps_them_in(pool: PgPool) {
    let appends = Appends::new();
    let (runner, _) = setup_with(&pool, 10, &appends).await;
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(runner.idle_poll(Duration::from_millis(20)).run(shutdown.clone()));
    assert_eq!(wait_for_recorded(&pool, 10).await.len(), 10);
    let live_oid: i64 = sqlx::query_scalar("SELECT 'recorded'::regclass::oid::bigint").fetch_one(&pool).await.unwrap();

    assert!(eventstore::projection::request_rebuild(&pool, "recorder").await.unwrap());
    // More events arrive during the rebuild; the live table keeps taking them.
    let mut conn = pool.acquire().await.unwrap();
    for n in 11..=14 {
        append(&mut conn, Uuid::new_v4(), 0, &[counted(n)]).await.unwrap();
        appends.committed();
    }
    let done = wait_for_status(&pool, "recorder", |s| s.state == ProjectionState::Running && s.rebuild.is_none()).await;
    assert_eq!(done.last_error, None);
    let new_oid: i64 = sqlx::query_scalar("SELECT 'recorded'::regclass::oid::bigint").fetch_one(&pool).await.unwrap();
    assert_ne!(new_oid, live_oid, "the table was not replaced");
    let shadow_left: bool = sqlx::query_scalar("SELECT to_regclass('recorded_rebuild') IS NOT NULL").fetch_one(&pool).await.unwrap();
    assert!(!shadow_left);
    // The rebuilt table holds every event exactly once, whatever the order of the batches.
    let mut rebuilt: Vec<i64> = sqlx::query_scalar("SELECT n FROM recorded").fetch_all(&pool).await.unwrap();
    rebuilt.sort_unstable();
    assert_eq!(rebuilt, (1..=14).collect::<Vec<_>>());

    shutdown.cancel();
    task.await.unwrap();
}

//! The projection runner against a real Postgres: batches and checkpoints commit together.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use eventstore::{Appends, NewEvent, Progress, Projection, ProjectionError, ProjectionRunner, RecordedEvent, append};
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

    async fn apply(&self, conn: &mut PgConnection, event: &RecordedEvent) -> Result<(), ProjectionError> {
        let n = event.data["n"].as_i64().unwrap();
        sqlx::query("INSERT INTO recorded (n, position) VALUES ($1, $2)")
            .bind(n)
            .bind(event.global_position)
            .execute(&mut *conn)
            .await?;
        if n == self.fail_on.load(Ordering::SeqCst) {
            return Err(ProjectionError::Unreadable {
                position: event.position(),
                event_type: event.event_type.clone(),
                reason: "told to fail".into(),
            });
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
    sqlx::query("CREATE TABLE recorded (seq bigserial PRIMARY KEY, n bigint NOT NULL, position bigint NOT NULL)")
        .execute(pool)
        .await
        .unwrap();
    let stream = Uuid::new_v4();
    let mut conn = pool.acquire().await.unwrap();
    for n in 1..=events {
        append(&mut conn, stream, n - 1, &[counted(n)]).await.unwrap();
    }
    let fail_on = Arc::new(AtomicI64::new(-1));
    let runner = ProjectionRunner::new(pool.clone(), Recorder { fail_on: fail_on.clone() }, appends.subscribe());
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
async fn a_failing_batch_applies_nothing_and_keeps_the_checkpoint(pool: PgPool) {
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
    // The recorder wrote event 6's row before failing on it: the rollback took it away, and
    // the checkpoint stayed at the last event of the last good batch.
    let applied = recorded(&pool).await;
    assert_eq!(applied, (1..=applied.len() as i64).collect::<Vec<_>>());
    assert!(!applied.contains(&6));
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

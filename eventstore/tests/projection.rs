//! The projection runner against a real Postgres: batches and checkpoints commit together.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use eventstore::{NewEvent, Projection, ProjectionError, ProjectionRunner, RecordedEvent, append};
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use tokio::sync::Notify;
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
        sqlx::query("INSERT INTO recorded (n) VALUES ($1)").bind(n).execute(&mut *conn).await?;
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

async fn setup(pool: &PgPool, events: i64) -> (ProjectionRunner<Recorder>, Arc<AtomicI64>) {
    sqlx::query("CREATE TABLE recorded (n bigint NOT NULL)").execute(pool).await.unwrap();
    let stream = Uuid::new_v4();
    let mut conn = pool.acquire().await.unwrap();
    for n in 1..=events {
        let new = NewEvent {
            event_id: Uuid::new_v4(),
            event_type: "Counted".into(),
            schema_version: 1,
            data: json!({ "n": n }),
            metadata: json!({}),
        };
        append(&mut conn, stream, n - 1, &[new]).await.unwrap();
    }
    let fail_on = Arc::new(AtomicI64::new(-1));
    let runner = ProjectionRunner::new(pool.clone(), Recorder { fail_on: fail_on.clone() }, Arc::new(Notify::new()));
    (runner.batch_size(4), fail_on)
}

/// Runs one batch. The snapshot horizon is cluster-wide, so a transaction of a test running
/// beside this one (in another database) can hold every event back for a moment: retry an
/// empty batch briefly before believing it.
async fn next_batch(runner: &ProjectionRunner<Recorder>) -> Result<usize, ProjectionError> {
    for _ in 0..100 {
        match runner.run_batch().await {
            Ok(0) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            other => return other,
        }
    }
    Ok(0)
}

async fn recorded(pool: &PgPool) -> Vec<i64> {
    sqlx::query_scalar("SELECT n FROM recorded ORDER BY n").fetch_all(pool).await.unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn batches_apply_every_event_once_in_order(pool: PgPool) {
    let (runner, _) = setup(&pool, 10).await;
    assert_eq!(next_batch(&runner).await.unwrap(), 4);
    assert_eq!(next_batch(&runner).await.unwrap(), 4);
    assert_eq!(next_batch(&runner).await.unwrap(), 2);
    assert_eq!(runner.run_batch().await.unwrap(), 0);
    assert_eq!(recorded(&pool).await, (1..=10).collect::<Vec<_>>());
    let checkpoint = eventstore::projection::checkpoint(&pool, "recorder").await.unwrap();
    let last: i64 = sqlx::query_scalar("SELECT max(global_position) FROM events").fetch_one(&pool).await.unwrap();
    assert_eq!(checkpoint.global_position, last);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_failing_batch_applies_nothing_and_keeps_the_checkpoint(pool: PgPool) {
    let (runner, fail_on) = setup(&pool, 6).await;
    assert_eq!(next_batch(&runner).await.unwrap(), 4);
    let checkpoint = eventstore::projection::checkpoint(&pool, "recorder").await.unwrap();

    fail_on.store(6, Ordering::SeqCst);
    assert!(next_batch(&runner).await.is_err());
    // Event 5 was written inside the failed batch; it must be gone with it.
    assert_eq!(recorded(&pool).await, vec![1, 2, 3, 4]);
    assert_eq!(eventstore::projection::checkpoint(&pool, "recorder").await.unwrap(), checkpoint);

    fail_on.store(-1, Ordering::SeqCst);
    assert_eq!(next_batch(&runner).await.unwrap(), 2);
    assert_eq!(recorded(&pool).await, (1..=6).collect::<Vec<_>>());
}

#[sqlx::test(migrations = "../migrations")]
async fn the_runner_follows_new_events_until_cancelled(pool: PgPool) {
    let (runner, _) = setup(&pool, 3).await;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(runner.run(shutdown.clone()));
    for _ in 0..100 {
        if recorded(&pool).await.len() == 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(recorded(&pool).await, vec![1, 2, 3]);
    shutdown.cancel();
    tokio::time::timeout(std::time::Duration::from_secs(5), task).await.expect("the runner stops").unwrap();
}

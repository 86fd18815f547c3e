//! The projection runner against a real Postgres: batches and checkpoints commit together.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// Who pulls the levers in these tests.
const BY_TESTER: eventstore::projection::PulledBy<'static> =
    eventstore::projection::PulledBy { operator: "tester", reason: "a test" };

use eventstore::projection::{LeverError, LeverRefusal};
use eventstore::{
    AppendNotifier, ApplyError, NewEvent, Progress, Projection, ProjectionError, ProjectionRunner, ProjectionState,
    RecordedEvent, Target, append,
};
use serde_json::json;
use sqlx::{Connection, PgConnection, PgPool};
use testkit::{PATIENCE, eventually, when};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Records every event it sees in a table, and fails on the event numbered `fail_on`.
struct Recorder {
    fail_on: Arc<AtomicI64>,
}

impl Projection for Recorder {
    const NAME: &'static str = "recorder";
    const TABLES: &'static [&'static str] = &["recorded"];
    const EVENT_TYPES: &'static [&'static str] = &["Counted"];

    async fn apply(
        &self,
        conn: &mut PgConnection,
        events: &[RecordedEvent],
        target: &Target,
    ) -> Result<(), ApplyError> {
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
async fn setup_with(
    pool: &PgPool,
    events: i64,
    appends: &AppendNotifier,
) -> (ProjectionRunner<Recorder>, Arc<AtomicI64>) {
    // UNIQUE (position): applying an event twice would fail loudly.
    sqlx::query("CREATE TABLE recorded (seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, n bigint NOT NULL, position bigint NOT NULL UNIQUE)")
        .execute(pool)
        .await
        .unwrap();
    let stream = Uuid::new_v4();
    let mut conn = pool.acquire().await.unwrap();
    for n in 1..=events {
        append(&mut conn, "counter", stream, n - 1, &[counted(n)]).await.unwrap();
    }
    let fail_on = Arc::new(AtomicI64::new(-1));
    let runner =
        ProjectionRunner::new(pool.clone(), Recorder { fail_on: fail_on.clone() }, appends.subscribe(), "test");
    (runner.batch_size(4), fail_on)
}

async fn setup(pool: &PgPool, events: i64) -> (ProjectionRunner<Recorder>, Arc<AtomicI64>) {
    setup_with(pool, events, &AppendNotifier::new()).await
}

/// Runs one batch. The snapshot horizon is cluster-wide, so a transaction of a test running
/// beside this one (in another database) can hold events back for a moment: wait it out.
async fn next_batch(runner: &ProjectionRunner<Recorder>) -> Result<Progress, ProjectionError> {
    eventually("a batch not held back", PATIENCE, || async {
        match runner.run_batch().await {
            Ok(Progress::HeldBack) => Err(Progress::HeldBack),
            other => Ok(other),
        }
    })
    .await
}

/// The numbers of the events applied, in the order they were applied.
async fn recorded(pool: &PgPool) -> Vec<i64> {
    sqlx::query_scalar("SELECT n FROM recorded ORDER BY seq").fetch_all(pool).await.unwrap()
}

/// Waits until `count` events have been applied.
async fn wait_for_recorded(pool: &PgPool, count: usize) -> Vec<i64> {
    eventually(&format!("{count} events applied"), PATIENCE, || async {
        when(recorded(pool).await, |applied| applied.len() >= count)
    })
    .await
}

#[sqlx::test(migrator = "eventstore::schema::MIGRATOR")]
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

#[sqlx::test(migrator = "eventstore::schema::MIGRATOR")]
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

#[sqlx::test(migrator = "eventstore::schema::MIGRATOR")]
async fn the_runner_follows_new_events_until_cancelled(pool: PgPool) {
    let (runner, _) = setup(&pool, 3).await;
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(runner.run(shutdown.clone()));
    assert_eq!(wait_for_recorded(&pool, 3).await, vec![1, 2, 3]);
    shutdown.cancel();
    tokio::time::timeout(PATIENCE, task).await.expect("the runner stops").unwrap();
}

#[sqlx::test(migrator = "eventstore::schema::MIGRATOR")]
async fn an_event_committed_late_is_delivered_in_order_exactly_once(pool: PgPool) {
    let appends = AppendNotifier::new();
    let (runner, _) = setup_with(&pool, 0, &appends).await;

    // A appends first (the lower position) but stays open; B appends after it and commits.
    let mut a = pool.begin().await.unwrap();
    append(&mut a, "counter", Uuid::new_v4(), 0, &[counted(1)]).await.unwrap();
    let mut b = pool.acquire().await.unwrap();
    let b_appended = append(&mut b, "counter", Uuid::new_v4(), 0, &[counted(2)]).await.unwrap();
    appends.committed();

    // The reader runs while A is open: it must not take B and move its checkpoint past A.
    let progress = runner.run_batch().await.unwrap();
    assert!(matches!(progress, Progress::HeldBack | Progress::CaughtUp), "{progress:?}");
    assert_eq!(recorded(&pool).await, Vec::<i64>::new(), "B was read while A was still open");

    let shutdown = CancellationToken::new();
    let task = tokio::spawn(runner.idle_poll(Duration::from_millis(50)).run(shutdown.clone()));
    a.commit().await.unwrap();
    appends.committed();
    assert_eq!(wait_for_recorded(&pool, 2).await, vec![1, 2]);
    let checkpoint = eventstore::projection::checkpoint(&pool, "recorder").await.unwrap();
    assert_eq!(checkpoint, b_appended.position);
    // Neither applied again: the next event to be applied is one appended after them.
    append(&mut b, "counter", Uuid::new_v4(), 0, &[counted(3)]).await.unwrap();
    appends.committed();
    assert_eq!(wait_for_recorded(&pool, 3).await, vec![1, 2, 3], "an event was applied twice");

    shutdown.cancel();
    task.await.unwrap();
}

#[sqlx::test(migrator = "eventstore::schema::MIGRATOR")]
async fn another_process_wakes_the_reader_through_notify(pool: PgPool) {
    // Two `AppendNotifier` are two processes: one appends, the other's reader follows.
    let (writer, reader) = (AppendNotifier::new(), AppendNotifier::new());
    let shutdown = CancellationToken::new();
    let mut relays = writer.spawn_postgres_relay(pool.clone(), shutdown.clone());
    relays.extend(reader.spawn_postgres_relay(pool.clone(), shutdown.clone()));
    let (runner, _) = setup_with(&pool, 1, &reader).await;
    // The reader would poll only long after the test has given up: once it has applied what
    // was there when it started, only a notification can bring it more within the test's
    // patience. Both relays listen (what is announced before would be lost).
    let task = tokio::spawn(runner.idle_poll(10 * PATIENCE).run(shutdown.clone()));
    assert_eq!(wait_for_recorded(&pool, 1).await, vec![1]);
    eventually("both relays listening", PATIENCE, || async {
        when(listening(&pool).await, |&listening| listening >= 2)
    })
    .await;

    let mut conn = pool.acquire().await.unwrap();
    append(&mut conn, "counter", Uuid::new_v4(), 0, &[counted(7)]).await.unwrap();
    writer.committed();
    assert_eq!(wait_for_recorded(&pool, 2).await, vec![1, 7]);

    // Append without any notification, then knock out the reader's LISTEN connection: the
    // reader catches up when it listens again. (Appended first, so that the test does not race
    // the reconnection: a catch-up can only find what is there.)
    append(&mut conn, "counter", Uuid::new_v4(), 0, &[counted(8)]).await.unwrap();
    let terminated: i64 = sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
         WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(terminated >= 1, "no LISTEN connection found");
    assert_eq!(wait_for_recorded(&pool, 3).await, vec![1, 7, 8]);

    shutdown.cancel();
    task.await.unwrap();
    for relay in relays {
        relay.await.unwrap();
    }
}

/// Sessions of the test's database that listen for notifications (what they last ran).
async fn listening(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Polls the status of `name` until `done` says so.
async fn wait_for_status(
    pool: &PgPool,
    name: &str,
    done: impl Fn(&eventstore::ProjectionStatus) -> bool,
) -> eventstore::ProjectionStatus {
    eventually(&format!("the status of {name} there"), PATIENCE, || async {
        let status = eventstore::projection::status(pool).await.unwrap().into_iter().find(|s| s.name == name);
        match status {
            Some(status) if done(&status) => Ok(status),
            other => Err(other),
        }
    })
    .await
}

#[sqlx::test(migrator = "eventstore::schema::MIGRATOR")]
async fn a_poison_event_stops_its_projection_until_retried_or_skipped(pool: PgPool) {
    let appends = AppendNotifier::new();
    let (runner, fail_on) = setup_with(&pool, 5, &appends).await;
    fail_on.store(3, Ordering::SeqCst);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(runner.idle_poll(Duration::from_millis(50)).run(shutdown.clone()));

    let failed = wait_for_status(&pool, "recorder", |s| s.state == ProjectionState::Failed).await;
    assert!(failed.last_error.as_deref().unwrap().contains("told to fail"), "{failed:?}");
    let third: (i64, i64) =
        sqlx::query_as("SELECT transaction_id::text::bigint, global_position FROM events WHERE data->>'n' = '3'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(failed.failed_position.map(|p| (p.transaction_id, p.global_position)), Some(third));
    assert_eq!(recorded(&pool).await, vec![1, 2]);
    assert_eq!(failed.summary, "failed");

    // The other projections keep running: the account summary follows new events meanwhile.
    // (Shown in the server's tests; here the recorder alone stays put.) Its runner goes on
    // leading, a heartbeat and another later (a second or more of its steps), and applies
    // nothing past the failure.
    let mut beat = failed.owner_heartbeat_at;
    for _ in 0..2 {
        beat = wait_for_status(&pool, "recorder", |s| s.owner_heartbeat_at > beat).await.owner_heartbeat_at;
    }
    let still = wait_for_status(&pool, "recorder", |_| true).await;
    assert_eq!((still.state, still.failed_position), (ProjectionState::Failed, failed.failed_position));
    assert_eq!(recorded(&pool).await, vec![1, 2]);

    // Retried without a fix, it fails again at the same event.
    eventstore::projection::retry(&pool, "recorder", BY_TESTER).await.unwrap();
    let failed = wait_for_status(&pool, "recorder", |s| s.state == ProjectionState::Failed).await;
    // Skipped: the skip is recorded, and the projection moves on.
    eventstore::projection::skip_failed_event(&pool, "recorder", failed.failed_position.unwrap(), BY_TESTER)
        .await
        .unwrap();
    assert_eq!(wait_for_recorded(&pool, 4).await, vec![1, 2, 4, 5]);
    let skipped: (i64, String) =
        sqlx::query_as("SELECT global_position, error FROM skipped_events").fetch_one(&pool).await.unwrap();
    assert_eq!(skipped.0, third.1);
    assert!(skipped.1.contains("told to fail"));
    // Neither lever works on a projection that has not failed.
    let not_failed = |outcome| matches!(outcome, Err(LeverError::Refused(LeverRefusal::NotFailed(_))));
    assert!(not_failed(eventstore::projection::retry(&pool, "recorder", BY_TESTER).await));
    assert!(not_failed(
        eventstore::projection::skip_failed_event(&pool, "recorder", failed.failed_position.unwrap(), BY_TESTER).await
    ));

    shutdown.cancel();
    task.await.unwrap();
}

#[sqlx::test(migrator = "eventstore::schema::MIGRATOR")]
async fn one_instance_leads_and_another_takes_over_when_it_stops(pool: PgPool) {
    let appends = AppendNotifier::new();
    let (first, _) = setup_with(&pool, 3, &appends).await;
    let second = ProjectionRunner::new(
        pool.clone(),
        Recorder { fail_on: Arc::new(AtomicI64::new(-1)) },
        appends.subscribe(),
        "second",
    )
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
    append(&mut conn, "counter", Uuid::new_v4(), 0, &[counted(4)]).await.unwrap();
    appends.committed();
    assert_eq!(wait_for_recorded(&pool, 4).await, vec![1, 2, 3, 4]);

    stop_second.cancel();
    second.await.unwrap();
    let status = eventstore::projection::status(&pool).await.unwrap();
    assert_eq!(status.iter().find(|s| s.name == "recorder").unwrap().summary, "not running");
}

#[sqlx::test(migrator = "eventstore::schema::MIGRATOR")]
async fn a_rebuild_builds_shadow_tables_and_swaps_them_in(pool: PgPool) {
    let appends = AppendNotifier::new();
    let (runner, _) = setup_with(&pool, 10, &appends).await;
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(runner.idle_poll(Duration::from_millis(20)).run(shutdown.clone()));
    assert_eq!(wait_for_recorded(&pool, 10).await.len(), 10);
    let live_oid: i64 = sqlx::query_scalar("SELECT 'recorded'::regclass::oid::bigint").fetch_one(&pool).await.unwrap();
    // A row gone wrong in the live table, which only the rebuild's rows replace.
    sqlx::query("UPDATE recorded SET n = 0 WHERE n = 1").execute(&pool).await.unwrap();

    eventstore::projection::request_rebuild(&pool, "recorder", BY_TESTER).await.unwrap();
    // More events arrive during the rebuild; the live table keeps taking them.
    let mut conn = pool.acquire().await.unwrap();
    for n in 11..=14 {
        append(&mut conn, "counter", Uuid::new_v4(), 0, &[counted(n)]).await.unwrap();
        appends.committed();
    }
    let done = wait_for_status(&pool, "recorder", |s| s.state == ProjectionState::Running && s.rebuild.is_none()).await;
    assert_eq!(done.last_error, None);
    // The same table, its rows replaced (a rebuild creates, renames and owns nothing); the copy
    // waits, emptied, for the next rebuild.
    let same_oid: i64 = sqlx::query_scalar("SELECT 'recorded'::regclass::oid::bigint").fetch_one(&pool).await.unwrap();
    assert_eq!(same_oid, live_oid, "the live table is kept");
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM recorded_rebuild").fetch_one(&pool).await.unwrap();
    assert_eq!(left, 0, "the copy is emptied");
    // The rebuilt rows hold every event exactly once, whatever the order of the batches (and
    // the row gone wrong is right again).
    let mut rebuilt = wait_for_recorded(&pool, 14).await;
    rebuilt.sort_unstable();
    assert_eq!(rebuilt, (1..=14).collect::<Vec<_>>());

    shutdown.cancel();
    task.await.unwrap();
}

/// Appends one event after another from `writers` tasks, each pausing `pause` between appends,
/// until `stop`; returns how many.
fn keep_appending(
    pool: &PgPool,
    appends: &AppendNotifier,
    first: i64,
    writers: i64,
    pause: Duration,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<i64> {
    let (pool, appends) = (pool.clone(), appends.clone());
    tokio::spawn(async move {
        let tasks: Vec<_> = (0..writers)
            .map(|writer| {
                let (pool, appends, stop) = (pool.clone(), appends.clone(), stop.clone());
                tokio::spawn(async move {
                    let (stream, mut written) = (Uuid::new_v4(), 0);
                    let mut conn = pool.acquire().await.unwrap();
                    while !stop.is_cancelled() {
                        append(&mut conn, "counter", stream, written, &[counted(first + writer + written * writers)])
                            .await
                            .unwrap();
                        appends.committed();
                        written += 1;
                        // Pacing the writers, not waiting for anything.
                        tokio::time::sleep(pause).await;
                    }
                    written
                })
            })
            .collect();
        let mut total = 0;
        for task in tasks {
            total += task.await.unwrap();
        }
        total
    })
}

#[sqlx::test(migrator = "eventstore::schema::MIGRATOR")]
async fn a_rebuild_finishes_while_events_keep_arriving(pool: PgPool) {
    let appends = AppendNotifier::new();
    let (runner, _) = setup_with(&pool, 300, &appends).await;
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(runner.batch_size(50).idle_poll(Duration::from_millis(20)).run(shutdown.clone()));
    assert_eq!(wait_for_recorded(&pool, 300).await.len(), 300);

    // Two writers keep appending, at a rate the projection can follow (so that the live tables
    // keep up) but fast enough that a batch of the rebuild almost never finds nothing new to
    // apply — which is what the swap used to wait for.
    let stop_writing = CancellationToken::new();
    let writers = keep_appending(&pool, &appends, 301, 2, Duration::from_millis(2), stop_writing.clone());
    wait_for_recorded(&pool, 320).await;
    eventstore::projection::request_rebuild(&pool, "recorder", BY_TESTER).await.unwrap();
    wait_for_status(&pool, "recorder", |s| s.state == ProjectionState::Rebuilding).await;
    let done = wait_for_status(&pool, "recorder", |s| s.state == ProjectionState::Running && s.rebuild.is_none()).await;
    assert_eq!(done.last_error, None);
    stop_writing.cancel();
    let written = writers.await.unwrap();
    assert!(written > 0);

    // The rebuilt table went on with the live events: every event exactly once.
    let mut rebuilt = wait_for_recorded(&pool, 300 + written as usize).await;
    rebuilt.sort_unstable();
    let appended: Vec<i64> =
        sqlx::query_scalar("SELECT (data->>'n')::bigint FROM events ORDER BY 1").fetch_all(&pool).await.unwrap();
    assert_eq!(rebuilt, appended);
    shutdown.cancel();
    task.await.unwrap();
}

#[sqlx::test(migrator = "eventstore::schema::MIGRATOR")]
async fn a_rebuild_skips_what_the_operator_skipped(pool: PgPool) {
    let appends = AppendNotifier::new();
    let (runner, fail_on) = setup_with(&pool, 5, &appends).await;
    fail_on.store(3, Ordering::SeqCst);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(runner.idle_poll(Duration::from_millis(20)).run(shutdown.clone()));
    let failed = wait_for_status(&pool, "recorder", |s| s.state == ProjectionState::Failed).await;
    eventstore::projection::skip_failed_event(&pool, "recorder", failed.failed_position.unwrap(), BY_TESTER)
        .await
        .unwrap();
    assert_eq!(wait_for_recorded(&pool, 4).await, vec![1, 2, 4, 5]);

    // Event 3 still cannot be applied; the rebuild must not stop at it.
    eventstore::projection::request_rebuild(&pool, "recorder", BY_TESTER).await.unwrap();
    let done = wait_for_status(&pool, "recorder", |s| s.state == ProjectionState::Running && s.rebuild.is_none()).await;
    assert_eq!(done.last_error, None);
    let mut rebuilt: Vec<i64> = sqlx::query_scalar("SELECT n FROM recorded").fetch_all(&pool).await.unwrap();
    rebuilt.sort_unstable();
    assert_eq!(rebuilt, vec![1, 2, 4, 5]);
    shutdown.cancel();
    task.await.unwrap();
}

#[sqlx::test(migrator = "eventstore::schema::MIGRATOR")]
async fn levers_are_compare_and_set(pool: PgPool) {
    let appends = AppendNotifier::new();
    let (runner, fail_on) = setup_with(&pool, 6, &appends).await;
    fail_on.store(3, Ordering::SeqCst);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(runner.idle_poll(Duration::from_millis(20)).run(shutdown.clone()));
    let failed = wait_for_status(&pool, "recorder", |s| s.state == ProjectionState::Failed).await;
    let seen = failed.failed_position.unwrap();

    // A skip names the failure the operator saw: an older or newer one is refused.
    let other = eventstore::Position { global_position: seen.global_position + 1, ..seen };
    let moved = eventstore::projection::skip_failed_event(&pool, "recorder", other, BY_TESTER).await;
    assert!(
        matches!(moved, Err(LeverError::Refused(LeverRefusal::FailureMoved { now, .. })) if now == seen),
        "{moved:?}"
    );
    let unknown = eventstore::projection::retry(&pool, "nope", BY_TESTER).await;
    assert!(matches!(unknown, Err(LeverError::Refused(LeverRefusal::UnknownProjection(_)))));
    assert_eq!(recorded(&pool).await, vec![1, 2]);

    // A failure during a rebuild does not end the rebuild, and the swap keeps the failure.
    eventstore::projection::skip_failed_event(&pool, "recorder", seen, BY_TESTER).await.unwrap();
    assert_eq!(wait_for_recorded(&pool, 5).await, vec![1, 2, 4, 5, 6]);
    shutdown.cancel();
    task.await.unwrap();
    fail_on.store(8, Ordering::SeqCst);
    let mut conn = pool.acquire().await.unwrap();
    for n in 7..=8 {
        append(&mut conn, "counter", Uuid::new_v4(), 0, &[counted(n)]).await.unwrap();
    }
    // Both visible before the runner starts (a test beside this one may hold them back), so
    // that its first live batch, during the rebuild, fails on event 8.
    let after = eventstore::projection::checkpoint(&pool, "recorder").await.unwrap();
    eventually("events 7 and 8 readable", PATIENCE, || async {
        when(eventstore::read_all_after(&pool, after, 10).await.unwrap().len(), |&read| read == 2)
    })
    .await;
    eventstore::projection::request_rebuild(&pool, "recorder", BY_TESTER).await.unwrap();
    let runner = ProjectionRunner::new(pool.clone(), Recorder { fail_on }, appends.subscribe(), "test").batch_size(4);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(runner.idle_poll(Duration::from_millis(20)).run(shutdown.clone()));
    let ended =
        wait_for_status(&pool, "recorder", |s| s.rebuild.is_none() && s.state != ProjectionState::Rebuilding).await;
    assert_eq!(ended.state, ProjectionState::Failed, "{ended:?}");
    assert!(ended.last_error.as_deref().unwrap().contains("told to fail"), "{ended:?}");
    let mut rebuilt: Vec<i64> = sqlx::query_scalar("SELECT n FROM recorded").fetch_all(&pool).await.unwrap();
    rebuilt.sort_unstable();
    assert_eq!(rebuilt, vec![1, 2, 4, 5, 6, 7]);
    // Levers never move a checkpoint backwards.
    let before = eventstore::projection::checkpoint(&pool, "recorder").await.unwrap();
    let stale_skip = eventstore::projection::skip_failed_event(&pool, "recorder", seen, BY_TESTER).await;
    assert!(matches!(stale_skip, Err(LeverError::Refused(LeverRefusal::FailureMoved { .. }))), "{stale_skip:?}");
    assert_eq!(eventstore::projection::checkpoint(&pool, "recorder").await.unwrap(), before);
    shutdown.cancel();
    task.await.unwrap();
}

#[sqlx::test(migrator = "eventstore::schema::MIGRATOR")]
async fn a_swap_that_meets_a_lock_gives_up_and_tries_again_without_queueing_reads(pool: PgPool) {
    let appends = AppendNotifier::new();
    let (runner, _) = setup_with(&pool, 20, &appends).await;
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(runner.idle_poll(Duration::from_millis(20)).run(shutdown.clone()));
    assert_eq!(wait_for_recorded(&pool, 20).await.len(), 20);

    // A long reader does not hold a swap up (it keeps seeing the rows it saw), but a lock that
    // keeps writers out does (a CREATE INDEX's SHARE lock, held here while the rebuild wants to
    // copy its rows in).
    let mut reader = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE recorded IN SHARE MODE").execute(&mut *reader).await.unwrap();
    eventstore::projection::request_rebuild(&pool, "recorder", BY_TESTER).await.unwrap();
    // Reads, one after another, while the swap tries to write the table and gives up after its
    // lock_timeout, ten times over: each try is a transaction Postgres counts as rolled back
    // (a positive signal, where a look at pg_locks would have to land in a 20 ms window). A
    // swap that queued for as long as the lock is held (which this test only lets go
    // afterwards) would stall the rebuild, and every step of the projection behind it.
    let rollbacks = || async {
        sqlx::query("SELECT pg_stat_clear_snapshot()").execute(&pool).await.unwrap();
        sqlx::query_scalar::<_, i64>("SELECT xact_rollback FROM pg_stat_database WHERE datname = current_database()")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let before = rollbacks().await;
    let reading = CancellationToken::new();
    let reads = {
        let (pool, reading) = (pool.clone(), reading.clone());
        tokio::spawn(async move {
            let mut answered = 0u64;
            while !reading.is_cancelled() {
                let read = sqlx::query("SELECT count(*) FROM recorded").execute(&pool);
                tokio::time::timeout(PATIENCE, read)
                    .await
                    .expect("a read beside the waiting swap is answered")
                    .unwrap();
                answered += 1;
            }
            answered
        })
    };
    eventually("ten tries of the swap", PATIENCE, || async { when(rollbacks().await, |&now| now >= before + 10) })
        .await;
    reading.cancel();
    assert!(reads.await.unwrap() > 0);
    let status = eventstore::projection::status(&pool).await.unwrap();
    let waiting = status.iter().find(|s| s.name == "recorder").unwrap();
    assert_eq!(waiting.state, ProjectionState::Rebuilding, "the swap cannot have happened yet: {waiting:?}");

    reader.commit().await.unwrap();
    let done = wait_for_status(&pool, "recorder", |s| s.state == ProjectionState::Running && s.rebuild.is_none()).await;
    assert_eq!(done.last_error, None);
    shutdown.cancel();
    task.await.unwrap();
}

#[sqlx::test(migrator = "eventstore::schema::MIGRATOR")]
async fn a_leader_whose_lease_ran_out_is_fenced_off(pool: PgPool) {
    let appends = AppendNotifier::new();
    let (runner, _) = setup_with(&pool, 3, &appends).await;
    // An instance took the lead, then stopped answering (paused, cut off): its session and lock
    // live on, but it has not renewed its lease for a minute.
    let mut paused = sqlx::PgConnection::connect_with(&pool.connect_options()).await.unwrap();
    sqlx::query("SELECT pg_advisory_lock(hashtext('eventstore projection'), hashtext('recorder'))")
        .execute(&mut paused)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO projection_checkpoints (projection_name, owner_instance, owner_heartbeat_at, leader_epoch)
         VALUES ('recorder', 'paused', clock_timestamp() - interval '1 minute', 7)",
    )
    .execute(&pool)
    .await
    .unwrap();

    let shutdown = CancellationToken::new();
    let task = tokio::spawn(runner.idle_poll(Duration::from_millis(20)).run(shutdown.clone()));
    // Once the stale session has also been idle for a lease (4 s), it is ended and the lead
    // taken over.
    assert_eq!(wait_for_recorded(&pool, 3).await, vec![1, 2, 3]);
    let led = wait_for_status(&pool, "recorder", |s| s.owner_instance.as_deref() == Some("test")).await;
    assert_eq!(led.summary, "running");
    let epoch: i64 =
        sqlx::query_scalar("SELECT leader_epoch FROM projection_checkpoints WHERE projection_name = 'recorder'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(epoch > 7, "a takeover is a new epoch");
    assert!(sqlx::query("SELECT 1").execute(&mut paused).await.is_err(), "the stale leader's session was ended");
    shutdown.cancel();
    task.await.unwrap();
}

#[sqlx::test(migrator = "eventstore::schema::MIGRATOR")]
async fn a_projection_is_shown_only_the_event_types_it_reads(pool: PgPool) {
    let (runner, _) = setup(&pool, 0).await;
    let mut conn = pool.acquire().await.unwrap();
    let other =
        |n: i64| NewEvent { event_type: "SomethingElse".into(), data: json!({"not": "counted", "n": n}), ..counted(n) };
    append(&mut conn, "counter", Uuid::new_v4(), 0, &[other(100), counted(1), other(101)]).await.unwrap();
    append(&mut conn, "counter", Uuid::new_v4(), 0, &[other(102)]).await.unwrap();
    append(&mut conn, "counter", Uuid::new_v4(), 0, &[counted(2)]).await.unwrap();
    // The recorder would record n = 100 for an event it should never see.
    let last = append(&mut conn, "counter", Uuid::new_v4(), 0, &[other(103), other(104)]).await.unwrap();
    while let Progress::Applied(_) = next_batch(&runner).await.unwrap() {}
    assert_eq!(recorded(&pool).await, vec![1, 2]);
    // The checkpoint went past the events it was not shown.
    assert_eq!(eventstore::projection::checkpoint(&pool, "recorder").await.unwrap(), last.position);
}

#[sqlx::test(migrator = "eventstore::schema::MIGRATOR")]
async fn a_streams_partition_is_the_same_in_rust_and_in_the_database(pool: PgPool) {
    // Given: ids random and chosen (all bits clear, all set, each byte alone), counts 1 to 64.
    let mut ids: Vec<Uuid> = (0..2_000).map(|_| Uuid::new_v4()).collect();
    ids.extend([Uuid::nil(), Uuid::max()]);
    ids.extend((0..16).map(|byte| {
        let mut bytes = [0u8; 16];
        bytes[byte] = 0xa5;
        Uuid::from_bytes(bytes)
    }));
    for count in [1, 2, 3, 4, 7, 16, 64] {
        // When: the database says where each falls,
        let found: Vec<i32> = sqlx::query_scalar("SELECT stream_partition(id, $2) FROM unnest($1::uuid[]) AS id")
            .bind(&ids)
            .bind(count as i32)
            .fetch_all(&pool)
            .await
            .unwrap();
        // Then: Rust says the same.
        for (id, found) in ids.iter().zip(found) {
            let partition = eventstore::projection::Partition::of_stream(*id, count);
            assert_eq!((partition.index as i32, partition.count), (found, count), "stream {id}, {count} partitions");
        }
    }
}

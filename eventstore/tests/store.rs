//! The event store against a real Postgres (a fresh database per test, from `DATABASE_URL`).

use eventstore::{AppendError, NewEvent, Position, RecordedEvent, append, read_all_after, read_stream};
use serde_json::json;
use sqlx::PgPool;
use testkit::{PATIENCE, eventually, when};
use uuid::Uuid;

mod common;
use common::someone_waits_for_a_lock;

fn event(n: i64) -> NewEvent {
    NewEvent {
        event_id: Uuid::new_v4(),
        event_type: "Counted".into(),
        schema_version: 1,
        data: json!({ "n": n }),
        metadata: json!({ "commandId": Uuid::new_v4() }),
    }
}

async fn append_now(
    pool: &PgPool,
    stream: Uuid,
    expected: i64,
    events: &[NewEvent],
) -> Result<eventstore::Appended, AppendError> {
    let mut conn = pool.acquire().await.unwrap();
    append(&mut conn, "counter", stream, expected, events).await
}

/// Reads the global log until it holds `expected` events. The snapshot horizon is cluster-wide:
/// transactions of tests running beside this one (in other databases) hold it back for a moment.
async fn read_all_eventually(pool: &PgPool, after: Position, limit: i64, expected: usize) -> Vec<RecordedEvent> {
    eventually(&format!("{expected} events read"), PATIENCE, || async {
        when(read_all_after(pool, after, limit).await.unwrap(), |events| events.len() >= expected)
    })
    .await
}

async fn count(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(pool).await.unwrap()
}

#[sqlx::test(migrator = "eventstore::schema::MIGRATOR")]
async fn appended_events_read_back_in_version_order(pool: PgPool) {
    let stream = Uuid::new_v4();
    let first = append_now(&pool, stream, 0, &[event(1), event(2)]).await.unwrap();
    assert_eq!(first.version, 2);
    let second = append_now(&pool, stream, 2, &[event(3)]).await.unwrap();
    assert_eq!(second.version, 3);
    assert!(second.position > first.position);

    let events = read_stream(&pool, stream, 0).await.unwrap();
    let versions: Vec<i64> = events.iter().map(|e| e.stream_version).collect();
    assert_eq!(versions, vec![1, 2, 3]);
    let payloads: Vec<i64> = events.iter().map(|e| e.data["n"].as_i64().unwrap()).collect();
    assert_eq!(payloads, vec![1, 2, 3]);
    assert_eq!(events[2].position(), second.position);
    assert!(events.iter().all(|e| e.stream_id == stream && e.event_type == "Counted" && e.schema_version == 1));
    assert!(events.iter().all(|e| e.stream_type == "counter"), "every event carries its stream's type");
    assert!(events.windows(2).all(|w| w[0].recorded_at <= w[1].recorded_at));

    let tail = read_stream(&pool, stream, 2).await.unwrap();
    assert_eq!(tail.len(), 1);
    assert_eq!(tail[0].stream_version, 3);
}

#[sqlx::test(migrator = "eventstore::schema::MIGRATOR")]
async fn a_stale_expected_version_is_a_conflict_and_writes_nothing(pool: PgPool) {
    let stream = Uuid::new_v4();
    append_now(&pool, stream, 0, &[event(1), event(2)]).await.unwrap();

    for stale in [0, 1] {
        let result = append_now(&pool, stream, stale, &[event(9)]).await;
        assert!(
            matches!(result, Err(AppendError::Conflict { stream_id, expected_version }) if stream_id == stream && expected_version == stale),
            "expected a conflict at {stale}, got {result:?}"
        );
    }
    // Ahead of the stream is as wrong as behind it: it would leave a gap.
    assert!(matches!(append_now(&pool, stream, 5, &[event(9)]).await, Err(AppendError::Conflict { .. })));
    assert_eq!(count(&pool).await, 2);
}

#[sqlx::test(migrator = "eventstore::schema::MIGRATOR")]
async fn of_concurrent_writers_at_one_version_exactly_one_wins(pool: PgPool) {
    let stream = Uuid::new_v4();
    append_now(&pool, stream, 0, &[event(0)]).await.unwrap();
    let writers: Vec<_> = (0..8)
        .map(|n| {
            let pool = pool.clone();
            tokio::spawn(async move { append_now(&pool, stream, 1, &[event(n)]).await })
        })
        .collect();
    let mut won = 0;
    for writer in writers {
        match writer.await.unwrap() {
            Ok(appended) => {
                won += 1;
                assert_eq!(appended.version, 2);
            }
            Err(AppendError::Conflict { .. }) => {}
            Err(other) => panic!("unexpected error: {other}"),
        }
    }
    assert_eq!(won, 1);
    assert_eq!(count(&pool).await, 2);
}

#[sqlx::test(migrator = "eventstore::schema::MIGRATOR")]
async fn a_conflict_rolls_back_the_callers_other_writes(pool: PgPool) {
    let stream = Uuid::new_v4();
    append_now(&pool, stream, 0, &[event(1)]).await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    append(&mut tx, "counter", Uuid::new_v4(), 0, &[event(2)]).await.unwrap();
    assert!(append(&mut tx, "counter", stream, 0, &[event(3)]).await.is_err());
    drop(tx);
    assert_eq!(count(&pool).await, 1);
}

#[sqlx::test(migrator = "eventstore::schema::MIGRATOR")]
async fn the_global_log_reads_in_order_and_resumes_after_a_position(pool: PgPool) {
    let streams = [Uuid::new_v4(), Uuid::new_v4()];
    for round in 0..3 {
        for stream in streams {
            append_now(&pool, stream, round, &[event(round)]).await.unwrap();
        }
    }
    let all = read_all_eventually(&pool, Position::START, 100, 6).await;
    assert_eq!(all.len(), 6);
    assert!(all.windows(2).all(|w| w[0].position() < w[1].position()));

    let first_page = read_all_after(&pool, Position::START, 4).await.unwrap();
    let rest = read_all_after(&pool, first_page.last().unwrap().position(), 100).await.unwrap();
    let resumed: Vec<_> = first_page.iter().chain(&rest).map(|e| e.event_id).collect();
    assert_eq!(resumed, all.iter().map(|e| e.event_id).collect::<Vec<_>>());
}

#[sqlx::test(migrator = "eventstore::schema::MIGRATOR")]
async fn events_of_a_transaction_still_open_are_not_read_yet(pool: PgPool) {
    let mut open = pool.begin().await.unwrap();
    append(&mut open, "counter", Uuid::new_v4(), 0, &[event(1)]).await.unwrap();
    append_now(&pool, Uuid::new_v4(), 0, &[event(2)]).await.unwrap();

    // The later commit is held back too: handing it out first would let a reader's checkpoint
    // pass the open transaction's event.
    assert!(read_all_after(&pool, Position::START, 10).await.unwrap().is_empty());
    open.commit().await.unwrap();
    let all = read_all_eventually(&pool, Position::START, 10, 2).await;
    let payloads: Vec<i64> = all.iter().map(|e| e.data["n"].as_i64().unwrap()).collect();
    assert_eq!(payloads, vec![1, 2]);
}

#[sqlx::test(migrator = "eventstore::schema::MIGRATOR")]
async fn events_cannot_be_updated_deleted_or_truncated_even_by_a_superuser(pool: PgPool) {
    let is_superuser: bool = sqlx::query_scalar("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        .fetch_one(&pool)
        .await
        .unwrap();
    append_now(&pool, Uuid::new_v4(), 0, &[event(1)]).await.unwrap();
    for statement in [
        "UPDATE events SET data = '{\"n\": 2}'",
        "UPDATE events SET data = data WHERE false",
        "DELETE FROM events",
        "TRUNCATE events",
        "TRUNCATE events CASCADE",
    ] {
        let error = sqlx::query(statement).execute(&pool).await.expect_err(statement);
        assert!(error.to_string().contains("events are immutable"), "{statement}: {error}");
    }
    assert_eq!(count(&pool).await, 1);
    let data: serde_json::Value = sqlx::query_scalar("SELECT data FROM events").fetch_one(&pool).await.unwrap();
    assert_eq!(data, json!({"n": 1}));
    // The point of triggers: privileges would not stop a superuser, and the app may be one.
    println!("connected as superuser: {is_superuser}");
}

#[sqlx::test(migrator = "eventstore::schema::MIGRATOR")]
async fn a_stream_loads_from_the_newest_snapshot_of_its_versions_at_or_below_a_version(pool: PgPool) {
    use eventstore::snapshots::save_snapshot;
    use eventstore::{SnapshotVersion, read_stream_from_snapshot};
    let made_by = |schema, fold| SnapshotVersion { schema, fold };
    let stream = Uuid::new_v4();
    for version in 1..=12 {
        append_now(&pool, stream, version - 1, &[event(version)]).await.unwrap();
    }
    for version in [5, 10] {
        save_snapshot(&pool, stream, version, made_by(1, 1), &json!({ "at": version })).await.unwrap();
    }
    save_snapshot(&pool, stream, 11, made_by(2, 1), &json!({ "at": 11, "shape": "new" })).await.unwrap();
    save_snapshot(&pool, stream, 12, made_by(1, 2), &json!({ "at": 12, "fold": "new" })).await.unwrap();

    // (snapshot version, versions of the events after it)
    let load = async |up_to: i64, version: SnapshotVersion| {
        let (snapshot, events) = read_stream_from_snapshot(&pool, stream, up_to, version).await.unwrap();
        (snapshot.map(|s| s.stream_version), events.iter().map(|e| e.stream_version).collect::<Vec<_>>())
    };
    assert_eq!(load(i64::MAX, made_by(1, 1)).await, (Some(10), vec![11, 12]));
    assert_eq!(load(9, made_by(1, 1)).await, (Some(5), vec![6, 7, 8, 9]));
    assert_eq!(load(4, made_by(1, 1)).await, (None, vec![1, 2, 3, 4]));
    assert_eq!(load(10, made_by(1, 1)).await, (Some(10), vec![]));
    assert_eq!(load(i64::MAX, made_by(2, 1)).await, (Some(11), vec![12]));
    assert_eq!(load(i64::MAX, made_by(1, 2)).await, (Some(12), vec![]));
    assert_eq!(load(11, made_by(1, 2)).await, (None, (1..=11).collect::<Vec<_>>()));
    assert_eq!(load(i64::MAX, made_by(3, 1)).await, (None, (1..=12).collect::<Vec<_>>()));
    // Saving a version again keeps the first...
    save_snapshot(&pool, stream, 10, made_by(1, 1), &json!({ "at": "other" })).await.unwrap();
    let (kept, _) = read_stream_from_snapshot(&pool, stream, 10, made_by(1, 1)).await.unwrap();
    assert_eq!(kept.unwrap().state, json!({ "at": 10 }));
    // ...unless the one there was made by other versions, which loading would ignore.
    save_snapshot(&pool, stream, 12, made_by(1, 1), &json!({ "at": 12, "fold": "old" })).await.unwrap();
    assert_eq!(load(i64::MAX, made_by(1, 1)).await, (Some(12), vec![]));
    assert_eq!(load(i64::MAX, made_by(1, 2)).await, (None, (1..=12).collect::<Vec<_>>()));
}

/// The next transaction id the cluster will assign, without assigning one.
async fn next_transaction_id(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint").fetch_one(pool).await.unwrap()
}

#[sqlx::test(migrator = "eventstore::schema::MIGRATOR")]
async fn a_store_written_on_this_cluster_passes_the_transaction_id_check(pool: PgPool) {
    use eventstore::check_transaction_ids;
    check_transaction_ids(&pool).await.expect("an empty store passes");
    append_now(&pool, Uuid::new_v4(), 0, &[event(1), event(2)]).await.unwrap();
    check_transaction_ids(&pool).await.expect("a store written here passes");
}

#[sqlx::test(migrator = "eventstore::schema::MIGRATOR")]
async fn events_from_transaction_ids_this_cluster_has_not_reached_fail_the_check(pool: PgPool) {
    use eventstore::guard::safe_next_transaction_id;
    use eventstore::{ClusterMoveError, check_transaction_ids};
    append_now(&pool, Uuid::new_v4(), 0, &[event(1)]).await.unwrap();
    // As a dump restored into a younger cluster leaves them.
    let restored = next_transaction_id(&pool).await + 1_000_000;
    sqlx::query(
        "INSERT INTO events (transaction_id, event_id, stream_type, stream_id, stream_version, event_type, data)
         VALUES ($1::text::xid8, $2, 'counter', $3, 1, 'Counted', '{}')",
    )
    .bind(restored.to_string())
    .bind(Uuid::new_v4())
    .bind(Uuid::new_v4())
    .execute(&pool)
    .await
    .unwrap();

    let error = check_transaction_ids(&pool).await.expect_err("the check fails");
    let ClusterMoveError::TransactionIdsBehind { newest_stored, next_assigned } = error else {
        panic!("unexpected error: {error}");
    };
    assert_eq!(newest_stored, restored);
    assert!(next_assigned < restored);
    let message = error.to_string();
    let reset = safe_next_transaction_id(restored);
    let remedy = format!("pg_resetwal -e {} -x {} <data directory>", reset.epoch, reset.xid);
    assert!(message.contains("vacuumdb --all --freeze") && message.contains(&remedy), "{message}");
}

#[sqlx::test(migrator = "eventstore::schema::MIGRATOR")]
async fn a_command_is_recorded_once(pool: PgPool) {
    use eventstore::processed_commands::{RecordError, find_processed, record_processed};
    let command = Uuid::new_v4();
    assert!(find_processed(&pool, command).await.unwrap().is_none());
    let mut first = pool.begin().await.unwrap();
    record_processed(&mut first, command, &json!({"n": 1}), &json!("ok")).await.unwrap();
    // A concurrent second recording waits for the first and fails once it commits.
    let second = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut second = pool.begin().await.unwrap();
            record_processed(&mut second, command, &json!({"n": 1}), &json!("again")).await
        })
    };
    someone_waits_for_a_lock(&pool).await;
    first.commit().await.unwrap();
    assert!(matches!(second.await.unwrap(), Err(RecordError::AlreadyRecorded(id)) if id == command));
    let found = find_processed(&pool, command).await.unwrap().unwrap();
    assert_eq!(found.outcome, json!("ok"));
}

#[sqlx::test(migrator = "eventstore::schema::MIGRATOR")]
async fn streams_appended_together_commit_at_once_and_a_group_that_cannot_be_written_is_left_out(pool: PgPool) {
    use eventstore::store::{GroupedCommand, StreamGroup, StreamKind, append_streams_and_record};
    // Given four streams at version 1, and a command recorded before.
    let [ready, moved_on, retried, also_ready] = [(); 4].map(|_| Uuid::new_v4());
    let mut first_events = Vec::new();
    for stream in [ready, moved_on, retried, also_ready] {
        let first = event(0);
        first_events.push(first.event_id);
        append_now(&pool, stream, 0, std::slice::from_ref(&first)).await.unwrap();
    }
    let recorded_before = Uuid::new_v4();
    let mut conn = pool.acquire().await.unwrap();
    eventstore::processed_commands::record_processed(&mut conn, recorded_before, &json!({}), &json!({})).await.unwrap();
    let outcome = json!({"accepted": {"version": 0, "position": "0:0"}});
    let command =
        |command_id, through| GroupedCommand { command_id, request: json!({}), outcome: outcome.clone(), through };
    let group = |stream, expected, events: Vec<NewEvent>, commands| StreamGroup {
        stream_id: stream,
        expected,
        events,
        commands,
        // Each with the state after it, as if a snapshot were due.
        snapshot: Some(json!({ "of": stream })),
    };
    let (one, two, three) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());

    // When four groups go in one statement, each with a snapshot: one of two commands (three
    // events), one decided on an event the stream no longer ends with, one with the recorded
    // command, one of one command.
    let groups = [
        group(
            ready,
            (1, Some(first_events[0])),
            vec![event(1), event(2), event(3)],
            vec![command(one, 1), command(two, 3)],
        ),
        group(moved_on, (1, Some(Uuid::new_v4())), vec![event(1)], vec![command(Uuid::new_v4(), 1)]),
        group(retried, (1, None), vec![event(1)], vec![command(recorded_before, 1)]),
        group(also_ready, (1, None), vec![event(1)], vec![command(three, 1)]),
    ];
    let kind = StreamKind { version_at: &["accepted", "version"], position_at: &["accepted", "position"], ..COUNTER };
    let written = append_streams_and_record(&mut conn, kind, &groups).await.unwrap();

    // Then the two that could be written were, in one transaction, each command answered with
    // its own last event; the other two wrote nothing.
    let written: [Option<Vec<eventstore::Appended>>; 4] = written.try_into().unwrap();
    let [Some(ready_answers), None, None, Some(also_ready_answers)] = written else {
        panic!("the groups that could be written are not the ones written");
    };
    assert_eq!(ready_answers.iter().map(|appended| appended.version).collect::<Vec<_>>(), [2, 4]);
    assert_eq!(also_ready_answers[0].version, 2);
    let transaction = ready_answers[0].position.transaction_id;
    assert!(
        ready_answers.iter().chain(&also_ready_answers).all(|appended| appended.position.transaction_id == transaction)
    );
    let pool = &pool;
    let versions = |stream| async move {
        read_stream(pool, stream, 0).await.unwrap().iter().map(|event| event.stream_version).collect::<Vec<_>>()
    };
    assert_eq!(versions(ready).await, [1, 2, 3, 4]);
    assert_eq!(versions(moved_on).await, [1]);
    assert_eq!(versions(retried).await, [1]);
    assert_eq!(versions(also_ready).await, [1, 2]);
    // Each command's outcome holds its own version and position.
    for (command_id, appended) in [(one, ready_answers[0]), (two, ready_answers[1]), (three, also_ready_answers[0])] {
        let stored: serde_json::Value =
            sqlx::query_scalar("SELECT outcome FROM processed_commands WHERE command_id = $1")
                .bind(command_id)
                .fetch_one(pool)
                .await
                .unwrap();
        assert_eq!(
            stored,
            json!({"accepted": {"version": appended.version, "position": appended.position.to_string()}})
        );
    }
    // The written groups' snapshots are stored at their last version, and only theirs.
    let snapshots: Vec<(Uuid, i64)> =
        sqlx::query_as("SELECT stream_id, stream_version FROM snapshots ORDER BY stream_version, stream_id")
            .fetch_all(pool)
            .await
            .unwrap();
    let mut expected = vec![(also_ready, 2), (ready, 4)];
    expected.sort_by_key(|&(stream, version)| (version, stream));
    assert_eq!(snapshots, expected);
}

#[sqlx::test(migrator = "eventstore::schema::MIGRATOR")]
async fn a_group_commit_that_meets_a_concurrent_append_leaves_only_that_stream_out(pool: PgPool) {
    use eventstore::group_commit::GroupCommit;
    // Given two streams at version 1, and another writer's uncommitted append to the first.
    let (contended, free) = (Uuid::new_v4(), Uuid::new_v4());
    for stream in [contended, free] {
        append_now(&pool, stream, 0, &[event(0)]).await.unwrap();
    }
    let mut writer = pool.begin().await.unwrap();
    append(&mut writer, "counter", contended, 1, &[event(1)]).await.unwrap();
    // A pool of one connection, held for now, so that both groups wait for one statement.
    let (one, held) = pool_of_one_held(&pool).await;
    let commit = std::sync::Arc::new(GroupCommit::on(one.clone(), COUNTER));
    // When both streams' groups go in one statement, which waits for the other writer ...
    let answers = [contended, free].map(|stream| {
        let (commit, group) = (commit.clone(), group_of_one(stream, Uuid::new_v4()));
        tokio::spawn(async move { commit.append(group).await })
    });
    eventually("both groups waiting", PATIENCE, || async { when(commit.waiting(), |&waiting| waiting == 2) }).await;
    drop(held);
    someone_waits_for_a_lock(&pool).await;
    // ... and the other writer commits.
    writer.commit().await.unwrap();

    // Then the free stream's group is written and the contended one's is left out, not lost
    // with it.
    let [contended_answer, free_answer] = answers;
    let answers = [contended_answer.await.unwrap(), free_answer.await.unwrap()];
    assert!(answers[0].is_none(), "the contended stream moved on: {:?}", answers[0]);
    assert_eq!(answers[1].as_ref().map(|appended| appended[0].version), Some(2));
    assert_eq!(read_stream(&pool, free, 0).await.unwrap().len(), 2);
    assert_eq!(read_stream(&pool, contended, 0).await.unwrap().len(), 2, "the other writer's event only");
}

/// The streams of the group commit tests: counters, whose outcomes hold a version and a position.
const COUNTER: eventstore::store::StreamKind = eventstore::store::StreamKind {
    stream_type: "counter",
    version_at: &["version"],
    position_at: &["position"],
    snapshot_version: eventstore::SnapshotVersion { schema: 1, fold: 1 },
};

/// A pool of one connection, and that connection: while it is held, a group commit on the pool
/// gathers the groups sent to it for one statement.
async fn pool_of_one_held(pool: &PgPool) -> (PgPool, sqlx::pool::PoolConnection<sqlx::Postgres>) {
    let one = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with(pool.connect_options().as_ref().clone())
        .await
        .unwrap();
    let held = one.acquire().await.unwrap();
    (one, held)
}

fn group_of_one(stream: Uuid, command_id: Uuid) -> eventstore::store::StreamGroup {
    eventstore::store::StreamGroup {
        stream_id: stream,
        expected: (1, None),
        events: vec![event(1)],
        commands: vec![eventstore::store::GroupedCommand {
            command_id,
            request: json!({}),
            outcome: json!({"version": 0, "position": "0:0"}),
            through: 1,
        }],
        snapshot: None,
    }
}

#[sqlx::test(migrator = "eventstore::schema::MIGRATOR")]
async fn a_command_sent_to_two_streams_at_once_does_not_fail_the_others_groups(pool: PgPool) {
    use eventstore::group_commit::GroupCommit;
    // Given three streams at version 1, and groups gathered for one statement: the same
    // command id in the first two, another in the third.
    let [first, second, third] = [(); 3].map(|_| Uuid::new_v4());
    for stream in [first, second, third] {
        append_now(&pool, stream, 0, &[event(0)]).await.unwrap();
    }
    let (one, held) = pool_of_one_held(&pool).await;
    let commit = std::sync::Arc::new(GroupCommit::on(one.clone(), COUNTER));
    let (twice, once) = (Uuid::new_v4(), Uuid::new_v4());
    let mut answers = Vec::new();
    for (stream, command_id) in [(first, twice), (second, twice), (third, once)] {
        let sender = commit.clone();
        answers.push(tokio::spawn(async move { sender.append(group_of_one(stream, command_id)).await }));
        let sent = answers.len();
        eventually("the group waiting", PATIENCE, || async { when(commit.waiting(), |&waiting| waiting == sent) })
            .await;
    }

    // When they are sent.
    drop(held);
    let mut written = Vec::new();
    for answer in answers {
        written.push(answer.await.unwrap());
    }

    // Then the first and the third are written, in one transaction, and the repeated command
    // is left out of the next statement as recorded: applied once.
    let [Some(first_answer), None, Some(third_answer)] = <[_; 3]>::try_from(written).unwrap() else {
        panic!("the command sent twice was not applied exactly once, or failed the others");
    };
    assert_eq!(first_answer[0].position.transaction_id, third_answer[0].position.transaction_id);
    assert_eq!(read_stream(&pool, second, 0).await.unwrap().len(), 1);
}

#[sqlx::test(migrator = "eventstore::schema::MIGRATOR")]
async fn a_group_commit_waits_for_another_sessions_row_no_longer_than_a_writer_does(pool: PgPool) {
    use eventstore::group_commit::GroupCommit;
    // Given a stream whose next version another session has inserted and holds uncommitted
    // (no writer of the store's: it would be ended after 3 s idle in its transaction).
    let stream = Uuid::new_v4();
    append_now(&pool, stream, 0, &[event(0)]).await.unwrap();
    let mut other = pool.begin().await.unwrap();
    append(&mut other, "counter", stream, 1, &[event(1)]).await.unwrap();

    // When a group of that stream is sent, with the writers' connection settings ...
    let commit = std::sync::Arc::new(GroupCommit::new(&pool, COUNTER));
    let written = commit.append(group_of_one(stream, Uuid::new_v4())).await;

    // ... then its statement gives up waiting while the other session still holds the row,
    // and nothing of the group is written.
    assert!(written.is_none());
    other.rollback().await.unwrap();
    assert_eq!(read_stream(&pool, stream, 0).await.unwrap().len(), 1);
}

//! The generic command loop with a tally of its own (no accounts anywhere), against a real
//! Postgres migrated by the store's own migrations alone.

use std::time::Duration;

use eventstore::{
    Aggregate, AppendNotifier, CommandEnvelope, CommandError, CommandHandler, LATEST, NewEvent, RecordedEvent,
    SnapshotVersion, WriteOptions, read_stream,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::PgPool;
use testkit::{PATIENCE, eventually, when};
use uuid::Uuid;

mod common;
use common::someone_waits_for_a_lock;

/// A tally that must be opened before it counts, and never passes its limit.
struct Tally;

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct TallyState {
    opened: bool,
    total: u32,
}

enum TallyCommand {
    Open,
    Add(u32),
    /// Two additions as one command: two events.
    AddBoth(u32, u32),
}

#[derive(Debug, PartialEq)]
enum TallyEvent {
    Opened,
    Added(u32),
}

const LIMIT: u32 = 1000;

#[derive(Debug, PartialEq, thiserror::Error, Serialize, Deserialize)]
enum Refusal {
    #[error("the tally is not open")]
    NotOpen,
    #[error("the tally is open already")]
    AlreadyOpen,
    #[error("the tally would pass {LIMIT}")]
    OverLimit,
}

#[derive(Debug, thiserror::Error)]
#[error("unreadable tally event {0}")]
struct Unreadable(String);

impl Aggregate for Tally {
    const STREAM_TYPE: &'static str = "tally";
    const SNAPSHOT_VERSION: SnapshotVersion = SnapshotVersion { schema: 1, fold: 1 };

    type State = TallyState;
    type Command = TallyCommand;
    type Event = TallyEvent;
    type Refusal = Refusal;
    type DecodeError = Unreadable;

    fn decide(state: &TallyState, command: &TallyCommand) -> Result<Vec<TallyEvent>, Refusal> {
        match command {
            TallyCommand::Open if state.opened => Err(Refusal::AlreadyOpen),
            TallyCommand::Open => Ok(vec![TallyEvent::Opened]),
            TallyCommand::Add(_) if !state.opened => Err(Refusal::NotOpen),
            TallyCommand::Add(n) if state.total + n > LIMIT => Err(Refusal::OverLimit),
            TallyCommand::Add(n) => Ok(vec![TallyEvent::Added(*n)]),
            TallyCommand::AddBoth(..) if !state.opened => Err(Refusal::NotOpen),
            TallyCommand::AddBoth(a, b) if state.total + a + b > LIMIT => Err(Refusal::OverLimit),
            TallyCommand::AddBoth(a, b) => Ok(vec![TallyEvent::Added(*a), TallyEvent::Added(*b)]),
        }
    }

    fn evolve(state: TallyState, event: &TallyEvent) -> TallyState {
        match event {
            TallyEvent::Opened => TallyState { opened: true, ..state },
            TallyEvent::Added(n) => TallyState { total: state.total + n, ..state },
        }
    }

    fn encode(event: &TallyEvent, metadata: &Value) -> NewEvent {
        let (event_type, data) = match event {
            TallyEvent::Opened => ("Opened", json!({})),
            TallyEvent::Added(n) => ("Added", json!({ "n": n })),
        };
        NewEvent {
            event_id: Uuid::new_v4(),
            event_type: event_type.into(),
            schema_version: 1,
            data,
            metadata: metadata.clone(),
        }
    }

    fn decode(event: &RecordedEvent) -> Result<TallyEvent, Unreadable> {
        match (event.event_type.as_str(), event.data.get("n").and_then(Value::as_u64)) {
            ("Opened", _) => Ok(TallyEvent::Opened),
            ("Added", Some(n)) => Ok(TallyEvent::Added(n as u32)),
            _ => Err(Unreadable(event.event_type.clone())),
        }
    }

    fn request(stream_id: Uuid, command: &TallyCommand) -> Value {
        match command {
            TallyCommand::Open => json!({ "open": stream_id }),
            TallyCommand::Add(n) => json!({ "add": n, "to": stream_id }),
            TallyCommand::AddBoth(a, b) => json!({ "add": [a, b], "to": stream_id }),
        }
    }
}

type TallyError = CommandError<Refusal, Unreadable>;

fn handler(pool: &PgPool, options: WriteOptions) -> CommandHandler<Tally> {
    CommandHandler::new(pool.clone(), AppendNotifier::new(), options)
}

fn envelope(stream_id: Uuid, command: TallyCommand) -> CommandEnvelope<TallyCommand> {
    sent_as(Uuid::new_v4(), stream_id, command)
}

/// A command under a command id of the test's choosing: a retry, or a reuse.
fn sent_as(command_id: Uuid, stream_id: Uuid, command: TallyCommand) -> CommandEnvelope<TallyCommand> {
    CommandEnvelope {
        command_id,
        correlation_id: command_id,
        stream_id,
        command,
        causation_id: None,
        metadata: Default::default(),
    }
}

/// An open, warm tally whose next version another writer holds uncommitted, and a first
/// command (`Add(1)`) sent to it, waiting in Postgres for that writer: the commands sent next
/// wait in line behind it.
async fn held_by_another_writer(
    pool: &PgPool,
    tallies: &CommandHandler<Tally>,
) -> (Uuid, sqlx::Transaction<'static, sqlx::Postgres>, tokio::task::JoinHandle<Result<eventstore::Accepted, TallyError>>)
{
    let tally = Uuid::new_v4();
    tallies.handle(envelope(tally, TallyCommand::Open)).await.unwrap();
    let mut blocker = eventstore::begin_with_stream_lock(pool, tally).await.unwrap();
    let blocked = Tally::encode(&TallyEvent::Added(500), &json!({}));
    eventstore::append(&mut blocker, Tally::STREAM_TYPE, tally, 1, &[blocked]).await.unwrap();
    let first = {
        let tallies = tallies.clone();
        tokio::spawn(async move { tallies.handle(envelope(tally, TallyCommand::Add(1))).await })
    };
    someone_waits_for_a_lock(pool).await;
    (tally, blocker, first)
}

async fn load(pool: &PgPool, tally: Uuid) -> eventstore::Loaded<Tally> {
    let mut conn = pool.acquire().await.unwrap();
    eventstore::aggregate::load::<Tally>(&mut conn, tally, LATEST).await.unwrap()
}

#[sqlx::test(migrator = "eventstore::schema::MIGRATOR")]
async fn a_command_sent_again_is_answered_as_the_first_time_and_applied_once(pool: PgPool) {
    let tallies = handler(&pool, WriteOptions::default());
    let tally = Uuid::new_v4();
    tallies.handle(envelope(tally, TallyCommand::Open)).await.unwrap();

    let add = Uuid::new_v4();
    let first = tallies.handle(sent_as(add, tally, TallyCommand::Add(5))).await.unwrap();
    let again = tallies.handle(sent_as(add, tally, TallyCommand::Add(5))).await.unwrap();
    assert_eq!(first, again);
    assert_eq!(first.version, 2);
    assert_eq!(load(&pool, tally).await.state, TallyState { opened: true, total: 5 });

    let events = read_stream(&pool, tally, 0).await.unwrap();
    assert_eq!(events.len(), 2);
    assert!(events.iter().all(|event| event.stream_type == "tally"));
    let metadata = &events[1].metadata;
    assert_eq!(metadata["commandId"], json!(add));
    assert_eq!(metadata["causationId"], metadata["commandId"]);
}

#[sqlx::test(migrator = "eventstore::schema::MIGRATOR")]
async fn a_refusal_is_remembered_and_a_reused_id_is_refused(pool: PgPool) {
    let tallies = handler(&pool, WriteOptions::default());
    let tally = Uuid::new_v4();
    let early = Uuid::new_v4();
    let refused = tallies.handle(sent_as(early, tally, TallyCommand::Add(1))).await;
    assert!(matches!(refused, Err(TallyError::Rejected(Refusal::NotOpen))), "{refused:?}");

    tallies.handle(envelope(tally, TallyCommand::Open)).await.unwrap();
    // Now it would be accepted, but this command was answered already.
    let retried = tallies.handle(sent_as(early, tally, TallyCommand::Add(1))).await;
    assert!(matches!(retried, Err(TallyError::Rejected(Refusal::NotOpen))), "{retried:?}");
    let reused = tallies.handle(sent_as(early, tally, TallyCommand::Add(2))).await;
    assert!(matches!(reused, Err(TallyError::CommandIdReused { .. })), "{reused:?}");
    assert_eq!(load(&pool, tally).await.version, 1, "nothing but the opening was written");
}

#[sqlx::test(migrator = "eventstore::schema::MIGRATOR")]
async fn concurrent_commands_on_one_stream_all_apply_in_order_with_or_without_the_lock(pool: PgPool) {
    for serialize_writers in [true, false] {
        let options = WriteOptions { serialize_writers, max_attempts: 200, ..WriteOptions::default() };
        let tallies = handler(&pool, options);
        let tally = Uuid::new_v4();
        tallies.handle(envelope(tally, TallyCommand::Open)).await.unwrap();
        let writers: Vec<_> = (0..20)
            .map(|_| {
                let tallies = tallies.clone();
                tokio::spawn(async move { tallies.handle(envelope(tally, TallyCommand::Add(1))).await })
            })
            .collect();
        for writer in writers {
            writer.await.unwrap().expect("every writer gets its turn");
        }
        let versions: Vec<i64> =
            read_stream(&pool, tally, 0).await.unwrap().iter().map(|event| event.stream_version).collect();
        assert_eq!(versions, (1..=21).collect::<Vec<_>>(), "serialize_writers: {serialize_writers}");
        assert_eq!(load(&pool, tally).await.state.total, 20);
    }
}

#[sqlx::test(migrator = "eventstore::schema::MIGRATOR")]
async fn snapshots_are_taken_at_the_interval_and_loading_from_them_equals_the_whole_fold(pool: PgPool) {
    let tallies = handler(&pool, WriteOptions { snapshot_interval: 4, ..WriteOptions::default() });
    let tally = Uuid::new_v4();
    tallies.handle(envelope(tally, TallyCommand::Open)).await.unwrap();
    for n in 1..=9 {
        tallies.handle(envelope(tally, TallyCommand::Add(n))).await.unwrap();
    }
    let snapshots: Vec<i64> =
        sqlx::query_scalar("SELECT stream_version FROM snapshots WHERE stream_id = $1 ORDER BY 1")
            .bind(tally)
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(snapshots, [4, 8]);

    let loaded = load(&pool, tally).await;
    assert_eq!(loaded.snapshot_version, Some(8));
    assert_eq!(loaded.events.len(), 2, "only the events after the snapshot are read");
    let whole = read_stream(&pool, tally, 0)
        .await
        .unwrap()
        .iter()
        .map(|event| Tally::decode(event).unwrap())
        .fold(TallyState::default(), |state, event| Tally::evolve(state, &event));
    assert_eq!(loaded.state, whole);
    assert_eq!(whole.total, 45);

    let over = tallies.handle(envelope(tally, TallyCommand::Add(LIMIT))).await;
    assert!(matches!(over, Err(TallyError::Rejected(Refusal::OverLimit))), "{over:?}");
}

#[sqlx::test(migrator = "eventstore::schema::MIGRATOR")]
async fn a_stream_whose_turns_are_taken_too_long_is_refused_as_busy(pool: PgPool) {
    let options = WriteOptions { turn_patience: Duration::from_millis(50), ..WriteOptions::default() };
    let tallies = handler(&pool, options);
    // Another writer's transaction has appended the stream's next event and not yet committed:
    // the first command's append waits on it (holding the turn) whichever path it takes — the
    // warm one meets the uncommitted row in the unique index, the locked one the stream lock
    // taken there too — and the second runs out of patience in line and writes nothing.
    let (tally, blocker, first) = held_by_another_writer(&pool, &tallies).await;
    let second = tallies.handle(envelope(tally, TallyCommand::Add(1))).await;
    assert!(matches!(second, Err(TallyError::Busy(_))), "{second:?}");
    blocker.rollback().await.unwrap();
    first.await.unwrap().expect("the first command goes ahead once the lock is free");
    assert_eq!(load(&pool, tally).await.state.total, 1);
}

#[sqlx::test(migrator = "eventstore::schema::MIGRATOR")]
async fn a_lock_wait_that_runs_out_leaves_the_connection_fit_for_the_next_user(pool: PgPool) {
    // Given a pool of one connection, and a stream another session holds locked.
    let one = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with(pool.connect_options().as_ref().clone())
        .await
        .unwrap();
    let tallies = handler(&one, WriteOptions::default());
    let tally = Uuid::new_v4();
    let mut blocker = pool.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(eventstore::stream_lock_key(tally))
        .execute(&mut *blocker)
        .await
        .unwrap();
    // When a command on it waits for the lock until its wait runs out ...
    let refused = tallies.handle(envelope(tally, TallyCommand::Open)).await;
    assert!(refused.is_err(), "{refused:?}");
    // ... then the connection it used serves the next user as if nothing happened.
    let answer: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&one)
        .await
        .expect("the connection is not left in a failed transaction");
    assert_eq!(answer, 1);
    blocker.rollback().await.unwrap();
    tallies.handle(envelope(tally, TallyCommand::Open)).await.expect("the stream is free again");
}

#[sqlx::test(migrator = "eventstore::schema::MIGRATOR")]
async fn commands_waiting_for_a_stream_share_one_commit_each_with_its_own_outcome(pool: PgPool) {
    // Given a warm tally whose next append waits on another writer's uncommitted event ...
    let tallies = handler(&pool, WriteOptions::default());
    let (tally, blocker, first) = held_by_another_writer(&pool, &tallies).await;
    // ... and, queued behind it in this order: two additions (the second two events), the
    // first of them again (a retry sent at once), one that would pass the limit, and one more.
    let (ten, twenty, too_much, thirty) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let queued = [
        (ten, TallyCommand::Add(10)),
        (twenty, TallyCommand::AddBoth(15, 5)),
        (ten, TallyCommand::Add(10)),
        (too_much, TallyCommand::Add(995)),
        (thirty, TallyCommand::Add(30)),
    ];
    let mut answers = Vec::new();
    for (position, (command_id, command)) in queued.into_iter().enumerate() {
        let sender = tallies.clone();
        answers.push(tokio::spawn(async move { sender.handle(sent_as(command_id, tally, command)).await }));
        eventually("the command in line", PATIENCE, || async {
            when(tallies.waiting(tally), |&waiting| waiting == position + 1)
        })
        .await;
    }

    // When the other writer gives up, and the first command goes ahead.
    blocker.rollback().await.unwrap();
    let first = first.await.unwrap().expect("the first command goes ahead");
    let mut outcomes = Vec::new();
    for answer in answers {
        outcomes.push(answer.await.unwrap());
    }

    // Then the two commands before the refusal were committed together, each answered with
    // the version of its own last event ...
    let [ten_answer, twenty_answer, again, too_much_answer, thirty_answer] = outcomes.try_into().unwrap();
    let (ten_answer, twenty_answer, thirty_answer) =
        (ten_answer.unwrap(), twenty_answer.unwrap(), thirty_answer.unwrap());
    assert_eq!([first.version, ten_answer.version, twenty_answer.version], [2, 3, 5]);
    assert_eq!(ten_answer.position.transaction_id, twenty_answer.position.transaction_id, "one commit for both");
    assert_ne!(first.position.transaction_id, ten_answer.position.transaction_id);
    assert!(ten_answer.position < twenty_answer.position);
    // ... the retry was answered as the first time, the refusal refused on the state after
    // them, and the last command accepted after it.
    assert_eq!(again.unwrap(), ten_answer);
    assert!(matches!(too_much_answer, Err(TallyError::Rejected(Refusal::OverLimit))), "{too_much_answer:?}");
    assert_eq!(thirty_answer.version, 6);
    let added: Vec<(i64, Value)> = read_stream(&pool, tally, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|event| (event.stream_version, event.data["n"].clone()))
        .collect();
    let expected = [(1, Value::Null), (2, json!(1)), (3, json!(10)), (4, json!(15)), (5, json!(5)), (6, json!(30))];
    assert_eq!(added, expected);

    // And each command's remembered outcome is its own: sent again, each is answered alike.
    for (command_id, command, expected) in [
        (ten, TallyCommand::Add(10), ten_answer),
        (twenty, TallyCommand::AddBoth(15, 5), twenty_answer),
        (thirty, TallyCommand::Add(30), thirty_answer),
    ] {
        let replayed = tallies.handle(sent_as(command_id, tally, command)).await.unwrap();
        assert_eq!(replayed, expected);
    }
    let replayed = tallies.handle(sent_as(too_much, tally, TallyCommand::Add(995))).await;
    assert!(matches!(replayed, Err(TallyError::Rejected(Refusal::OverLimit))), "{replayed:?}");
    assert_eq!(load(&pool, tally).await.state.total, 61);
}

#[sqlx::test(migrator = "eventstore::schema::MIGRATOR")]
async fn a_command_whose_caller_left_while_it_waited_in_line_writes_nothing(pool: PgPool) {
    // Given a tally whose next append waits on another writer's uncommitted event, and three
    // commands in line behind the one waiting.
    let tallies = handler(&pool, WriteOptions::default());
    let (tally, blocker, first) = held_by_another_writer(&pool, &tallies).await;
    let send = |n| {
        let tallies = tallies.clone();
        tokio::spawn(async move { tallies.handle(envelope(tally, TallyCommand::Add(n))).await })
    };
    let mut line = Vec::new();
    for n in [10, 20, 30] {
        line.push(send(n));
        eventually("the command in line", PATIENCE, || async {
            when(tallies.waiting(tally), |&waiting| waiting == line.len())
        })
        .await;
    }

    // When the caller of the second in line leaves (a client gone, a request timed out) ...
    let [ten, twenty, thirty] = line.try_into().unwrap();
    twenty.abort();
    assert!(twenty.await.unwrap_err().is_cancelled());
    blocker.rollback().await.unwrap();

    // ... then the others are applied, and its command is not.
    first.await.unwrap().unwrap();
    ten.await.unwrap().unwrap();
    thirty.await.unwrap().unwrap();
    let added: Vec<Value> =
        read_stream(&pool, tally, 0).await.unwrap().into_iter().skip(1).map(|event| event.data["n"].clone()).collect();
    assert_eq!(added, [json!(1), json!(10), json!(30)]);
}

#[sqlx::test(migrator = "eventstore::schema::MIGRATOR")]
async fn a_group_ends_at_a_snapshot_due_and_the_commands_after_it_form_the_next(pool: PgPool) {
    // Given a tally that snapshots every 4 events, held behind another writer at version 1 ...
    let tallies = handler(&pool, WriteOptions { snapshot_interval: 4, ..WriteOptions::default() });
    let (tally, blocker, first) = held_by_another_writer(&pool, &tallies).await;
    // ... and six additions in line behind the first command.
    let mut answers = Vec::new();
    for n in [10, 20, 30, 40, 50, 60] {
        let sender = tallies.clone();
        answers.push(tokio::spawn(async move { sender.handle(envelope(tally, TallyCommand::Add(n))).await }));
        let sent = answers.len();
        eventually("the command in line", PATIENCE, || async {
            when(tallies.waiting(tally), |&waiting| waiting == sent)
        })
        .await;
    }

    // When the other writer gives up.
    blocker.rollback().await.unwrap();
    first.await.unwrap().unwrap();
    let mut accepted = Vec::new();
    for answer in answers {
        accepted.push(answer.await.unwrap().unwrap());
    }

    // Then the first group ends with the command that reaches version 4, and the rest form one
    // group that ends at version 8 ...
    let versions: Vec<i64> = accepted.iter().map(|accepted| accepted.version).collect();
    assert_eq!(versions, [3, 4, 5, 6, 7, 8]);
    let transaction = |at: usize| accepted[at].position.transaction_id;
    assert_eq!(transaction(0), transaction(1), "10 and 20 in one statement");
    assert_ne!(transaction(1), transaction(2), "the group ended at the snapshot");
    assert!((3..6).all(|at| transaction(at) == transaction(2)), "30 to 60 in one statement");
    // ... each storing the state at its last version as the snapshot.
    let snapshots: Vec<(i64, Value)> =
        sqlx::query_as("SELECT stream_version, state FROM snapshots WHERE stream_id = $1 ORDER BY 1")
            .bind(tally)
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(snapshots, [(4, json!({"opened": true, "total": 31})), (8, json!({"opened": true, "total": 211}))]);
    let loaded = load(&pool, tally).await;
    assert_eq!((loaded.snapshot_version, loaded.state.total), (Some(8), 211));
}

//! Commands on warm streams: decided on the state this instance kept after its last command,
//! appended in one statement without the stream lock. Another writer having moved the stream
//! on, even to the same version with another history, makes the command decide again on what
//! the stream holds.

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use uuid::Uuid;

use crate::helpers::{TestApp, spawn_app};

async fn command(app: &TestApp, path: &str, account: &str, amount: f64) -> (StatusCode, Value) {
    let response = app.post(path, &json!({"accountId": account, "amount": amount})).await;
    let status = response.status();
    (status, response.json().await.unwrap())
}

#[sqlx::test(migrations = false)]
async fn a_warm_stream_another_instance_moved_on_is_decided_again_on_what_it_holds(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let first = spawn_app(db.clone()).await;
    let second = spawn_app(db).await;
    let id = first.account_id("alice", 100.0).await;
    // The first instance keeps the account warm at 150.
    assert_eq!(command(&first, "/api/commands/deposit", &id, 50.0).await.0, StatusCode::OK);
    // The second empties it.
    assert_eq!(command(&second, "/api/commands/withdraw", &id, 150.0).await.0, StatusCode::OK);
    // On its kept state the first would allow this; on the stream it must not.
    let (status, body) = command(&first, "/api/commands/withdraw", &id, 10.0).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], json!("insufficient_funds"), "{body}");
    // And an acceptance lands after the other instance's event, not over it.
    assert_eq!(command(&first, "/api/commands/deposit", &id, 5.0).await.0, StatusCode::OK);
    let events: Vec<(i64, String)> = sqlx::query_as(
        "SELECT stream_version, event_type FROM events WHERE stream_id = $1::uuid ORDER BY stream_version",
    )
    .bind(&id)
    .fetch_all(&first.pool)
    .await
    .unwrap();
    let types: Vec<&str> = events.iter().map(|(_, kind)| kind.as_str()).collect();
    assert_eq!(types, ["AccountCreated", "MoneyDeposited", "MoneyWithdrawn", "MoneyDeposited"]);
    assert_eq!(events.iter().map(|(version, _)| *version).collect::<Vec<_>>(), [1, 2, 3, 4]);
}

#[sqlx::test(migrations = false)]
async fn two_instances_withdrawing_at_once_from_warm_streams_never_overdraw(_: PgPoolOptions, db: PgConnectOptions) {
    let first = spawn_app(db.clone()).await;
    let second = spawn_app(db).await;
    let id = first.account_id("alice", 100.0).await;
    // Both keep the account warm.
    for app in [&first, &second] {
        assert_eq!(command(app, "/api/commands/deposit", &id, 0.5).await.0, StatusCode::OK);
    }
    let withdrawals = (0..40).map(|n| {
        let app = if n % 2 == 0 { &first } else { &second };
        command(app, "/api/commands/withdraw", &id, 10.0)
    });
    let answers = join_all(withdrawals).await;
    let accepted = answers.iter().filter(|(status, _)| *status == StatusCode::OK).count();
    for (status, body) in &answers {
        assert!(*status == StatusCode::OK || body["error"]["code"] == json!("insufficient_funds"), "{status}: {body}");
    }
    assert_eq!(accepted, 10, "101.00 holds ten withdrawals of 10.00");
    let balance: String = sqlx::query_scalar(
        "SELECT sum(CASE event_type WHEN 'MoneyWithdrawn' THEN -(data->>'amount')::numeric
                                    WHEN 'AccountCreated' THEN (data->>'initialBalance')::numeric
                                    ELSE (data->>'amount')::numeric END)::text
         FROM events WHERE stream_id = $1::uuid",
    )
    .bind(&id)
    .fetch_one(&first.pool)
    .await
    .unwrap();
    assert_eq!(balance, "1.00");
}

#[sqlx::test(migrations = false)]
async fn an_append_at_the_kept_version_over_another_history_is_a_conflict(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let stream = Uuid::new_v4();
    let event = |kind: &str| eventstore::NewEvent {
        event_id: Uuid::new_v4(),
        event_type: kind.to_owned(),
        schema_version: 1,
        data: json!({}),
        metadata: json!({}),
    };
    let first = event("First");
    let mut conn = app.pool.acquire().await.unwrap();
    eventstore::append(&mut conn, "test", stream, 0, std::slice::from_ref(&first)).await.unwrap();

    let request = json!({"what": "the test's"});
    let outcome = json!({"accepted": {"streamId": stream, "version": 0, "position": "0:0"}});
    let record = |command_id| eventstore::CommandRecord {
        command_id,
        request: &request,
        outcome: &outcome,
        version_at: &["accepted", "version"],
        position_at: &["accepted", "position"],
    };
    // Version 1 holds another event than the one the writer kept: a conflict, nothing recorded.
    let command_id = Uuid::new_v4();
    let kept_elsewhere = Some(Uuid::new_v4());
    let refused = eventstore::append_and_record(
        &mut conn,
        "test",
        stream,
        1,
        kept_elsewhere,
        &[event("Second")],
        &record(command_id),
    )
    .await;
    assert!(matches!(refused, Err(eventstore::AppendAndRecordError::Append(eventstore::AppendError::Conflict { .. }))));
    let recorded: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM processed_commands WHERE command_id = $1)")
        .bind(command_id)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert!(!recorded);

    // The event it kept: appended, and the outcome recorded with the version and position.
    let appended = eventstore::append_and_record(
        &mut conn,
        "test",
        stream,
        1,
        Some(first.event_id),
        &[event("Second")],
        &record(command_id),
    )
    .await
    .unwrap();
    assert_eq!(appended.version, 2);
    let stored: Value = sqlx::query_scalar("SELECT outcome FROM processed_commands WHERE command_id = $1")
        .bind(command_id)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(
        stored,
        json!({"accepted": {"streamId": stream, "version": 2, "position": appended.position.to_string()}})
    );
    // The same command id again: taken.
    let again =
        eventstore::append_and_record(&mut conn, "test", stream, 2, None, &[event("Third")], &record(command_id)).await;
    assert!(matches!(again, Err(eventstore::AppendAndRecordError::AlreadyRecorded(id)) if id == command_id));
}

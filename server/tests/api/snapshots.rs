//! Loading an account reads its latest snapshot and the events after it, and gives exactly
//! what folding the whole stream gives.

use backend::account_store::{FOLD_VERSION, LATEST, SNAPSHOT_SCHEMA_VERSION, load};
use backend::event_codec::decode;
use bank::domain::{AccountState, evolve};
use reqwest::StatusCode;
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use uuid::Uuid;

use crate::helpers::spawn_app_with;

const INTERVAL: i64 = 5;

#[sqlx::test(migrations = false)]
async fn loading_from_snapshots_equals_folding_the_whole_stream(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app_with(db, |settings| settings.write.snapshot_interval = INTERVAL).await;
    let id = app.account_id("alice", 1000.0).await;
    let account_id: Uuid = id.parse().unwrap();
    let mut conn = app.pool.acquire().await.unwrap();

    for n in 1..=23 {
        let route = if n % 4 == 0 { "/api/commands/withdraw" } else { "/api/commands/deposit" };
        let response = app.post(route, &json!({"accountId": id, "amount": n})).await;
        assert_eq!(response.status(), StatusCode::OK);

        let version = n + 1;
        let stream = eventstore::read_stream(&mut *conn, account_id, 0).await.unwrap();
        crate::helpers::load_keys(&app.pool, &stream).await;
        let loaded = load(&mut conn, account_id, LATEST).await.unwrap();
        let full_fold = stream
            .iter()
            .map(|event| decode(event).unwrap())
            .fold(AccountState::default(), |state, event| evolve(state, &event));
        assert_eq!(loaded.state, full_fold, "at version {version}");
        assert_eq!(loaded.version, version);
        assert!(
            (loaded.events.len() as i64) < INTERVAL,
            "read {} events at version {version}, from snapshot {:?}",
            loaded.events.len(),
            loaded.snapshot_version
        );
        if version >= INTERVAL {
            assert!(loaded.snapshot_version.is_some(), "no snapshot at version {version}");
        }
    }
    let snapshots: Vec<i64> = sqlx::query_scalar("SELECT stream_version FROM snapshots ORDER BY stream_version")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(snapshots, vec![5, 10, 15, 20]);

    // Loading at an older version uses the snapshot at or below it.
    let at_12 = load(&mut conn, account_id, 12).await.unwrap();
    assert_eq!(at_12.snapshot_version, Some(10));
    assert_eq!(at_12.version, 12);
    assert_eq!(at_12.events.len(), 2);
}

#[sqlx::test(migrations = false)]
async fn a_snapshot_of_an_unknown_shape_is_ignored(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app_with(db, |settings| settings.write.snapshot_interval = 0).await;
    let id = app.account_id("alice", 10.0).await;
    let account_id: Uuid = id.parse().unwrap();
    sqlx::query("INSERT INTO snapshots (stream_id, stream_version, schema_version, state) VALUES ($1, 1, $2, $3)")
        .bind(account_id)
        .bind(backend::account_store::SNAPSHOT_SCHEMA_VERSION)
        .bind(json!({"garbage": true}))
        .execute(&app.pool)
        .await
        .unwrap();
    let mut conn = app.pool.acquire().await.unwrap();
    let loaded = load(&mut conn, account_id, LATEST).await.unwrap();
    assert_eq!(loaded.snapshot_version, None);
    assert_eq!(loaded.state.balance().map(|b| b.to_string()), Some("10.00".into()));
    // And commands still work.
    let response = app.deposit(&id, 1).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[sqlx::test(migrations = false)]
async fn a_snapshot_made_by_another_fold_is_ignored(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app_with(db, |settings| settings.write.snapshot_interval = INTERVAL).await;
    let id = app.account_id("alice", 100.0).await;
    let account_id: Uuid = id.parse().unwrap();
    for _ in 2..=INTERVAL {
        let response = app.deposit(&id, 1).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    let mut conn = app.pool.acquire().await.unwrap();
    let snapshot = load(&mut conn, account_id, LATEST).await.unwrap();
    assert_eq!(snapshot.snapshot_version, Some(INTERVAL));
    assert_eq!(snapshot.state.balance().map(|b| b.to_string()), Some("104.00".into()));

    // The snapshot as a fold that read the events differently would have left it.
    let mut wrong_state = serde_json::to_value(&snapshot.state).unwrap();
    wrong_state["Open"]["balance"] = json!("999999.00");
    let made_by_fold = async |fold_version: i32| {
        sqlx::query(
            "UPDATE snapshots SET state = $1, fold_version = $2, schema_version = $3
             WHERE stream_id = $4 AND stream_version = $5",
        )
        .bind(&wrong_state)
        .bind(fold_version)
        .bind(SNAPSHOT_SCHEMA_VERSION)
        .bind(account_id)
        .bind(INTERVAL)
        .execute(&app.pool)
        .await
        .unwrap();
    };

    // Made by this fold, it would be believed: the fold version is all that keeps it out.
    made_by_fold(FOLD_VERSION).await;
    let believed = load(&mut conn, account_id, LATEST).await.unwrap();
    assert_eq!(believed.snapshot_version, Some(INTERVAL));
    assert_eq!(believed.state.balance().map(|b| b.to_string()), Some("999999.00".into()));

    made_by_fold(FOLD_VERSION - 1).await;
    let loaded = load(&mut conn, account_id, LATEST).await.unwrap();
    assert_eq!(loaded.snapshot_version, None);
    assert_eq!(loaded.version, INTERVAL);
    assert_eq!(loaded.state.balance().map(|b| b.to_string()), Some("104.00".into()));
    // Commands load the same way.
    let response = app.withdraw(&id, 500).await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["message"], json!("Insufficient funds: balance 104.00, withdrawal 500.00"));
}

//! A database restored into a cluster whose transaction ids are behind the stored ones would
//! take new events that no projection ever reads: the server refuses to start on it.

use eventstore::guard::safe_next_transaction_id;
use leptos::config::LeptosOptions;
use server::configuration::Settings;
use server::startup::{Application, StartupError};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use uuid::Uuid;

#[sqlx::test(migrations = false)]
async fn the_server_refuses_a_cluster_behind_the_stored_transaction_ids(_: PgPoolOptions, db: PgConnectOptions) {
    let pool = PgPool::connect_with(db.clone()).await.unwrap();
    backend::schema::migrate(&pool).await.unwrap();
    // An event as a dump restored into a younger cluster leaves it: its transaction id is one
    // this cluster has not reached.
    let restored: i64 = sqlx::query_scalar("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint + 1000000")
        .fetch_one(&pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO events (transaction_id, event_id, stream_type, stream_id, stream_version, event_type, data)
         VALUES ($1::text::xid8, $2, 'account', $3, 1, 'AccountCreated', '{}')",
    )
    .bind(restored.to_string())
    .bind(Uuid::new_v4())
    .bind(Uuid::new_v4())
    .execute(&pool)
    .await
    .unwrap();

    server::telemetry::init();
    let leptos_options = LeptosOptions::builder().output_name("cqrs-bank").site_root("target/site").build();
    let settings = Settings::new("127.0.0.1:0".parse().unwrap(), db, leptos_options);
    let Err(error) = Application::build(settings).await else {
        panic!("the server started on a cluster behind the stored transaction ids");
    };
    assert!(matches!(error, StartupError::ClusterMoved(_)), "{error:?}");
    let message = error.to_string();
    let reset = safe_next_transaction_id(restored);
    let remedy = format!("pg_resetwal -e {} -x {} <data directory>", reset.epoch, reset.xid);
    for says in [&restored.to_string(), "restored from a dump", "vacuumdb --all --freeze", &remedy] {
        assert!(message.contains(says), "{message:?} does not say {says:?}");
    }
}

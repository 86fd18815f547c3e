//! The schema as two owners keep it: the event store's tables from `eventstore/migrations`, the
//! read tables from `migrations/`. A database made before that split (by the application's
//! migrations alone, kept here as a fixture) is adopted as it is, data and all.

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Row};
use uuid::Uuid;

/// The application's migrations as they were before the store owned its schema.
static EARLIER_LAYOUT: sqlx::migrate::Migrator = sqlx::migrate!("tests/api/fixtures/schema_before_the_store_owned_it");

#[sqlx::test(migrations = false)]
async fn a_database_made_before_the_store_owned_its_schema_is_adopted_unchanged(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let earlier = PgPool::connect_with(db.clone()).await.unwrap();
    EARLIER_LAYOUT.run(&earlier).await.unwrap();
    let account_id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO events (event_id, stream_type, stream_id, stream_version, event_type, data)
         VALUES ($1, 'account', $2, 1, 'AccountCreated', '{}')",
    )
    .bind(Uuid::new_v4())
    .bind(account_id)
    .execute(&earlier)
    .await
    .unwrap();

    backend::schema::migrate(&earlier).await.expect("the earlier layout is adopted");
    backend::schema::migrate(&earlier).await.expect("migrating again changes nothing");
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE stream_id = $1")
        .bind(account_id)
        .fetch_one(&earlier)
        .await
        .unwrap();
    assert_eq!(kept, 1, "the stored events are kept");

    // The same database, another schema: what today's migrations make from nothing.
    sqlx::query("CREATE SCHEMA made_fresh").execute(&earlier).await.unwrap();
    let fresh = PgPool::connect_with(db.options([("search_path", "made_fresh")])).await.unwrap();
    backend::schema::migrate(&fresh).await.expect("a fresh database is migrated");

    let adopted = describe(&earlier, "public").await;
    let made = describe(&earlier, "made_fresh").await;
    assert!(!made.is_empty());
    let only_adopted: Vec<_> = adopted.iter().filter(|line| !made.contains(line)).collect();
    let only_made: Vec<_> = made.iter().filter(|line| !adopted.contains(line)).collect();
    assert!(
        only_adopted.is_empty() && only_made.is_empty(),
        "the adopted schema differs from a fresh one:\n  only adopted: {only_adopted:#?}\n  only fresh: {only_made:#?}"
    );
}

#[sqlx::test(migrations = false)]
async fn a_database_whose_earlier_migrations_did_not_finish_is_refused(_: PgPoolOptions, db: PgConnectOptions) {
    let pool = PgPool::connect_with(db).await.unwrap();
    // The earlier layout up to, not including, the stream types.
    for migration in EARLIER_LAYOUT.iter().filter(|migration| migration.version < 20261130000004) {
        sqlx::raw_sql(&migration.sql).execute(&pool).await.unwrap();
    }
    let error = backend::schema::migrate(&pool).await.expect_err("an unfinished database is refused");
    assert!(error.to_string().contains("start that release once"), "{error}");
}

/// Every column, constraint, index, trigger and function of a schema, as comparable lines. The
/// names of sqlx's history table are left out: it records how each database got there.
async fn describe(pool: &PgPool, schema: &str) -> Vec<String> {
    let rows = sqlx::query(
        "SELECT format('column %s.%s %s %s default %s identity %s', table_name, column_name, data_type,
                       is_nullable, column_default, is_identity)
         FROM information_schema.columns WHERE table_schema = $1 AND table_name <> '_sqlx_migrations'
         UNION ALL
         SELECT format('constraint %s on %s: %s', c.conname, t.relname, replace(pg_get_constraintdef(c.oid), $1 || '.', ''))
         FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid JOIN pg_namespace n ON n.oid = t.relnamespace
         WHERE n.nspname = $1 AND t.relname <> '_sqlx_migrations'
         UNION ALL
         SELECT format('index %s', replace(indexdef, ' ' || $1 || '.', ' '))
         FROM pg_indexes WHERE schemaname = $1 AND tablename <> '_sqlx_migrations'
         UNION ALL
         SELECT format('trigger %s on %s: %s', t.tgname, c.relname, replace(pg_get_triggerdef(t.oid), $1 || '.', ''))
         FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = $1 AND NOT t.tgisinternal
         UNION ALL
         SELECT format('function %s: %s', p.proname, p.prosrc)
         FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = $1",
    )
    .bind(schema)
    .fetch_all(pool)
    .await
    .unwrap();
    let mut lines: Vec<String> = rows.iter().map(|row| row.get(0)).collect();
    lines.sort();
    lines
}

//! The database as the server needs it: its tables brought up to date, and its role given what
//! it may do — each part of the server granting on its own tables.

use sqlx::PgPool;

/// Brings the database up to date: the event store's tables (its own migrations), then the
/// bank's tables (the workspace's `migrations/` folder), then the read tables' rebuild copies
/// ([`crate::read_side::prepare_rebuilds`]). Both share sqlx's migration history, so each
/// leaves the other's versions alone.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    eventstore::schema::migrate(pool).await?;
    let mut bank_tables = sqlx::migrate!("../migrations");
    bank_tables.set_ignore_missing(true);
    bank_tables.run(pool).await?;
    crate::read_side::prepare_rebuilds(pool).await.map_err(sqlx::migrate::MigrateError::Execute)
}

/// Whether every migration [`migrate`] would apply has been applied: a role that may not create
/// tables (the server's, where an owner migrates) cannot run the migrator, and needs not.
pub async fn is_up_to_date(pool: &PgPool) -> Result<bool, sqlx::Error> {
    let bank_tables = sqlx::migrate!("../migrations");
    let wanted: Vec<i64> =
        eventstore::schema::MIGRATOR.iter().chain(bank_tables.iter()).map(|migration| migration.version).collect();
    let applied: Vec<i64> =
        match sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success").fetch_all(pool).await {
            Ok(applied) => applied,
            // 42P01 undefined_table: no migration has ever run here.
            Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("42P01") => return Ok(false),
            Err(error) => return Err(error),
        };
    Ok(wanted.iter().all(|version| applied.contains(version)))
}

/// Whether the connection's role may create tables in the schema it resolves names in.
pub async fn may_create_tables(pool: &PgPool) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_catalog.has_schema_privilege(pg_catalog.current_schema()::text, 'CREATE'::text)")
        .fetch_one(pool)
        .await
}

/// Gives the server's database role what it needs (run by the owner of the tables, after
/// [`migrate`]): the event store's share (append and read events, never change them), the
/// users' tables, the transfer process's, and the read tables and their rebuild copies to read,
/// write and empty. The role owns nothing and may create nothing in the schema: the owner
/// resolves names there when it migrates, and a function the role planted (a
/// `quote_ident(name)` that matches a call better than `pg_catalog`'s) would run with the
/// owner's rights. (Every function and operator the owner calls here is named with its schema
/// all the same, and the owner's session looks nowhere else.) The migrating role must be a
/// superuser or a member of the server's role, to take back tables earlier versions handed it.
pub async fn grant_to_server_role(pool: &PgPool, role: &str) -> Result<(), sqlx::Error> {
    eventstore::schema::grant_to_server_role(pool, role).await?;
    let role = eventstore::schema::quoted_identifier(pool, role).await?;
    let schema: String =
        sqlx::query_scalar("SELECT pg_catalog.quote_ident(pg_catalog.current_schema()::text)").fetch_one(pool).await?;
    // Earlier versions granted CREATE (a rebuild created its copies and renamed them in).
    sqlx::query(&format!("REVOKE CREATE ON SCHEMA {schema} FROM {role}")).execute(pool).await?;
    sqlx::query(&format!("GRANT USAGE ON SCHEMA {schema} TO {role}")).execute(pool).await?;
    crate::identity::grant_to_server_role(pool, &role).await?;
    crate::write_side::transfers::grant_to_server_role(pool, &role).await?;
    crate::read_side::grant_to_server_role(pool, &role).await
}

//! The database as the server needs it: its tables brought up to date, and its role given what
//! it may do — each part of the server granting on its own tables.

use sqlx::PgPool;

/// Brings the database up to date: the event store's tables (its own migrations), then the
/// bank's tables (the workspace's `migrations/` folder). Both share sqlx's migration history,
/// so each leaves the other's versions alone.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    eventstore::schema::migrate(pool).await?;
    let mut bank_tables = sqlx::migrate!("../migrations");
    bank_tables.set_ignore_missing(true);
    bank_tables.run(pool).await
}

/// Gives the server's database role what it needs (run by the owner of the tables, after
/// [`migrate`]): the event store's share (append and read events, never change them), the
/// users' tables, the transfer process's, and the read tables as their owner. The migrating
/// role must be a superuser or a member of the server's role (to hand tables to it, and to
/// alter them later).
///
/// The server's role may create tables in the schema (a rebuild creates its shadow tables and
/// renames them into place, which Postgres allows only with `CREATE` on the schema), so it
/// could plant a function there that matches a call better than `pg_catalog`'s (a
/// `quote_ident(name)`): every function and operator the owner calls here is named with its
/// schema, and the owner's session looks nowhere but `pg_catalog` and this schema.
pub async fn grant_to_server_role(pool: &PgPool, role: &str) -> Result<(), sqlx::Error> {
    eventstore::schema::grant_to_server_role(pool, role).await?;
    let role = eventstore::schema::quoted_identifier(pool, role).await?;
    let schema: String =
        sqlx::query_scalar("SELECT pg_catalog.quote_ident(pg_catalog.current_schema()::text)").fetch_one(pool).await?;
    sqlx::query(&format!("GRANT USAGE, CREATE ON SCHEMA {schema} TO {role}")).execute(pool).await?;
    crate::identity::grant_to_server_role(pool, &role).await?;
    crate::write_side::transfers::grant_to_server_role(pool, &role).await?;
    crate::read_side::grant_to_server_role(pool, &role).await
}

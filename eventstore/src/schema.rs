//! The store's schema: its tables live in this crate's `migrations/` folder, applied by
//! [`migrate`]. An application applies its own read tables' migrations after these.

use sqlx::PgPool;
use sqlx::migrate::{MigrateError, Migrator};

/// The store's migrations on their own, for a database that holds nothing else (this crate's
/// tests use it with `#[sqlx::test(migrator = "eventstore::schema::MIGRATOR")]`).
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Brings the store's tables up to date. They share sqlx's migration history with the
/// application's own migrations, so versions the store does not know are expected there and
/// left alone.
pub async fn migrate(pool: &PgPool) -> Result<(), MigrateError> {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.set_ignore_missing(true);
    migrator.run(pool).await
}

/// Gives `role` what a server appending events and running projections needs on the store's
/// tables, and no more: events may be read and appended, never changed, deleted or truncated;
/// the store's bookkeeping tables are its to keep. Not owning the tables, the role cannot alter
/// them or disable the immutability trigger; not a superuser, it cannot set
/// `session_replication_role` to skip triggers. Run by the tables' owner, after [`migrate`].
pub async fn grant_to_server_role(pool: &PgPool, role: &str) -> Result<(), sqlx::Error> {
    let role = quoted_identifier(pool, role).await?;
    for statement in [
        format!("GRANT SELECT, INSERT ON events TO {role}"),
        format!("GRANT SELECT, INSERT, DELETE ON processed_commands TO {role}"),
        format!("GRANT SELECT, INSERT, UPDATE, DELETE ON snapshots TO {role}"),
        format!("GRANT SELECT, INSERT, UPDATE, DELETE ON projection_checkpoints TO {role}"),
        format!("GRANT SELECT, INSERT, UPDATE, DELETE ON skipped_events TO {role}"),
        format!("GRANT SELECT, INSERT ON projection_levers TO {role}"),
        format!("GRANT SELECT, INSERT, UPDATE ON projection_partitionings TO {role}"),
        format!("GRANT SELECT, INSERT, UPDATE, DELETE ON projection_members TO {role}"),
        // So that a server started as this role finds every migration applied.
        format!("GRANT SELECT ON _sqlx_migrations TO {role}"),
    ] {
        sqlx::query(&statement).execute(pool).await?;
    }
    Ok(())
}

/// Makes `role` (quoted, as [`quoted_identifier`] gives it) the owner of each projection table
/// in `tables` and of the shadow tables a rebuild makes beside it: a rebuild creates them and
/// swaps them in, which only an owner may do. Only where the owner differs: altering takes an
/// exclusive lock (readers on running instances would wait), and once the role owns a table
/// only it or a superuser may alter it. A shadow left by a server that stopped mid-way goes too.
///
/// Run by the schema's owner: every function and operator it calls is named with its schema
/// (`pg_catalog.`), so that nothing the server's role planted in the schema runs as the owner.
pub async fn hand_projection_tables_to(pool: &PgPool, role: &str, tables: &[&str]) -> Result<(), sqlx::Error> {
    use crate::projection::Target;
    for table in tables {
        let names = [Target::LIVE, Target::REBUILD, Target::REPLACED].map(|target| target.table(table));
        for name in names {
            let owner: Option<String> = sqlx::query_scalar(
                "SELECT pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(c.relowner)::text) FROM pg_catalog.pg_class c
                 WHERE c.oid OPERATOR(pg_catalog.=) pg_catalog.to_regclass(pg_catalog.quote_ident($1::text))",
            )
            .bind(&name)
            .fetch_optional(pool)
            .await?;
            if owner.is_some_and(|owner| owner != role) {
                sqlx::query(&format!(r#"ALTER TABLE "{name}" OWNER TO {role}"#)).execute(pool).await?;
            }
        }
    }
    Ok(())
}

/// `name` as SQL quotes an identifier.
pub async fn quoted_identifier(pool: &PgPool, name: &str) -> Result<String, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_catalog.quote_ident($1::text)").bind(name).fetch_one(pool).await
}

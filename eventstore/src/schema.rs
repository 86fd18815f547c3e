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

/// Gives `role` (quoted, as [`quoted_identifier`] gives it) what running a projection needs on
/// each table in `tables` and its shadow copy: read, write and empty them; not own them (an
/// owner could alter them, or put a trigger on them that would run as whoever writes there).
/// A table an earlier version handed to the role is taken back first.
///
/// Run by the schema's owner: every function and operator it calls is named with its schema
/// (`pg_catalog.`), so that nothing planted in the schema runs as the owner.
pub async fn grant_projection_tables_to(pool: &PgPool, role: &str, tables: &[&str]) -> Result<(), sqlx::Error> {
    use crate::projection::Target;
    for table in tables {
        for name in [Target::LIVE, Target::REBUILD].map(|target| target.table(table)) {
            let owned_elsewhere: Option<bool> = sqlx::query_scalar(
                "SELECT c.relowner OPERATOR(pg_catalog.<>) (SELECT r.oid FROM pg_catalog.pg_roles r
                                                           WHERE r.rolname OPERATOR(pg_catalog.=) CURRENT_USER)
                 FROM pg_catalog.pg_class c
                 WHERE c.oid OPERATOR(pg_catalog.=) pg_catalog.to_regclass(pg_catalog.quote_ident($1::text))",
            )
            .bind(&name)
            .fetch_optional(pool)
            .await?;
            let Some(owned_elsewhere) = owned_elsewhere else {
                continue;
            };
            if owned_elsewhere {
                sqlx::query(&format!(r#"ALTER TABLE "{name}" OWNER TO CURRENT_USER"#)).execute(pool).await?;
            }
            sqlx::query(&format!(r#"GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON "{name}" TO {role}"#))
                .execute(pool)
                .await?;
        }
    }
    Ok(())
}

/// Makes each of `projection`'s tables' shadow copy (`<table>_rebuild`), shaped as the live
/// table is now, where it is missing or shaped otherwise (a migration changed the live table),
/// unless a rebuild is filling it. Run at start-up by the role that migrates, so that a rebuild
/// needs no right to create a table. A copy that is already right is left alone, with the
/// rights it was granted (running instances may be using it). A rebuild locks the copies
/// before it notes its checkpoint; so does this, before it looks for one.
pub async fn prepare_shadow_tables(pool: &PgPool, projection: &str, tables: &[&str]) -> Result<(), sqlx::Error> {
    use crate::projection::Target;
    let mut tx = pool.begin().await?;
    let mut stale = Vec::new();
    for table in tables {
        let shadow = Target::REBUILD.table(table);
        let (live_shape, shadow_shape) = (shape(&mut tx, table).await?, shape(&mut tx, &shadow).await?);
        if shadow_shape.is_some() {
            sqlx::query(&format!(r#"LOCK TABLE "{shadow}" IN ACCESS EXCLUSIVE MODE"#)).execute(&mut *tx).await?;
        }
        if shadow_shape != live_shape {
            stale.push((*table, shadow));
        }
    }
    if stale.is_empty() {
        return tx.commit().await;
    }
    let rebuilding: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT FROM projection_checkpoints WHERE projection_name OPERATOR(pg_catalog.=) $1::text)",
    )
    .bind(crate::projection::rebuild_checkpoint_name(projection))
    .fetch_one(&mut *tx)
    .await?;
    if !rebuilding {
        for (table, shadow) in stale {
            sqlx::query(&format!(r#"DROP TABLE IF EXISTS "{shadow}""#)).execute(&mut *tx).await?;
            sqlx::query(&format!(r#"CREATE TABLE "{shadow}" (LIKE "{table}" INCLUDING ALL)"#))
                .execute(&mut *tx)
                .await?;
        }
    }
    tx.commit().await
}

/// A table's columns, names and types in order; `None` if there is no such table.
async fn shape(connection: &mut sqlx::PgConnection, table: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT pg_catalog.string_agg(
                    pg_catalog.concat(a.attname::text, ' ', pg_catalog.format_type(a.atttypid, a.atttypmod),
                                      CASE WHEN a.attnotnull THEN ' not null' END),
                    ', ' ORDER BY a.attnum)
         FROM pg_catalog.pg_attribute a
         WHERE a.attrelid OPERATOR(pg_catalog.=) pg_catalog.to_regclass(pg_catalog.quote_ident($1::text))
           AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped",
    )
    .bind(table)
    .fetch_one(connection)
    .await
}

/// `name` as SQL quotes an identifier.
pub async fn quoted_identifier(pool: &PgPool, name: &str) -> Result<String, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_catalog.quote_ident($1::text)").bind(name).fetch_one(pool).await
}

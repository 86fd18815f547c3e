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
pub async fn hand_projection_tables_to(pool: &PgPool, role: &str, tables: &[&str]) -> Result<(), sqlx::Error> {
    use crate::projection::Target;
    for table in tables {
        let names = [Target::LIVE, Target::REBUILD, Target::REPLACED].map(|target| target.table(table));
        for name in names {
            let owned_elsewhere: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner
                 WHERE c.oid = to_regclass(quote_ident($1)) AND quote_ident(r.rolname) <> $2)",
            )
            .bind(&name)
            .bind(role)
            .fetch_one(pool)
            .await?;
            if owned_elsewhere {
                sqlx::query(&format!(r#"ALTER TABLE "{name}" OWNER TO {role}"#)).execute(pool).await?;
            }
        }
    }
    Ok(())
}

/// `name` as SQL quotes an identifier.
pub async fn quoted_identifier(pool: &PgPool, name: &str) -> Result<String, sqlx::Error> {
    sqlx::query_scalar("SELECT quote_ident($1)").bind(name).fetch_one(pool).await
}

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

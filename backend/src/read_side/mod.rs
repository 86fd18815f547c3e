//! The read side: projections that keep read tables current, and the queries that read them.
//!
//! Every answer carries the checkpoint it is current as of. A caller holding a command's
//! consistency token may ask to wait (bounded) until the read model has passed it.

pub mod account_ledger;
pub mod account_summary;
pub mod history;
pub mod live;
mod projections;
mod queries;
pub mod read_stores;
pub mod redis_accounts;
pub mod replica;
pub mod transfers;

use sqlx::PgPool;

pub use account_ledger::AccountLedgerProjection;
pub use account_summary::AccountSummaryProjection;
pub use history::AccountHistory;
pub use projections::{PROJECTION_NAMES, Split, run_projections};
pub use queries::{AccountLookup, LIST_LIMIT, ReadModel, SUMMARY_SELECT};
pub use read_stores::{ReadStore, RedisReads};
pub use redis_accounts::RedisAccounts;
pub use replica::{ReadPools, ReplicaStatus};
pub use transfers::TransfersProjection;

/// Each Postgres projection's name and tables.
pub const TABLES_BY_PROJECTION: [(&str, &[&str]); 3] = {
    use eventstore::Projection;
    [
        (AccountSummaryProjection::NAME, AccountSummaryProjection::TABLES),
        (AccountLedgerProjection::NAME, AccountLedgerProjection::TABLES),
        (TransfersProjection::NAME, TransfersProjection::TABLES),
    ]
};

/// Gives the server's role what running the projections needs on the read tables and on a
/// rebuild's copies of them: read, write and empty them (it owns none).
pub async fn grant_to_server_role(pool: &PgPool, role: &str) -> Result<(), sqlx::Error> {
    let tables: Vec<&str> = TABLES_BY_PROJECTION.into_iter().flat_map(|(_, tables)| tables).copied().collect();
    eventstore::schema::grant_projection_tables_to(pool, role, &tables).await
}

/// Makes the rebuild copies of every read table (see [`eventstore::schema::prepare_shadow_tables`]).
pub async fn prepare_rebuilds(pool: &PgPool) -> Result<(), sqlx::Error> {
    for (projection, tables) in TABLES_BY_PROJECTION {
        eventstore::schema::prepare_shadow_tables(pool, projection, tables).await?;
    }
    Ok(())
}

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

/// Makes the server's role the owner of the read tables (and of a rebuild's copies of them):
/// a rebuild creates shadow tables beside them and swaps them in, which only an owner may do.
pub async fn grant_to_server_role(pool: &PgPool, role: &str) -> Result<(), sqlx::Error> {
    use eventstore::Projection;
    let tables = [AccountSummaryProjection::TABLES, AccountLedgerProjection::TABLES, TransfersProjection::TABLES];
    let tables: Vec<&str> = tables.into_iter().flatten().copied().collect();
    eventstore::schema::hand_projection_tables_to(pool, role, &tables).await
}

//! The API: commands, queries and operator levers as Leptos server functions, and the one
//! error type (the wire types are `crate::contract`'s). The browser calls these functions directly; other clients use the same routes
//! with JSON (see `docs/HTTP-CONTRACT.md`).

pub mod commands;
pub mod error;
pub mod operations;
pub mod queries;

pub use crate::contract::exact_number::ExactNumber;
pub use crate::contract::{
    AccountList, AccountView, CommandAccepted, HistoricalAccount, HistoryEntry, HistoryPage, Ledger, LedgerEntry,
};
pub use error::{ApiError, ErrorCode};

/// What the server functions need, provided as Leptos context by the server.
#[cfg(feature = "ssr")]
#[derive(Clone)]
pub struct Services {
    pub commands: crate::write_side::CommandHandler,
    pub read_model: crate::read_side::ReadModel,
    pub history: crate::read_side::AccountHistory,
    /// Every projection's status, read at most once a second however many ask.
    pub projection_status: std::sync::Arc<eventstore::projection::StatusCache>,
    pub pool: sqlx::PgPool,
}

#[cfg(feature = "ssr")]
fn services() -> Result<Services, ApiError> {
    leptos::prelude::use_context::<Services>().ok_or_else(|| {
        tracing::error!("server function called without Services in its context");
        ApiError::internal()
    })
}

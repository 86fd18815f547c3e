//! The API: commands, queries and operator levers as Leptos server functions, and the one
//! error type (the wire types are `crate::contract`'s). The browser calls these functions directly; other clients use the same routes
//! with JSON (see `docs/HTTP-CONTRACT.md`).

pub mod commands;
pub mod error;
pub mod identity;
pub mod operations;
pub mod queries;

pub use crate::contract::exact_number::ExactNumber;
pub use crate::contract::{
    AccountList, AccountView, CommandAccepted, HistoricalAccount, HistoryEntry, HistoryPage, Ledger, LedgerEntry,
    TransferAccepted, TransferList, TransferView,
};
pub use error::{ApiError, ErrorCode};

/// What the server functions need, provided as Leptos context by the server, behind an `Arc`:
/// the context is provided to every request and read by every server function, and a clone of
/// the fields themselves (handlers, pools, caches) cost more CPU per deposit than its SQL did.
#[cfg(feature = "ssr")]
pub struct Services {
    pub commands: crate::write_side::CommandHandler,
    pub transfers: crate::write_side::TransferRequests,
    pub read_model: crate::read_side::ReadModel,
    pub history: crate::read_side::AccountHistory,
    /// Every projection's status, read at most once a second however many ask.
    pub projection_status: std::sync::Arc<eventstore::projection::StatusCache>,
    pub pool: sqlx::PgPool,
    pub passwords: crate::identity::Passwords,
    /// Who each session or token belongs to, remembered for a moment.
    pub callers: crate::identity::Callers,
    /// Session cookies are marked `Secure` (sent over https only).
    pub secure_cookies: bool,
}

#[cfg(feature = "ssr")]
fn services() -> Result<std::sync::Arc<Services>, ApiError> {
    leptos::prelude::use_context::<std::sync::Arc<Services>>().ok_or_else(|| {
        tracing::error!("server function called without Services in its context");
        ApiError::internal()
    })
}

/// The request's parts (headers, extensions), which Leptos provides to server functions and to
/// pages rendered on the server.
#[cfg(feature = "ssr")]
fn request_parts() -> Option<axum::http::request::Parts> {
    leptos::prelude::use_context::<axum::http::request::Parts>()
}

/// Who is asking, as the server's authentication found them; `None` when signed out.
#[cfg(feature = "ssr")]
pub fn caller() -> Option<crate::identity::Caller> {
    request_parts().and_then(|parts| parts.extensions.get::<crate::identity::Caller>().cloned())
}

/// The caller, or 401: every route but signing in and up needs one.
#[cfg(feature = "ssr")]
fn signed_in() -> Result<crate::identity::Caller, ApiError> {
    caller().ok_or_else(ApiError::unauthenticated)
}

/// The caller if they are an operator; 401 when signed out, 403 for customers.
#[cfg(feature = "ssr")]
fn operator() -> Result<crate::identity::Caller, ApiError> {
    let caller = signed_in()?;
    if caller.is_operator() { Ok(caller) } else { Err(ApiError::operators_only()) }
}

//! The API: commands, queries and operator levers as Leptos server functions, and the one
//! error type (the wire types are `bank::contract`'s). The browser calls these functions
//! directly; other clients use the same routes with JSON (see `docs/HTTP-CONTRACT.md`). On the
//! server their bodies parse, check who asks, and call `backend::Services`.

pub mod commands;
pub mod error;
pub mod identity;
#[cfg(feature = "ssr")]
pub mod limits;
pub mod operations;
pub mod privacy;
pub mod queries;
pub mod security;

pub use bank::contract::exact_number::ExactNumber;
pub use bank::contract::{
    AccountList, AccountView, CommandAccepted, HistoricalAccount, HistoryEntry, HistoryPage, Ledger, LedgerEntry,
    TransferAccepted, TransferList, TransferView,
};
pub use error::{ApiError, ErrorCode};

#[cfg(feature = "ssr")]
pub use backend::Services;

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
pub fn caller() -> Option<backend::identity::Caller> {
    request_parts().and_then(|parts| parts.extensions.get::<backend::identity::Caller>().cloned())
}

/// The caller, or 401: every route but signing in and up needs one.
#[cfg(feature = "ssr")]
fn signed_in() -> Result<backend::identity::Caller, ApiError> {
    caller().ok_or_else(ApiError::unauthenticated)
}

/// The caller if they are an operator; 401 when signed out, 403 for customers.
#[cfg(feature = "ssr")]
fn operator() -> Result<backend::identity::Caller, ApiError> {
    let caller = signed_in()?;
    if caller.is_operator() { Ok(caller) } else { Err(ApiError::operators_only()) }
}

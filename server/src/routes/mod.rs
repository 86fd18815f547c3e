//! HTTP routes beside the Leptos server functions.

pub mod accounts;
pub mod cross_site;
pub mod health;
pub mod identity;
pub mod json_errors;
pub mod live;
pub mod metrics;
pub mod rate_limits;
pub mod wire;

//! HTTP routes beside the Leptos server functions.

pub mod accounts;
pub mod cross_site;
pub mod health;
pub mod json_errors;
pub mod live;
pub mod metrics;

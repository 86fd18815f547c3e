#![recursion_limit = "256"]

//! The server: configuration, start-up (database, migrations, projections, router) and the
//! HTTP routes that are not Leptos server functions.

pub mod configuration;
pub mod metrics;
pub mod routes;
pub mod serve;
pub mod startup;
pub mod telemetry;

#![recursion_limit = "256"]

//! The server: configuration, start-up (database, migrations, projections, router) and the
//! HTTP routes that are not Leptos server functions.

pub mod configuration;
pub mod metrics;
pub mod routes;
pub mod serve;
pub mod startup;
pub mod telemetry;

/// Every binary that runs the server (the server itself, the benchmarks, the tests) allocates
/// with mimalloc: a request allocates on one thread and frees on another, where glibc's
/// allocator spends its time in locking and consolidation (measured in BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

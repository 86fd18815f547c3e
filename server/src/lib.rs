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
/// with mimalloc: under B2's load glibc's malloc and free were a fifth of the server's CPU per
/// deposit (perf), most of it in their locking and consolidation across threads.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::future::Future;
use std::pin::Pin;

use crate::Context;

mod b10_redis_queries;
mod b11_transfers;
mod b12_replica_reads;
mod b13_partitioned_catch_up;
mod b14_redis_cluster;
pub mod b1_append;
mod b2_http_commands;
mod b3_command_to_visible;
mod b4_projection_catch_up;
mod b5_aggregate_load;
mod b6_queries;
mod b7_bundle;
mod b8_hot_account;
mod b9_live;
mod contention;

pub type Outcome = Result<(), Box<dyn std::error::Error>>;
pub type Scenario = fn(Context) -> Pin<Box<dyn Future<Output = Outcome>>>;

/// Every scenario, in the order they run. Each gets a database of its own.
pub fn all() -> Vec<(&'static str, Scenario)> {
    vec![
        ("b1_append", |context| Box::pin(b1_append::run(context))),
        ("b2_http_commands", |context| Box::pin(b2_http_commands::run(context))),
        ("b3_command_to_visible", |context| Box::pin(b3_command_to_visible::run(context))),
        ("b4_projection_catch_up", |context| Box::pin(b4_projection_catch_up::run(context))),
        ("b5_aggregate_load", |context| Box::pin(b5_aggregate_load::run(context))),
        ("b6_queries", |context| Box::pin(b6_queries::run(context))),
        ("b7_bundle", |context| Box::pin(b7_bundle::run(context))),
        ("b8_hot_account", |context| Box::pin(b8_hot_account::run(context))),
        ("b9_live", |context| Box::pin(b9_live::run(context))),
        ("b10_redis_queries", |context| Box::pin(b10_redis_queries::run(context))),
        ("b11_transfers", |context| Box::pin(b11_transfers::run(context))),
        ("b12_replica_reads", |context| Box::pin(b12_replica_reads::run(context))),
        ("b13_partitioned_catch_up", |context| Box::pin(b13_partitioned_catch_up::run(context))),
        ("b14_redis_cluster", |context| Box::pin(b14_redis_cluster::run(context))),
        ("contention", |context| Box::pin(contention::run(context))),
    ]
}

use std::future::Future;
use std::pin::Pin;

use sqlx::PgPool;

use crate::Size;

mod contention;

pub type Outcome = Result<(), Box<dyn std::error::Error>>;
pub type Scenario = fn(PgPool, Size) -> Pin<Box<dyn Future<Output = Outcome>>>;

/// Every scenario, in the order they run.
pub fn all() -> Vec<(&'static str, Scenario)> {
    vec![("contention", |pool, size| Box::pin(contention::run(pool, size)))]
}

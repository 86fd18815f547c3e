use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, Executor, PgConnection, PgPool};

pub const DATABASE: &str = "cqrs_bank_bench";

/// A freshly created and migrated `cqrs_bank_bench` on the server `DATABASE_URL` names.
pub async fn fresh() -> Result<PgPool, Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL").map_err(|_| "DATABASE_URL is not set")?;
    let options = PgConnectOptions::from_str(&url)?;
    let mut admin = PgConnection::connect_with(&options.clone().database("postgres")).await?;
    admin.execute(format!(r#"DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)"#).as_str()).await?;
    admin.execute(format!(r#"CREATE DATABASE "{DATABASE}""#).as_str()).await?;
    let pool = PgPoolOptions::new().max_connections(80).connect_with(options.database(DATABASE)).await?;
    sqlx::migrate!("../migrations").run(&pool).await?;
    Ok(pool)
}

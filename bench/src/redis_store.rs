//! The Redis the benchmarks use for the second read store: `REDIS_URL` (default
//! `redis://127.0.0.1:6379/0`), under a key prefix of the run's own, emptied when done.

use backend::read_side::RedisAccounts;
use eventstore::projection::ExternalProjection;
use server::configuration::RedisSettings;

pub struct BenchRedis {
    pub settings: RedisSettings,
    pub accounts: RedisAccounts,
}

impl BenchRedis {
    pub fn new(scenario: &str) -> Result<BenchRedis, Box<dyn std::error::Error>> {
        let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".to_owned());
        let key_prefix = format!("cqrs-bank-bench-{scenario}-{}:", std::process::id());
        let accounts = RedisAccounts::new(&url, &key_prefix, 1)?;
        Ok(BenchRedis { settings: RedisSettings { url, key_prefix }, accounts })
    }

    /// Removes every key of the run's prefix (the highest epoch there is passes any fence).
    pub async fn clear(&self) -> Result<(), Box<dyn std::error::Error>> {
        self.accounts.clear(eventstore::projection::Partition::WHOLE, i64::MAX, "bench").await?;
        let mut redis = redis::Client::open(self.settings.url.as_str())?.get_multiplexed_async_connection().await?;
        let tag = backend::read_side::redis_accounts::slot_tag(eventstore::projection::Partition::WHOLE);
        let fence = format!("{}{tag}fence", self.settings.key_prefix);
        redis::cmd("DEL").arg(fence).exec_async(&mut redis).await?;
        Ok(())
    }
}

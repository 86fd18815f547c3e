//! Queries from a Postgres hot standby fed by streaming replication (`DATABASE_READ_URL`), the
//! primary otherwise: never an error because of the replica.
//!
//! The standby replays the primary's write-ahead log in commit order, so a statement there sees
//! the read tables and their checkpoint exactly as the primary had them at some moment: the
//! read model's rules (the row and its `asOf` in one statement, `after=<token>`) hold unchanged.
//! Only the moment is older. Once a second the replica's lag is measured; a replica that does
//! not answer, is no standby, or lags more than the setting, is left alone until it is back.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use bank::contract::ReplicaStatus;
use bank::contract::ServedBy;

/// How often the replica's lag is measured.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long a lag reading may take before the replica counts as unreachable.
const CHECK_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a query may take on the replica before it is asked of the primary instead: a
/// replica that hangs (up, but not answering) must not hold queries until the request timeout.
const READ_TIMEOUT: Duration = Duration::from_secs(1);

/// Where queries read: the replica when it serves, the primary otherwise.
#[derive(Clone)]
pub struct ReadPools {
    primary: PgPool,
    replica: Option<Replica>,
}

#[derive(Clone)]
struct Replica {
    pool: PgPool,
    max_lag: Duration,
    health: Arc<watch::Sender<ReplicaStatus>>,
}

impl ReadPools {
    /// Every query on the primary.
    pub fn primary_only(primary: PgPool) -> ReadPools {
        ReadPools { primary, replica: None }
    }

    /// Queries on `replica` while it is no more than `max_lag` behind (measured once a second).
    pub fn with_replica(primary: PgPool, replica: PgPool, max_lag: Duration) -> ReadPools {
        let health = Arc::new(watch::Sender::new(ReplicaStatus {
            problem: Some("not measured yet".to_owned()),
            ..ReplicaStatus::default()
        }));
        ReadPools { primary, replica: Some(Replica { pool: replica, max_lag, health }) }
    }

    pub fn primary(&self) -> &PgPool {
        &self.primary
    }

    /// The replica's health, if there is a replica.
    pub fn replica_health(&self) -> Option<ReplicaStatus> {
        self.replica.as_ref().map(|replica| replica.health.borrow().clone())
    }

    /// Runs `read` on the primary, whatever the replica.
    pub async fn read_primary<T, F, Fut>(&self, read: F) -> Result<(T, ServedBy), sqlx::Error>
    where
        F: Fn(PgPool) -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
    {
        Ok((read(self.primary.clone()).await?, ServedBy::Postgres))
    }

    /// Runs `read` on the replica if it serves, else (or if it fails there) on the primary; says
    /// which answered.
    pub async fn read<T, F, Fut>(&self, read: F) -> Result<(T, ServedBy), sqlx::Error>
    where
        F: Fn(PgPool) -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
    {
        if let Some(replica) = self.replica.as_ref().filter(|replica| replica.health.borrow().serving) {
            match tokio::time::timeout(READ_TIMEOUT, read(replica.pool.clone())).await {
                Ok(Ok(value)) => return Ok((value, ServedBy::PostgresReplica)),
                // Down, cut off, or a statement cancelled by the replay of a conflicting change:
                // the replica rests. Any other error is the statement's, and the primary will
                // say so too.
                Ok(Err(error)) if eventstore::is_transient(&error) => replica.failed(&error.to_string()),
                Ok(Err(_)) => {}
                Err(_) => replica.failed(&format!("no answer within {READ_TIMEOUT:?}")),
            }
        }
        Ok((read(self.primary.clone()).await?, ServedBy::Postgres))
    }

    /// Starts measuring the replica's lag once a second, if there is one.
    pub fn spawn_lag_monitor(&self, shutdown: CancellationToken) -> Option<JoinHandle<()>> {
        let replica = self.replica.clone()?;
        let primary = self.primary.clone();
        Some(tokio::spawn(async move {
            let mut every = tokio::time::interval(CHECK_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = every.tick() => {}
                }
                let measured = tokio::time::timeout(CHECK_TIMEOUT, measure(&primary, &replica.pool)).await;
                let health = match measured {
                    Ok(Ok(health)) => judged(health, replica.max_lag),
                    Ok(Err(error)) => unreachable(error.to_string()),
                    Err(_) => unreachable(format!("no answer within {CHECK_TIMEOUT:?}")),
                };
                replica.health.send_if_modified(|known| {
                    if known.serving != health.serving {
                        match &health.problem {
                            Some(problem) => tracing::warn!(%problem, "queries read the primary, not the replica"),
                            None => tracing::info!("queries read the replica again"),
                        }
                    }
                    let changed = *known != health;
                    *known = health;
                    changed
                });
            }
        }))
    }
}

impl Replica {
    /// A query failed on the replica (down, or a statement cancelled by the replay of a
    /// conflicting change): queries read the primary until the next measurement finds it well.
    fn failed(&self, error: &str) {
        self.health.send_modify(|health| {
            if health.serving {
                tracing::warn!(%error, "a query failed on the replica; queries read the primary for now");
            }
            health.serving = false;
            health.problem = Some(format!("a query failed: {error}"));
        });
    }
}

/// A replica that cannot be read, and why.
fn unreachable(problem: String) -> ReplicaStatus {
    ReplicaStatus { problem: Some(problem), ..ReplicaStatus::default() }
}

/// The measured `status`, serving if reachable and within `max_lag`.
fn judged(mut status: ReplicaStatus, max_lag: Duration) -> ReplicaStatus {
    let too_far = status.lag_seconds.is_some_and(|seconds| seconds > max_lag.as_secs_f64());
    status.serving = status.reachable && !too_far;
    if status.reachable && too_far {
        status.problem =
            Some(format!("{:.1} s behind the primary (at most {max_lag:?})", status.lag_seconds.unwrap_or(0.0)));
    }
    status
}

/// The replica's lag behind the primary: its replay position against the primary's write
/// position (bytes), and, while behind, the age of its last replayed commit (seconds).
async fn measure(primary: &PgPool, replica: &PgPool) -> Result<ReplicaStatus, sqlx::Error> {
    let (standby, replayed, seconds_since_replay): (bool, Option<String>, Option<f64>) = sqlx::query_as(
        "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text,
                extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp())::float8",
    )
    .fetch_one(replica)
    .await?;
    let (Some(replayed), true) = (replayed, standby) else {
        return Ok(unreachable("DATABASE_READ_URL is not a standby (not in recovery)".to_owned()));
    };
    // A standby of another cluster would answer with that cluster's tables.
    let system = "SELECT system_identifier::text FROM pg_control_system()";
    let (theirs, ours): (String, String) =
        (sqlx::query_scalar(system).fetch_one(replica).await?, sqlx::query_scalar(system).fetch_one(primary).await?);
    if theirs != ours {
        return Ok(unreachable("DATABASE_READ_URL is a standby of another cluster".to_owned()));
    }
    let lag_bytes: i64 =
        sqlx::query_scalar("SELECT greatest(pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn), 0)::bigint")
            .bind(&replayed)
            .fetch_one(primary)
            .await?;
    let lag_seconds = match (lag_bytes, seconds_since_replay) {
        (0, _) => 0.0,
        (_, Some(seconds)) => seconds.max(0.0),
        // Behind, and it has replayed no commit since it started: how far is unknown.
        (_, None) => f64::INFINITY,
    };
    Ok(ReplicaStatus {
        reachable: true,
        lag_bytes: Some(lag_bytes),
        lag_seconds: Some(lag_seconds),
        serving: false,
        problem: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_serves_while_reachable_and_close_enough() {
        let measured = |lag_seconds| ReplicaStatus {
            reachable: true,
            lag_bytes: Some(100),
            lag_seconds: Some(lag_seconds),
            serving: false,
            problem: None,
        };
        assert!(judged(measured(0.5), Duration::from_secs(5)).serving);
        let behind = judged(measured(6.0), Duration::from_secs(5));
        assert!(!behind.serving && behind.problem.unwrap().contains("behind"));
        assert!(!judged(unreachable("down".into()), Duration::from_secs(5)).serving);
    }
}

//! What operators and monitors see of the projections, cheaply enough to ask often.
//!
//! One statement reads every projection's status: lags are counted exactly up to
//! [`EXACT_LAG_LIMIT`] events and estimated from positions beyond, so a far-behind projection
//! costs no more to look at than a current one. [`StatusCache`] shares one reading among every
//! caller for a moment, so a page, a monitor and a scraper polling at once cost one query.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use time::OffsetDateTime;

use super::control::LEASE;
use crate::{Position, ProjectionState, ProjectionStatus, RebuildProgress};

/// Lags up to this many events are counted; beyond, estimated from positions.
const EXACT_LAG_LIMIT: i64 = 1000;
/// More events behind than this, or older than this, is "catching up".
const CATCHING_UP_EVENTS: i64 = 1000;
const CATCHING_UP_SECONDS: f64 = 5.0;

#[derive(sqlx::FromRow)]
struct StatusRow {
    projection_name: String,
    state: String,
    transaction_id: i64,
    global_position: i64,
    events_applied: i64,
    last_error: Option<String>,
    failed_transaction_id: Option<i64>,
    failed_global_position: Option<i64>,
    owner_instance: Option<String>,
    owner_heartbeat_at: Option<OffsetDateTime>,
    /// The owner renewed its lease recently enough, by the database's clock.
    led: bool,
    lag_counted: i64,
    lag_seconds: f64,
    rebuild_done: Option<i64>,
    rebuild_reason: Option<String>,
    head_transaction_id: Option<i64>,
    head_global_position: Option<i64>,
    newest_global_position: i64,
    oldest_transaction_seconds: f64,
}

/// The status of every projection, read in one statement (one snapshot: the figures agree).
pub async fn status(pool: &PgPool) -> Result<Vec<ProjectionStatus>, sqlx::Error> {
    let rows: Vec<StatusRow> = sqlx::query_as(
        "WITH head AS (
             SELECT transaction_id::text::bigint AS transaction_id, global_position FROM events
             ORDER BY events.transaction_id DESC, events.global_position DESC LIMIT 1
         )
         SELECT c.projection_name, c.state, c.transaction_id::text::bigint AS transaction_id, c.global_position,
                c.events_applied, c.last_error, c.rebuild_reason, c.failed_transaction_id::text::bigint AS failed_transaction_id,
                c.failed_global_position, c.owner_instance, c.owner_heartbeat_at,
                (c.owner_instance IS NOT NULL
                    AND c.owner_heartbeat_at > clock_timestamp() - make_interval(secs => $1)) AS led,
                (SELECT count(*) FROM (SELECT 1 FROM events e
                    WHERE (e.transaction_id, e.global_position) > (c.transaction_id, c.global_position)
                    LIMIT $2) behind) AS lag_counted,
                coalesce((SELECT extract(epoch FROM clock_timestamp() - e.recorded_at)::float8 FROM events e
                    WHERE (e.transaction_id, e.global_position) > (c.transaction_id, c.global_position)
                    ORDER BY e.transaction_id, e.global_position LIMIT 1), 0) AS lag_seconds,
                (SELECT r.events_applied FROM projection_checkpoints r
                    WHERE r.projection_name = c.projection_name || '#rebuild') AS rebuild_done,
                (SELECT transaction_id FROM head) AS head_transaction_id,
                (SELECT global_position FROM head) AS head_global_position,
                (SELECT coalesce(max(global_position), 0) FROM events) AS newest_global_position,
                (SELECT coalesce(extract(epoch FROM clock_timestamp() - min(xact_start))::float8, 0)
                    FROM pg_stat_activity
                    WHERE (backend_xid IS NOT NULL OR backend_xmin IS NOT NULL) AND pid <> pg_backend_pid())
                    AS oldest_transaction_seconds
         FROM projection_checkpoints c
         WHERE c.projection_name NOT LIKE '%#rebuild'
         ORDER BY c.projection_name",
    )
    .bind(LEASE.as_secs_f64())
    .bind(EXACT_LAG_LIMIT)
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(StatusRow::into_status).collect()
}

impl StatusRow {
    fn into_status(self) -> Result<ProjectionStatus, sqlx::Error> {
        let state = ProjectionState::parse(&self.state)
            .ok_or_else(|| sqlx::Error::Decode(format!("unknown projection state {:?}", self.state).into()))?;
        let checkpoint = Position { transaction_id: self.transaction_id, global_position: self.global_position };
        let head = self
            .head_transaction_id
            .zip(self.head_global_position)
            .map_or(Position::START, |(transaction_id, global_position)| Position { transaction_id, global_position });
        // Positions are allocated in insert order and read in commit order, so their difference
        // is only an estimate; it is used where counting would cost too much.
        let lag_events = if self.lag_counted < EXACT_LAG_LIMIT {
            self.lag_counted
        } else {
            (self.newest_global_position - self.global_position).max(EXACT_LAG_LIMIT)
        };
        let summary = match state {
            ProjectionState::Failed => "failed",
            ProjectionState::Rebuilding => "rebuilding",
            ProjectionState::Running if !self.led => "not running",
            ProjectionState::Running if lag_events > CATCHING_UP_EVENTS || self.lag_seconds > CATCHING_UP_SECONDS => {
                "catching up"
            }
            ProjectionState::Running => "running",
        };
        Ok(ProjectionStatus {
            name: self.projection_name,
            state,
            summary: summary.to_owned(),
            checkpoint,
            head,
            lag_events,
            lag_seconds: self.lag_seconds,
            events_applied: self.events_applied,
            last_error: self.last_error,
            failed_position: self
                .failed_transaction_id
                .zip(self.failed_global_position)
                .map(|(transaction_id, global_position)| Position { transaction_id, global_position }),
            owner_instance: if self.led { self.owner_instance } else { None },
            owner_heartbeat_at: self.owner_heartbeat_at,
            rebuild: self.rebuild_done.map(|done| RebuildProgress { done, total: self.newest_global_position }),
            rebuild_reason: self.rebuild_reason,
            oldest_transaction_seconds: self.oldest_transaction_seconds,
        })
    }
}

/// One reading of [`status`] shared by every caller for `max_age`; concurrent callers of a
/// stale cache wait for a single refresh instead of each querying.
pub struct StatusCache {
    pool: PgPool,
    max_age: Duration,
    latest: Mutex<Option<(Instant, Arc<Vec<ProjectionStatus>>)>>,
    refreshing: tokio::sync::Mutex<()>,
}

impl StatusCache {
    pub fn new(pool: PgPool, max_age: Duration) -> StatusCache {
        StatusCache { pool, max_age, latest: Mutex::new(None), refreshing: tokio::sync::Mutex::new(()) }
    }

    /// The status, at most `max_age` old.
    pub async fn get(&self) -> Result<Arc<Vec<ProjectionStatus>>, sqlx::Error> {
        if let Some(fresh) = self.fresh() {
            return Ok(fresh);
        }
        let _refreshing = self.refreshing.lock().await;
        // Whoever held the lock before may have refreshed it.
        if let Some(fresh) = self.fresh() {
            return Ok(fresh);
        }
        let status = Arc::new(status(&self.pool).await?);
        *self.latest.lock().expect("the status cache is never poisoned") = Some((Instant::now(), status.clone()));
        Ok(status)
    }

    /// Forgets the cached reading, after an operator's lever changed what it would say.
    pub fn invalidate(&self) {
        *self.latest.lock().expect("the status cache is never poisoned") = None;
    }

    fn fresh(&self) -> Option<Arc<Vec<ProjectionStatus>>> {
        let latest = self.latest.lock().expect("the status cache is never poisoned");
        latest.as_ref().filter(|(at, _)| at.elapsed() < self.max_age).map(|(_, status)| status.clone())
    }
}

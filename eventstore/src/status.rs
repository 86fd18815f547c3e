//! What an operator sees of a projection. Plain data, compiled without Postgres too, so that
//! a browser can read it.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::Position;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProjectionState {
    Running,
    Failed,
    Rebuilding,
}

impl ProjectionState {
    /// The state as stored; `None` for a state this code does not know (never taken for running).
    pub fn parse(state: &str) -> Option<ProjectionState> {
        match state {
            "running" => Some(ProjectionState::Running),
            "failed" => Some(ProjectionState::Failed),
            "rebuilding" => Some(ProjectionState::Rebuilding),
            _ => None,
        }
    }
}

/// A rebuild's progress: events applied to the shadow tables, of those in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RebuildProgress {
    pub done: i64,
    pub total: i64,
}

/// Everything an operator wants to know about one projection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectionStatus {
    pub name: String,
    pub state: ProjectionState,
    /// The state for people: running, catching up, failed, rebuilding, or not running
    /// (no instance leads it).
    pub summary: String,
    pub checkpoint: Position,
    /// The newest event in the store.
    pub head: Position,
    /// Events after the checkpoint: counted up to 1,000, estimated from positions beyond.
    pub lag_events: i64,
    /// Age of the next event the projection has to apply.
    pub lag_seconds: f64,
    pub events_applied: i64,
    pub last_error: Option<String>,
    pub failed_position: Option<Position>,
    pub owner_instance: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub owner_heartbeat_at: Option<OffsetDateTime>,
    pub rebuild: Option<RebuildProgress>,
    /// Why a store outside Postgres was last rebuilt from the first event (or is being): it was
    /// of another history of the log, it lost data, an operator asked.
    #[serde(default)]
    pub rebuild_reason: Option<String>,
    /// How long the oldest transaction of the cluster has been open: every projection waits
    /// for it (seconds).
    pub oldest_transaction_seconds: f64,
}

/// One lever an operator pulled on a projection, as recorded: who, why, when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "postgres", derive(sqlx::FromRow))]
#[serde(rename_all = "camelCase")]
pub struct LeverPulled {
    pub projection_name: String,
    /// `retry`, `skip` or `rebuild`.
    pub lever: String,
    pub operator: String,
    pub reason: String,
    /// The failing event a skip moved past.
    pub position: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub pulled_at: OffsetDateTime,
}

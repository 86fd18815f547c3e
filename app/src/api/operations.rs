//! Operating the read side: every projection's status, and the operator's levers. Each lever
//! is a compare-and-set on the projection's state: one that no longer applies answers 409.

use eventstore::{Position, ProjectionStatus};
use leptos::prelude::*;
use leptos::server_fn::codec::Json;

use super::error::ApiError;

/// Every projection: checkpoint, head, lag, state, last error, the instance running it.
#[server(prefix = "/api", endpoint = "operations/projections", input = Json)]
pub async fn list_projections() -> Result<Vec<ProjectionStatus>, ApiError> {
    super::operator()?;
    Ok(super::services()?.projection_status.get().await?.as_ref().clone())
}

/// Lets a failed projection try its failing event again (after a fix). `reason`: why, in the
/// operator's words, recorded with the lever (as for every lever).
#[server(prefix = "/api", endpoint = "operations/retry-projection", input = Json)]
#[middleware(crate::api::limits::Limited(crate::api::limits::Limit::Commands))]
pub async fn retry_projection(name: String, reason: String) -> Result<(), ApiError> {
    let operator = super::operator()?;
    let (name, reason) = (server::projection_name(&name)?, server::reason(&reason)?);
    let by = eventstore::projection::PulledBy { operator: operator.username.as_str(), reason };
    server::pulled(eventstore::projection::retry(&super::services()?.pool, name, by).await)
}

/// The Postgres replica queries read, as this instance last measured it; `None`: there is none
/// (`DATABASE_READ_URL` unset), queries read the primary.
#[server(prefix = "/api", endpoint = "operations/replica", input = Json)]
pub async fn replica_status() -> Result<Option<bank::contract::ReplicaStatus>, ApiError> {
    super::operator()?;
    Ok(super::services()?.read_model.replica_health())
}

/// The levers pulled lately (at most 20), newest first: who, why, when.
#[server(prefix = "/api", endpoint = "operations/levers", input = Json)]
pub async fn recent_levers() -> Result<Vec<eventstore::LeverPulled>, ApiError> {
    super::operator()?;
    Ok(eventstore::projection::recent_levers(&super::services()?.pool, 20).await?)
}

/// Moves a failed projection past the event it cannot apply; the skip is recorded. `position`
/// is the failing event the operator saw: if the projection now fails elsewhere, nothing is
/// skipped (409).
#[server(prefix = "/api", endpoint = "operations/skip-failed-event", input = Json)]
#[middleware(crate::api::limits::Limited(crate::api::limits::Limit::Commands))]
pub async fn skip_failed_event(name: String, position: Position, reason: String) -> Result<(), ApiError> {
    let operator = super::operator()?;
    let (name, reason) = (server::projection_name(&name)?, server::reason(&reason)?);
    let by = eventstore::projection::PulledBy { operator: operator.username.as_str(), reason };
    server::pulled(eventstore::projection::skip_failed_event(&super::services()?.pool, name, position, by).await)
}

/// Rebuilds a projection from the first event into shadow tables while the live ones keep
/// serving, then swaps them in.
#[server(prefix = "/api", endpoint = "operations/rebuild-projection", input = Json)]
#[middleware(crate::api::limits::Limited(crate::api::limits::Limit::Commands))]
pub async fn rebuild_projection(name: String, reason: String) -> Result<(), ApiError> {
    let operator = super::operator()?;
    let (name, reason) = (server::projection_name(&name)?, server::reason(&reason)?);
    let by = eventstore::projection::PulledBy { operator: operator.username.as_str(), reason };
    server::pulled(eventstore::projection::request_rebuild(&super::services()?.pool, name, by).await)
}

#[cfg(feature = "ssr")]
mod server {
    use eventstore::projection::{LeverError, LeverRefusal};

    use crate::api::{ApiError, ErrorCode};

    /// Projection names are short snake_case words; anything else names no projection, and
    /// is refused before it reaches the database (which refuses, say, a NUL in text).
    /// A partition of one is named `<projection>/<k>-of-<N>`.
    pub fn projection_name(name: &str) -> Result<&str, ApiError> {
        let projection =
            eventstore::projection::Partition::parse_checkpoint_name(name).map_or(name, |(projection, _)| projection);
        let well_formed = (1..=63).contains(&projection.len())
            && projection.bytes().all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_');
        if well_formed {
            Ok(name)
        } else {
            Err(ApiError::invalid_request(format!("{name:?} is not a projection name")))
        }
    }

    /// Why the operator pulls a lever: 1 to 500 characters, no control characters.
    pub fn reason(reason: &str) -> Result<&str, ApiError> {
        let reason = reason.trim();
        if (1..=500).contains(&reason.chars().count()) && !reason.chars().any(char::is_control) {
            Ok(reason)
        } else {
            Err(ApiError::invalid_request("give a reason (1 to 500 characters): it is recorded with the lever"))
        }
    }

    /// A lever's outcome as an answer; the next status shows what it changed.
    pub fn pulled(outcome: Result<(), LeverError>) -> Result<(), ApiError> {
        let services = crate::api::services()?;
        services.projection_status.invalidate();
        match outcome {
            Ok(()) => Ok(()),
            Err(LeverError::Database(error)) => Err(error.into()),
            Err(LeverError::Refused(refusal @ LeverRefusal::UnknownProjection(_))) => {
                Err(ApiError::new(ErrorCode::NotFound, refusal.to_string()))
            }
            Err(LeverError::Refused(refusal)) => Err(ApiError::new(ErrorCode::Conflict, refusal.to_string())),
        }
    }
}

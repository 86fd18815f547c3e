//! Operating the read side: every projection's status, and the operator's levers.

use eventstore::ProjectionStatus;
use leptos::prelude::*;
use leptos::server_fn::codec::Json;

use super::error::ApiError;

/// Every projection: checkpoint, head, lag, state, last error, the instance running it.
#[server(prefix = "/api", endpoint = "operations/projections", input = Json)]
pub async fn list_projections() -> Result<Vec<ProjectionStatus>, ApiError> {
    Ok(eventstore::projection::status(&super::services()?.pool).await?)
}

/// Lets a failed projection try its failing event again (after a fix).
#[server(prefix = "/api", endpoint = "operations/retry-projection", input = Json)]
pub async fn retry_projection(name: String) -> Result<(), ApiError> {
    let pool = server::known(&name).await?;
    server::done(eventstore::projection::retry(&pool, &name).await?, &name, "it has not failed")
}

/// Moves a failed projection past the event it cannot apply; the skip is recorded.
#[server(prefix = "/api", endpoint = "operations/skip-failed-event", input = Json)]
pub async fn skip_failed_event(name: String) -> Result<(), ApiError> {
    let pool = server::known(&name).await?;
    server::done(eventstore::projection::skip_failed_event(&pool, &name).await?, &name, "it has not failed")
}

/// Rebuilds a projection from the first event into shadow tables while the live ones keep
/// serving, then swaps them in.
#[server(prefix = "/api", endpoint = "operations/rebuild-projection", input = Json)]
pub async fn rebuild_projection(name: String) -> Result<(), ApiError> {
    let pool = server::known(&name).await?;
    server::done(
        eventstore::projection::request_rebuild(&pool, &name).await?,
        &name,
        "it is failed or already rebuilding",
    )
}

#[cfg(feature = "ssr")]
mod server {
    use sqlx::PgPool;

    use crate::api::{ApiError, ErrorCode};

    /// The pool, if `name` is a projection.
    pub async fn known(name: &str) -> Result<PgPool, ApiError> {
        let pool = crate::api::services()?.pool;
        let exists: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM projection_checkpoints WHERE projection_name = $1 AND projection_name NOT LIKE '%#%')",
        )
        .bind(name)
        .fetch_one(&pool)
        .await?;
        if exists { Ok(pool) } else { Err(ApiError::new(ErrorCode::NotFound, format!("there is no projection {name:?}"))) }
    }

    pub fn done(changed: bool, name: &str, otherwise: &str) -> Result<(), ApiError> {
        if changed {
            Ok(())
        } else {
            Err(ApiError::new(ErrorCode::Conflict, format!("projection {name} cannot do that now: {otherwise}")))
        }
    }
}

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use eventstore::ProjectionState;
use serde_json::{Value, json};

use crate::startup::AppState;

/// Liveness, for anyone: 200 while the database answers one trivial query, else 503; `"degraded"`
/// when a projection has failed or no instance runs it. No internals (no error text, no instance
/// or projection names): operators read those on the operations page and at `/metrics`. The
/// projections' status is the one shared, at most a second old, so a monitor probing every second
/// costs the database one `SELECT 1` a probe.
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    if let Err(error) = sqlx::query("SELECT 1").execute(&state.pool).await {
        tracing::warn!(%error, "health: the database does not answer");
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "unavailable" })));
    }
    let degraded = match state.services.projection_status.get().await {
        Ok(projections) => projections.iter().any(|p| p.state == ProjectionState::Failed || p.owner_instance.is_none()),
        Err(error) => {
            tracing::warn!(%error, "health: the projections' status cannot be read");
            true
        }
    };
    (StatusCode::OK, Json(json!({ "status": if degraded { "degraded" } else { "ok" } })))
}

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use eventstore::ProjectionState;
use serde_json::{Value, json};

use crate::startup::AppState;

/// 200 when the database answers (with every projection's status; `"degraded"` when one has
/// failed or none runs it), 503 when it does not.
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    match eventstore::projection::status(&state.pool).await {
        Ok(projections) => {
            let degraded = projections
                .iter()
                .any(|p| p.state == ProjectionState::Failed || p.owner_instance.is_none());
            let status = if degraded { "degraded" } else { "ok" };
            (StatusCode::OK, Json(json!({ "status": status, "instance": state.instance_id, "projections": projections })))
        }
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unavailable", "instance": state.instance_id, "error": error.to_string() })),
        ),
    }
}

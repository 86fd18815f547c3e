use std::fmt::Write;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::startup::AppState;

/// A figure of every projection: its name, Prometheus type, help text and how to read it.
type ProjectionFigure = (&'static str, &'static str, &'static str, fn(&eventstore::ProjectionStatus) -> f64);

/// Prometheus text format: this instance's command counts and latencies, and every
/// projection's lag and progress (read from the database, so every instance reports them).
pub async fn metrics(State(state): State<AppState>) -> Response {
    let mut text = state.metrics.render();
    match state.services.projection_status.get().await {
        Ok(projections) => {
            let gauges: [ProjectionFigure; 4] = [
                ("cqrs_bank_projection_lag_events", "gauge", "Events after the projection's checkpoint.", |p| {
                    p.lag_events as f64
                }),
                ("cqrs_bank_projection_lag_seconds", "gauge", "Age of the oldest event not yet applied.", |p| {
                    p.lag_seconds
                }),
                (
                    "cqrs_bank_projection_events_applied_total",
                    "counter",
                    "Events applied since the projection was created.",
                    |p| p.events_applied as f64,
                ),
                ("cqrs_bank_projection_failed", "gauge", "1 when the projection is stopped at an event.", |p| {
                    f64::from(u8::from(p.state == eventstore::ProjectionState::Failed))
                }),
            ];
            for (name, kind, help, value) in gauges {
                let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} {kind}");
                for projection in projections.iter() {
                    let _ = writeln!(text, "{name}{{projection=\"{}\"}} {}", projection.name, value(projection));
                }
            }
            let oldest = projections.first().map_or(0.0, |p| p.oldest_transaction_seconds);
            let _ = writeln!(
                text,
                "# HELP cqrs_bank_oldest_transaction_seconds How long the cluster's oldest open transaction has run; projections wait for it.\n# TYPE cqrs_bank_oldest_transaction_seconds gauge\ncqrs_bank_oldest_transaction_seconds {oldest}"
            );
        }
        Err(error) => {
            tracing::warn!(%error, "metrics without projection figures: the database is unavailable");
            let _ = writeln!(text, "# projection figures unavailable: the database does not answer");
        }
    }
    // Transfers the transfer process set aside (they wait where they stopped): an operator's
    // business while it is not zero.
    match sqlx::query_scalar::<_, i64>("SELECT count(*) FROM transfer_process_parked").fetch_one(&state.pool).await {
        Ok(parked) => {
            let _ = writeln!(
                text,
                "# HELP cqrs_bank_transfers_parked Transfers the transfer process cannot take further now (tried again every minute).
# TYPE cqrs_bank_transfers_parked gauge
cqrs_bank_transfers_parked {parked}"
            );
        }
        Err(error) => tracing::warn!(%error, "metrics without the parked transfers' count"),
    }
    // The replica queries read, if there is one: how far behind the primary it is, and whether
    // queries read it now (as this instance last measured, once a second).
    if let Some(replica) = state.services.read_model.replica_health() {
        let figures = [
            (
                "cqrs_bank_replica_serving",
                "1 when queries read the replica (reachable and close enough).",
                Some(f64::from(u8::from(replica.serving))),
            ),
            (
                "cqrs_bank_replica_lag_bytes",
                "Write-ahead log the replica has not replayed yet.",
                replica.lag_bytes.map(|bytes| bytes as f64),
            ),
            (
                "cqrs_bank_replica_lag_seconds",
                "While the replica is behind, how long ago it replayed its last commit.",
                replica.lag_seconds,
            ),
        ];
        for (name, help, value) in figures {
            if let Some(value) = value {
                let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
            }
        }
    }
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

//! `GET /metrics`, for operators' scrapers: Prometheus text.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use backend::write_side::transfers::PROCESS_NAME;
use eventstore::{ProjectionState, ProjectionStatus};
use metrics::{counter, describe_counter, describe_gauge, gauge};
use metrics_exporter_prometheus::PrometheusBuilder;

use crate::startup::AppState;

const CONTENT_TYPE: HeaderValue = HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");

/// This instance's answers, build and process; its view of the replica; and, from the one
/// instance that leads the transfer process, the figures read from the database (projection
/// lag and progress, parked transfers), which are the same whichever instance reads them: a
/// sum over instances counts them once.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let mut text = state.metrics.render();
    let projections = match state.services.projection_status.get().await {
        Ok(projections) => Some(projections),
        Err(error) => {
            tracing::warn!(%error, "metrics without the database's figures: the database is unavailable");
            None
        }
    };
    let leads =
        projections.as_deref().is_some_and(|projections| leads_transfer_process(projections, &state.instance_id));
    let parked = if leads { parked_transfers(&state).await } else { None };

    // Read at each scrape, so written by a recorder made for it: a figure that is gone (this
    // instance no longer leads; the replica caught up) is not shown with its last value.
    let scrape = PrometheusBuilder::new().build_recorder();
    metrics::with_local_recorder(&scrape, || {
        metrics_process::Collector::default().collect();
        if let Some(replica) = state.services.read_model.replica_health() {
            describe_gauge!(
                "cqrs_bank_replica_serving",
                "1 when queries read the replica (reachable and close enough)."
            );
            gauge!("cqrs_bank_replica_serving").set(f64::from(u8::from(replica.serving)));
            if let Some(bytes) = replica.lag_bytes {
                describe_gauge!("cqrs_bank_replica_lag_bytes", "Write-ahead log the replica has not replayed yet.");
                gauge!("cqrs_bank_replica_lag_bytes").set(bytes as f64);
            }
            if let Some(seconds) = replica.lag_seconds {
                describe_gauge!(
                    "cqrs_bank_replica_lag_seconds",
                    "While the replica is behind, how long ago it replayed its last commit."
                );
                gauge!("cqrs_bank_replica_lag_seconds").set(seconds);
            }
        }
        if leads && let Some(projections) = &projections {
            record_projections(projections);
        }
        if let Some(parked) = parked {
            describe_gauge!(
                "cqrs_bank_transfers_parked",
                "Transfers the transfer process cannot take further now (tried again every minute)."
            );
            gauge!("cqrs_bank_transfers_parked").set(parked as f64);
        }
    });
    text.push_str(&scrape.handle().render());
    if projections.is_none() {
        text.push_str("# the database's figures are unavailable: the database does not answer\n");
    }
    (StatusCode::OK, [(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response()
}

/// Whether this instance leads the transfer process now (as the status, at most a second old,
/// says): the one instance that exports the database's figures.
fn leads_transfer_process(projections: &[ProjectionStatus], instance_id: &str) -> bool {
    projections
        .iter()
        .any(|projection| projection.name == PROCESS_NAME && projection.owner_instance.as_deref() == Some(instance_id))
}

/// Every projection's lag and progress (a partition's, when split), and the cluster's oldest
/// transaction, which they all wait for.
fn record_projections(projections: &[ProjectionStatus]) {
    describe_gauge!("cqrs_bank_projection_lag_events", "Events after the projection's checkpoint.");
    describe_gauge!("cqrs_bank_projection_lag_seconds", "Age of the oldest event not yet applied.");
    describe_counter!("cqrs_bank_projection_events_applied_total", "Events applied since the projection was created.");
    describe_gauge!("cqrs_bank_projection_failed", "1 when the projection is stopped at an event.");
    describe_gauge!(
        "cqrs_bank_oldest_transaction_seconds",
        "How long the cluster's oldest open transaction has run; projections wait for it."
    );
    for projection in projections {
        let label = [("projection", projection.name.clone())];
        gauge!("cqrs_bank_projection_lag_events", &label).set(projection.lag_events as f64);
        gauge!("cqrs_bank_projection_lag_seconds", &label).set(projection.lag_seconds);
        counter!("cqrs_bank_projection_events_applied_total", &label).absolute(projection.events_applied.max(0) as u64);
        gauge!("cqrs_bank_projection_failed", &label)
            .set(f64::from(u8::from(projection.state == ProjectionState::Failed)));
    }
    let oldest = projections.first().map_or(0.0, |projection| projection.oldest_transaction_seconds);
    gauge!("cqrs_bank_oldest_transaction_seconds").set(oldest);
}

/// Transfers the transfer process set aside (they wait where they stopped): an operator's
/// business while it is not zero.
async fn parked_transfers(state: &AppState) -> Option<i64> {
    match sqlx::query_scalar("SELECT count(*) FROM transfer_process_parked").fetch_one(&state.pool).await {
        Ok(parked) => Some(parked),
        Err(error) => {
            tracing::warn!(%error, "metrics without the parked transfers' count");
            None
        }
    }
}

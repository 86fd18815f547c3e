use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use eventstore::ProjectionState;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::startup::AppState;

/// How long an answer is given again without asking the database.
const FRESH_FOR: Duration = Duration::from_secs(1);
/// How long the database may take to answer; then the answer is 503, given again as any other.
const ASK_AT_MOST: Duration = Duration::from_secs(2);

/// Liveness, for anyone: 200 while the database answers one trivial query, else 503; `"degraded"`
/// when a projection has failed or no instance runs it. No internals (no error text, no instance
/// or projection names): operators read those on the operations page and at `/metrics`. An
/// answer is given again for a second, so however many probe it (anyone may), the database is
/// asked at most once a second (and waited for at most [`ASK_AT_MOST`]).
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let (status, word) = state.health.answer(|| probe(&state)).await;
    (status, Json(json!({ "status": word })))
}

async fn probe(state: &AppState) -> (StatusCode, &'static str) {
    if let Err(error) = sqlx::query("SELECT 1").execute(&state.pool).await {
        tracing::warn!(%error, "health: the database does not answer");
        return (StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    }
    let degraded = match state.services.projection_status.get().await {
        Ok(projections) => projections.iter().any(|p| p.state == ProjectionState::Failed || p.owner_instance.is_none()),
        Err(error) => {
            tracing::warn!(%error, "health: the projections' status cannot be read");
            true
        }
    };
    (StatusCode::OK, if degraded { "degraded" } else { "ok" })
}

/// The last answer and when it was made. Probes that arrive while one is being made wait for
/// it rather than asking too.
#[derive(Default)]
pub struct HealthCache(Mutex<Option<(Instant, StatusCode, &'static str)>>);

impl HealthCache {
    /// The answer of less than [`FRESH_FOR`] ago, or a new one from `ask`.
    async fn answer<F, Fut>(&self, ask: F) -> (StatusCode, &'static str)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = (StatusCode, &'static str)>,
    {
        let mut last = self.0.lock().await;
        if let Some((at, status, word)) = *last
            && at.elapsed() < FRESH_FOR
        {
            return (status, word);
        }
        let (status, word) =
            tokio::time::timeout(ASK_AT_MOST, ask()).await.unwrap_or((StatusCode::SERVICE_UNAVAILABLE, "unavailable"));
        *last = Some((Instant::now(), status, word));
        (status, word)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_answer_is_given_again_for_a_second_then_asked_anew() {
        let cache = HealthCache::default();
        let asked = std::sync::atomic::AtomicUsize::new(0);
        let ask = || async {
            asked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            (StatusCode::OK, "ok")
        };
        for _ in 0..100 {
            assert_eq!(cache.answer(ask).await, (StatusCode::OK, "ok"));
        }
        tokio::time::advance(FRESH_FOR / 2).await;
        cache.answer(ask).await;
        assert_eq!(asked.load(std::sync::atomic::Ordering::Relaxed), 1, "asked once within the second");
        tokio::time::advance(FRESH_FOR).await;
        cache.answer(ask).await;
        assert_eq!(asked.load(std::sync::atomic::Ordering::Relaxed), 2, "asked again after it");
    }

    #[tokio::test(start_paused = true)]
    async fn a_database_that_does_not_answer_is_unavailable_and_that_answer_kept() {
        let cache = HealthCache::default();
        let hanging = || std::future::pending::<(StatusCode, &'static str)>();
        assert_eq!(cache.answer(hanging).await, (StatusCode::SERVICE_UNAVAILABLE, "unavailable"));
        let never_asked = || async { unreachable!("the answer of a moment ago is given") };
        assert_eq!(cache.answer(never_asked).await, (StatusCode::SERVICE_UNAVAILABLE, "unavailable"));
    }
}

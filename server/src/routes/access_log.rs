//! The access log: one INFO line per response, with the method, the matched route (not the raw
//! path: an account id in a path names someone's account, and would split one route into
//! millions), the status, how long the answer took to start, the request id and the user.
//! `LOG_FORMAT=json` writes it, as every line, as JSON (see `telemetry`). The same observation
//! is counted and timed for `/metrics`.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use uuid::Uuid;

use crate::metrics::Metrics;

/// Where authentication leaves the id of the user it found, for the access log to name.
#[derive(Clone, Default)]
pub struct Requester(Arc<Mutex<Option<Uuid>>>);

impl Requester {
    /// Notes who the request is from (authentication calls it).
    pub fn found(&self, user_id: Uuid) {
        *self.0.lock().expect("the requester is never poisoned") = Some(user_id);
    }

    fn user_id(&self) -> Option<Uuid> {
        *self.0.lock().expect("the requester is never poisoned")
    }
}

/// Logs the response to every request (inside the request's span, which holds its id), and
/// records it in this instance's metrics.
pub async fn access_log(State(metrics): State<Arc<Metrics>>, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = route(request.extensions().get::<MatchedPath>().map(MatchedPath::as_str), request.uri().path());
    let request_id = request.headers().get("x-request-id").and_then(|id| id.to_str().ok()).unwrap_or("").to_owned();
    let requester = Requester::default();
    request.extensions_mut().insert(requester.clone());
    let response = next.run(request).await;
    let elapsed = started.elapsed();
    metrics.record_response(&method, &route, response.status(), elapsed);
    let user_id = requester.user_id().map(|user_id| user_id.to_string());
    tracing::info!(
        target: "access",
        %method,
        route,
        status = response.status().as_u16(),
        latency_ms = (elapsed.as_secs_f64() * 1_000_000.0).round() / 1000.0,
        request_id,
        user_id = user_id.as_deref().unwrap_or("-"),
        "answered"
    );
    response
}

/// The route a request matched, as the router wrote it (`/accounts/{id}`); a path the router
/// matched by a wildcard or not at all is named by its kind, never by the path a client chose.
fn route(matched: Option<&str>, path: &str) -> String {
    match matched {
        Some(matched) if !matched.contains('*') => matched.to_owned(),
        _ if path.starts_with("/pkg/") => "/pkg/*".to_owned(),
        _ => "(unmatched)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    /// A writer that keeps what the log wrote, for the test to read.
    #[derive(Clone, Default)]
    struct Kept(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Kept {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn routes_are_named_as_the_router_wrote_them_never_by_a_clients_path() {
        assert_eq!(route(Some("/accounts/{id}"), "/accounts/3f0e"), "/accounts/{id}");
        assert_eq!(route(Some("/api/{*fn_name}"), "/api/commands/deposit"), "(unmatched)");
        assert_eq!(route(None, "/pkg/cqrs-bank.0123.wasm"), "/pkg/*");
        assert_eq!(route(None, "/wp-admin/anything"), "(unmatched)");
    }

    #[tokio::test]
    async fn every_response_gets_one_line_with_its_route_status_request_and_user() {
        let kept = Kept::default();
        let writer = kept.clone();
        let subscriber = tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let user = Uuid::new_v4();
        async fn found(request: Request, next: Next) -> Response {
            let user: Uuid = request.headers()["x-test-user"].to_str().unwrap().parse().unwrap();
            request.extensions().get::<Requester>().unwrap().found(user);
            next.run(request).await
        }
        let router: Router = Router::new()
            .route("/accounts/{id}", get(|| async { "an account" }))
            .layer(axum::middleware::from_fn(found))
            .layer(axum::middleware::from_fn_with_state(Arc::new(Metrics::new()), access_log));
        let request = Request::get("/accounts/someones-account-id")
            .header("x-request-id", "req-1")
            .header("x-test-user", user.to_string())
            .body(Body::empty())
            .unwrap();
        assert_eq!(router.oneshot(request).await.unwrap().status(), 200);
        let logged = String::from_utf8(kept.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = logged.lines().filter(|line| line.contains("answered")).collect();
        assert_eq!(lines.len(), 1, "{logged}");
        let line = lines[0];
        assert!(line.contains("INFO"), "{line}");
        for expected in ["method=GET", "route=\"/accounts/{id}\"", "status=200", "request_id=\"req-1\""] {
            assert!(line.contains(expected), "{expected} in {line}");
        }
        assert!(line.contains(&user.to_string()), "{line}");
        assert!(!line.contains("someones-account-id"), "the raw path is not logged: {line}");
    }
}

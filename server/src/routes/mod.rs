//! The HTTP surface: the pages and server functions Leptos routes, the few routes of our own,
//! and the layers every request passes, listed from the outside in.

pub mod access_log;
pub mod accounts;
pub mod bundle;
pub mod caching_and_compression;
pub mod client_address;
pub mod cross_site;
pub mod health;
pub mod identity;
pub mod json_bodies;
pub mod json_errors;
pub mod live;
pub mod metrics;
pub mod openapi;
pub mod rate_limits;

use std::sync::Arc;

use app::api::ApiError;
use app::api::limits::RouteLimiters;
use app::ui::{App, shell};
use axum::body::Body;
use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use leptos::prelude::provide_context;
use leptos_axum::{LeptosRoutes, file_and_error_handler_with_context, generate_route_list};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::{RequestBodyTimeoutLayer, ResponseBodyTimeoutLayer, TimeoutLayer};
use tower_http::trace::TraceLayer;

use crate::configuration::Settings;
use crate::startup::AppState;

/// Every route, and the layers every request passes, from the outside in.
pub fn router(state: AppState, settings: &Settings) -> Router {
    let leptos_options = state.leptos_options.clone();
    let bundle = bundle::routes(&leptos_options.site_root, &leptos_options.site_pkg_dir, leptos_options.hash_files);
    let provide_services = {
        let services = state.services.clone();
        move || provide_context(services.clone())
    };
    let routes = Router::new()
        .leptos_routes_with_context(&state, generate_route_list(App), provide_services.clone(), move || {
            shell(leptos_options.clone())
        })
        // A page streams as its resources resolve; one that stalls (a resource that never
        // resolves: Leptos has had such bugs) is cut off, not held open for good. Not for the
        // live stream, which is quiet between messages.
        .route_layer(ResponseBodyTimeoutLayer::new(settings.request_timeout))
        .route("/api/queries/accounts/{id}", get(accounts::get_account))
        .route("/api/queries/accounts/{id}/statement.csv", get(accounts::get_statement_csv))
        .route("/api/live", get(live::live))
        .route("/health", get(health::health))
        .route("/metrics", get(metrics::metrics))
        .route("/api/openapi.json", get(openapi::openapi))
        .merge(bundle)
        .fallback(file_and_error_handler_with_context::<AppState, _>(provide_services, shell));

    let layers = ServiceBuilder::new()
        // On every response, refusals too: the policy below, no guessing of content types, and
        // no full URLs (with account ids) sent to other sites as referrers.
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(header::REFERRER_POLICY, HeaderValue::from_static("same-origin")))
        // Every request gets an id of ours (`x-request-id`, also in the response and in
        // commands' event metadata) and a line in the access log. One a client sent is dropped:
        // it would otherwise be kept (and stored in events).
        .map_request(|mut request: Request<Body>| {
            request.headers_mut().remove("x-request-id");
            request
        })
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request<Body>| {
            let request_id = request.headers().get("x-request-id").and_then(|id| id.to_str().ok()).unwrap_or("");
            tracing::info_span!("request", method = %request.method(), request_id)
        }))
        .layer(axum::middleware::from_fn_with_state(state.metrics.clone(), access_log::access_log))
        .layer(catch_panics())
        .layer(axum::middleware::from_fn(caching_and_compression::no_compression_for_secrets))
        // Inside that, and outside every layer that writes a response's body, so that it
        // compresses the final one.
        .layer(caching_and_compression::compression())
        .layer(caching_and_compression::no_store_unless_set())
        .layer(axum::middleware::from_fn(json_errors::json_errors))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(settings.allowed_hosts.clone()),
            cross_site::allowed_hosts_only,
        ))
        .layer(axum::middleware::from_fn(cross_site::same_site_json_only))
        // A body that trickles in is not waited for long, and a request that cannot be answered
        // in time (a database that hangs) is answered 503; `json_errors` gives both the JSON
        // shape.
        .layer(RequestBodyTimeoutLayer::new(settings.request_timeout))
        .map_request(|request: Request<_>| request.map(Body::new))
        .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, settings.request_timeout))
        // Who is asking: the layers inside and the handlers see the caller.
        .layer(axum::middleware::from_fn_with_state(state.clone(), identity::authenticate))
        // The limiter the limited routes' own rules check (sign-in, sign-up, commands:
        // `app::api::limits`); who is asking is known by then.
        .layer(Extension(RouteLimiters(Arc::new(state.rate_limits.clone()))))
        .layer(RequestBodyLimitLayer::new(settings.body_limit))
        // Innermost: its look at a body's first bytes is bounded by the limit and the timeouts
        // above, and made only for a caller authentication let through.
        .map_request(|request: Request<_>| request.map(Body::new))
        .layer(axum::middleware::from_fn(json_bodies::objects_only));
    routes.layer(layers).with_state(state)
}

/// What a response may do in a browser when nothing stricter was set: not be framed by other
/// sites (clickjacking a "Withdraw" button), nor load plugins, nor change its base URL or post
/// forms elsewhere. Pages set their own, stricter policy, with a script nonce
/// (`app::ui::shell`).
const CONTENT_SECURITY_POLICY: &str = "frame-ancestors 'none'; base-uri 'self'; form-action 'self'; object-src 'none'";

/// A panic in a handler is a bug of ours: answered 500 in the JSON error shape (and logged),
/// never a dropped connection.
pub fn catch_panics() -> CatchPanicLayer<fn(Box<dyn std::any::Any + Send>) -> Response> {
    fn respond(panic: Box<dyn std::any::Any + Send>) -> Response {
        let message = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("a panic without a message");
        tracing::error!(panic = message, "a request handler panicked");
        // Outside the cache-control layer: kept by no cache, as every answer but the bundle.
        let mut response = ApiError::internal().into_response();
        response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
    CatchPanicLayer::custom(respond as fn(Box<dyn std::any::Any + Send>) -> Response)
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn a_panicking_handler_answers_500_in_the_json_error_shape() {
        async fn boom() -> &'static str {
            panic!("boom")
        }
        let router: Router = Router::new().route("/boom", get(boom)).layer(catch_panics());
        let response = router.oneshot(Request::get("/boom").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(response.headers()["cache-control"], "no-store");
        let body = axum::body::to_bytes(response.into_body(), 1024).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], "internal");
    }
}

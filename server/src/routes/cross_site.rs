//! Cross-site safety for every `POST` under `/api/`: a web page on another site can make a
//! visitor's browser send a "simple" request (a form, or `fetch` with `text/plain`) without
//! asking first, and it would carry the visitor's cookies. So the API takes only JSON — which a
//! browser sends cross-site only after a CORS preflight this server never grants — and, when the
//! browser says where a request comes from (`Origin`, `Sec-Fetch-Site`), only from this site.
//! Clients that are not browsers send neither header and are unaffected; requests with an
//! `Authorization` header carry no ambient credential (a browser never adds one by itself, and
//! another site cannot without a preflight) and are exempt.

use app::api::{ApiError, ErrorCode};
use axum::extract::Request;
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

pub async fn same_site_json_only(request: Request, next: Next) -> Response {
    if request.method() == Method::POST
        && request.uri().path().starts_with("/api/")
        && !request.headers().contains_key(header::AUTHORIZATION)
        && let Err(refusal) = check(&request)
    {
        return refusal.into_response();
    }
    next.run(request).await
}

fn check(request: &Request) -> Result<(), ApiError> {
    let headers = request.headers();
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok()).unwrap_or("");
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    if !media_type.eq_ignore_ascii_case("application/json") {
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            format!("the request body must be JSON (Content-Type: application/json), not {content_type:?}"),
        ));
    }
    let cross_site = || ApiError::new(ErrorCode::Forbidden, "requests from other sites are not accepted");
    if let Some(site) = headers.get("sec-fetch-site") {
        // `none`: typed in the address bar or sent by the browser itself.
        if !matches!(site.as_bytes(), b"same-origin" | b"none") {
            return Err(cross_site());
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers.get(header::HOST).and_then(|value| value.to_str().ok()).unwrap_or("");
        let origin_host = origin.to_str().ok().and_then(|origin| origin.split_once("://")).map(|(_, host)| host);
        if origin_host != Some(host) || host.is_empty() {
            return Err(cross_site());
        }
    }
    Ok(())
}

/// With `ALLOWED_HOSTS` set, a request for any other host name is refused (400): a name someone
/// else points at this server serves nothing, and no answer is built for a forged `Host`.
pub async fn allowed_hosts_only(
    axum::extract::State(allowed): axum::extract::State<std::sync::Arc<Vec<String>>>,
    request: Request,
    next: Next,
) -> Response {
    if allowed.is_empty() {
        return next.run(request).await;
    }
    let host = request.headers().get(header::HOST).and_then(|value| value.to_str().ok()).unwrap_or("");
    // Without the port; an IPv6 literal keeps its brackets.
    let name = match host.rsplit_once(':') {
        Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    if allowed.iter().any(|allowed| allowed.eq_ignore_ascii_case(name)) {
        next.run(request).await
    } else {
        ApiError::invalid_request(format!("this server does not answer for the host {host:?}")).into_response()
    }
}

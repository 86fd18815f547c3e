//! Who is asking, for every request: a bearer token (`Authorization: Bearer cqb_…`) or the
//! session cookie, looked up once here and handed to the handlers as an [`backend::identity::Caller`]
//! in the request's extensions. Then the coarse rules that need no more than that:
//!
//! - the API (`/api/…`) needs a caller, except signing in and up: 401 otherwise;
//! - `/metrics` is for operators;
//! - pages send a signed-out visitor to sign-in, and back to the page after it.
//!
//! Which accounts a caller may see or move is decided by the API and the domain.

use std::net::SocketAddr;

use app::api::limits::{ClientAddress, too_many};
use app::api::{ApiError, ErrorCode};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use backend::identity::{Caller, Credential, Presented, Secret, TokenScope, sessions, tokens};

use crate::routes::access_log::Requester;
use crate::startup::AppState;

/// Paths anyone may reach: signing in, up and out, asking who is signed in (nobody), liveness,
/// the API's description, the WASM bundle and styles.
fn is_public(path: &str) -> bool {
    matches!(
        path,
        "/sign-in"
            | "/sign-up"
            | "/health"
            | "/api/openapi.json"
            | "/favicon.ico"
            | "/api/auth/sign-in"
            | "/api/auth/sign-up"
            | "/api/auth/sign-out"
            | "/api/auth/me"
    ) || path.starts_with("/pkg/")
}

/// Finds who is asking (and from which address: [`ClientAddress`], for the limits kept per
/// address) and applies the coarse rules. Credentials that name somebody are never
/// refused for what others sent from the same address: only a well-formed token that names
/// nobody counts against the address (60 a minute, then 429 instead of 401), so that guessing
/// is slow and a flood of junk from a shared address (a proxy, a NAT) locks nobody out.
pub async fn authenticate(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut request: Request,
    next: Next,
) -> Response {
    let client = state.trusted_proxies.client_address(peer.ip(), request.headers());
    request.extensions_mut().insert(ClientAddress(client));
    let authorization = request.headers().get(header::AUTHORIZATION).cloned();
    let cookie = request.headers().get(header::COOKIE).cloned();
    let (caller, presented) = match find_caller(&state, authorization, cookie).await {
        Ok(found) => found,
        Err(NoCaller::UnknownToken(refusal)) => {
            return match state.rate_limits.count_bad_credentials(client) {
                Ok(()) => refusal.into_response(),
                Err(wait) => too_many(wait),
            };
        }
        Err(NoCaller::Refused(refusal)) => return refusal.into_response(),
    };
    let path = request.uri().path().to_owned();
    // A session cookie that names nobody (expired, signed out elsewhere, reset) is removed from
    // the browser with the answer to a page's load, so that it stops sending it. Not with an
    // API answer: one sent before a sign-in, answered after it, would remove the new cookie.
    let page_load =
        request.method() == axum::http::Method::GET && !path.starts_with("/api/") && !path.starts_with("/pkg/");
    let dead_cookie = page_load && caller.is_none() && matches!(presented, Some(Presented::Session(_)));
    let mut response = match &caller {
        Some(caller) => {
            if path == "/metrics" && !caller.is_operator() {
                return ApiError::operators_only().into_response();
            }
            if let Credential::Token { scope, .. } = caller.credential
                && !scope_allows(scope, request.method(), &path)
            {
                return ApiError::new(ErrorCode::Forbidden, format!("this token's scope is {}", scope.as_str()))
                    .into_response();
            }
            if let Some(requester) = request.extensions().get::<Requester>() {
                requester.found(caller.user_id);
            }
            request.extensions_mut().insert(caller.clone());
            // What named them, for a long-lived request to check again (a live stream).
            if let Some(presented) = presented {
                request.extensions_mut().insert(presented);
            }
            next.run(request).await
        }
        None if is_public(&path) => next.run(request).await,
        None if path.starts_with("/api/") || path == "/metrics" => ApiError::unauthenticated().into_response(),
        None => send_to_sign_in(&request),
    };
    if dead_cookie {
        clear_dead_cookie(&mut response, state.services.secure_cookies);
    }
    response
}

/// Adds the `Set-Cookie` that removes the session cookie, unless the answer sets one itself
/// (a sign-in's new session must not be removed by it).
fn clear_dead_cookie(response: &mut Response, secure: bool) {
    let name = format!("{}=", sessions::cookie_name(secure));
    let sets_its_own = response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .any(|value| value.as_bytes().starts_with(name.as_bytes()));
    if !sets_its_own && let Ok(clear) = HeaderValue::from_str(&sessions::clear_cookie(secure)) {
        response.headers_mut().append(header::SET_COOKIE, clear);
    }
}

/// Whether a token of `scope` may make this request: `full`, anything its owner may; `read`,
/// the queries, the live stream and who it is; `metrics`, `/metrics` only.
fn scope_allows(scope: TokenScope, method: &axum::http::Method, path: &str) -> bool {
    match scope {
        TokenScope::Full => true,
        TokenScope::Read => {
            path.starts_with("/api/queries/")
                || path.starts_with("/api/status/")
                || path == "/api/auth/me"
                || (method == axum::http::Method::GET && path == "/api/live")
        }
        TokenScope::Metrics => path == "/metrics",
    }
}

/// Why a request has no caller although it presented credentials.
enum NoCaller {
    /// A well-formed bearer token that names nobody (unknown, revoked): what a guesser sends.
    UnknownToken(ApiError),
    /// A malformed `Authorization` header or token (no look-up was paid for), or the look-up
    /// failed.
    Refused(ApiError),
}

/// The caller a request's credentials name, and the credentials. A bearer token that names
/// nobody (unknown, revoked) is refused outright; a session cookie that does (expired, signed
/// out) counts as signed out, as a browser holding a stale cookie should see.
async fn find_caller(
    state: &AppState,
    authorization: Option<HeaderValue>,
    cookie: Option<HeaderValue>,
) -> Result<(Option<Caller>, Option<Presented>), NoCaller> {
    let pool = &state.services.pool;
    if let Some(authorization) = authorization {
        let token = authorization
            .to_str()
            .ok()
            .and_then(|value| value.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token)
            .map(|token| Secret::from_client(token.trim()))
            .ok_or_else(|| {
                NoCaller::Refused(ApiError::new(ErrorCode::Unauthenticated, "Authorization: expected 'Bearer <token>'"))
            })?;
        let unknown = || ApiError::new(ErrorCode::Unauthenticated, "the API token is unknown or revoked");
        // Not the shape of a token: refused without a look-up, so it costs nothing to count.
        if !token.well_formed(tokens::PREFIX) {
            return Err(NoCaller::Refused(unknown()));
        }
        let presented = Presented::Token(token);
        return match state.services.callers.find(pool, &presented).await {
            Ok(Some(caller)) => Ok((Some(caller), Some(presented))),
            Ok(None) => Err(NoCaller::UnknownToken(unknown())),
            Err(error) => Err(NoCaller::Refused(error.into())),
        };
    }
    let cookie = cookie.as_ref().and_then(|value| value.to_str().ok());
    let secure = state.services.secure_cookies;
    let session = cookie.and_then(|cookie| sessions::from_cookie_header(cookie, secure));
    let Some(presented) = session.map(Presented::Session) else {
        return Ok((None, None));
    };
    match state.services.callers.find(pool, &presented).await {
        Ok(caller) => Ok((caller, Some(presented))),
        Err(error) => Err(NoCaller::Refused(error.into())),
    }
}

/// 303 to the sign-in page, which sends the visitor back here afterwards.
fn send_to_sign_in(request: &Request) -> Response {
    let here = request.uri().path_and_query().map_or("/", |path| path.as_str());
    let location = format!("/sign-in?next={}", percent_encode(here));
    match HeaderValue::from_str(&location) {
        Ok(location) => (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response(),
        Err(_) => (StatusCode::SEE_OTHER, [(header::LOCATION, HeaderValue::from_static("/sign-in"))]).into_response(),
    }
}

/// Everything but unreserved characters and `/` escaped, for a path inside a query value.
fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~' | b'/') {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_way_back_is_escaped_into_one_query_value() {
        assert_eq!(percent_encode("/accounts/1?x=a&b"), "/accounts/1%3Fx%3Da%26b");
    }
}

//! Caching and compression: which answers a cache may keep, and which are compressed.
//!
//! Only the bundle may be kept (`bundle`, which sets its own headers); every other answer is
//! kept by no cache. Pages and JSON are compressed as they are sent (see [`compression`]); the
//! bundle was compressed when it was built.

use app::api::identity::{CreateToken, SignIn, SignUp};
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use leptos::server_fn::ServerFn;
use tower_http::compression::{CompressionLayer, CompressionLevel};
use tower_http::set_header::SetResponseHeaderLayer;

/// `Cache-Control: no-store` on every answer that set no caching of its own (all but the
/// bundle's): pages, JSON, the live stream, `/health`, a missing file's 404. Kept by no cache,
/// shared or not: most depend on who is signed in, and a proxy's copy of one would show it to
/// someone else (and the browser's, after sign-out, to whoever uses the computer next).
pub fn no_store_unless_set() -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::if_not_present(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))
}

/// Brotli or gzip (the two encodings built in), as the client accepts, for pages and JSON answers above 32 bytes; never for
/// the live stream (an event stream must not wait for a compressor's buffer), nor for answers
/// that already are (the precompressed bundle).
///
/// The fastest level: a few percent larger than the best, at a fraction of the CPU, which is
/// what every answer would otherwise pay for on the server's cores.
pub fn compression() -> CompressionLayer {
    CompressionLayer::new().quality(CompressionLevel::Fastest)
}

/// A compressed answer whose size an observer sees, and in which part of the text is the
/// observer's choice, leaks the rest a guess at a time (BREACH). So these are not compressed:
/// answers that carry a secret (a new bearer token, a session being set up); and answers to requests another site had the browser send (`Sec-Fetch-Site`
/// `cross-site` or `same-site`), where that site chose the URL and the user's cookie went along.
/// Without `Accept-Encoding` the compression layer leaves the answer alone. The bundle is
/// exempt: it holds nothing private.
pub async fn no_compression_for_secrets(mut request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let secret = carries_secret(path);
    let from_another_site = !path.starts_with("/pkg/")
        && request
            .headers()
            .get("sec-fetch-site")
            .is_some_and(|site| site.as_bytes() == b"cross-site" || site.as_bytes() == b"same-site");
    if secret || from_another_site {
        request.headers_mut().remove(header::ACCEPT_ENCODING);
    }
    next.run(request).await
}

fn carries_secret(path: &str) -> bool {
    [<SignIn as ServerFn>::PATH, <SignUp as ServerFn>::PATH, <CreateToken as ServerFn>::PATH].contains(&path)
}

#[cfg(test)]
mod tests {
    use super::carries_secret;

    #[test]
    fn only_the_answers_with_secrets_are_left_uncompressed() {
        assert!(carries_secret("/api/tokens/create"));
        assert!(carries_secret("/api/auth/sign-in"));
        assert!(!carries_secret("/api/tokens/list"));
        assert!(!carries_secret("/api/queries/accounts/1"));
        assert!(!carries_secret("/"));
    }
}

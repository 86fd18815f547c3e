//! What crosses the wire besides the answer itself: how long a browser may keep the bundle,
//! and which answers are compressed.
//!
//! The bundle (`/pkg/…`: the WASM, its JS glue, the styles) is precompressed at build time
//! (`cargo leptos build --release --precompress` writes `.br` and `.gz` beside each file, and
//! Leptos's file handler serves them to browsers that accept them). With `hash-files` its names
//! carry a hash of their content, so a browser may keep them for a year without asking again: a
//! new build has new names. Pages and JSON are compressed as they are sent (see
//! [`compression`]).

use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use tower_http::compression::{CompressionLayer, CompressionLevel};

/// A year, and never revalidated: the name changes with the content.
const IMMUTABLE: HeaderValue = HeaderValue::from_static("public, max-age=31536000, immutable");
/// Unhashed names (a debug build) may change content under the same name: ask every time (the
/// answer is a cheap 304 when nothing changed).
const REVALIDATE: HeaderValue = HeaderValue::from_static("no-cache");

/// Adds `Cache-Control` to the bundle's successful answers: immutable when its names are
/// hashed (`hashed_names`), revalidated otherwise. A missing file (404) is not cached. And
/// `Vary: Accept-Encoding`, which the file handler leaves out, so that a shared cache does not
/// hand a brotli copy to a client that asked for gzip.
pub async fn cache_bundle(hashed_names: bool, request: Request, next: Next) -> Response {
    let is_bundle = request.uri().path().starts_with("/pkg/");
    let mut response = next.run(request).await;
    if is_bundle && response.status().is_success() {
        let policy = if hashed_names { IMMUTABLE } else { REVALIDATE };
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, policy);
        headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    response
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

/// Answers that carry a secret (a new bearer token, a session being set up) are not compressed:
/// a compressed answer whose size an observer sees, and in which part of the text is the
/// observer's choice, leaks the secret a guess at a time (BREACH). Without `Accept-Encoding` the
/// compression layer leaves the answer alone.
pub async fn no_compression_for_secrets(mut request: Request, next: Next) -> Response {
    if carries_secret(request.uri().path()) {
        request.headers_mut().remove(header::ACCEPT_ENCODING);
    }
    next.run(request).await
}

fn carries_secret(path: &str) -> bool {
    matches!(path, "/api/auth/sign-in" | "/api/auth/sign-up" | "/api/tokens/create")
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

//! Caching and compression: how long a browser may keep the bundle, and which responses are
//! compressed.
//!
//! The bundle (`/pkg/…`: the WASM, its JS glue, the styles) is precompressed at build time
//! (`cargo xtask site`, like `cargo leptos build --release --precompress`, writes `.br` and `.gz`
//! beside each file, and Leptos's file handler serves them to browsers that accept them). With
//! `hash-files` its names carry a hash of their content, so a browser may keep them for a year
//! without asking again: a new build has new names. Pages and JSON are compressed as they are
//! sent (see [`compression`]).

use app::api::identity::{CreateToken, SignIn, SignUp};
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use leptos::server_fn::ServerFn;
use tower_http::compression::{CompressionLayer, CompressionLevel};

/// A year, and never revalidated: the name changes with the content.
const IMMUTABLE: HeaderValue = HeaderValue::from_static("public, max-age=31536000, immutable");
/// Unhashed names (a debug build, a leftover of one) may change content under the same name:
/// ask every time. (Leptos's file handler answers no conditional request, so "asking" means the
/// whole file again: debug builds only.)
const REVALIDATE: HeaderValue = HeaderValue::from_static("no-cache");
/// Everything but the bundle: pages, JSON, the live stream, `/health`. Kept by no cache, shared
/// or not: most depend on who is signed in, and a proxy's copy of one would show it to someone
/// else (and the browser's, after sign-out, to whoever uses the computer next).
const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");

/// Adds `Cache-Control` to every answer. The bundle's successful answers: immutable for a file
/// named by its content (`hashed_names`, and the name has the hash: `cqrs-bank.<hash>.wasm`),
/// revalidated otherwise, with `Vary: Accept-Encoding`, which the file handler leaves out, so
/// that a shared cache does not hand a brotli copy to a client that asked for gzip. Every
/// other answer (a missing file's 404 too): `no-store`.
pub async fn cache_control(hashed_names: bool, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let is_bundle = path.starts_with("/pkg/");
    let immutable = hashed_names && named_by_content(path);
    let mut response = next.run(request).await;
    let served_bundle = is_bundle && response.status().is_success();
    let headers = response.headers_mut();
    if served_bundle {
        let policy = if immutable { IMMUTABLE } else { REVALIDATE };
        headers.insert(header::CACHE_CONTROL, policy);
        headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    } else {
        headers.insert(header::CACHE_CONTROL, NO_STORE);
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

/// `cqrs-bank.<hash>.wasm`, as the site build (and cargo-leptos) names the bundle with
/// `hash-files`; not `cqrs-bank.wasm` nor `snippets/…/inline0.js`.
fn named_by_content(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or_default();
    name.split('.').filter(|part| !part.is_empty()).count() >= 3
}

#[cfg(test)]
mod tests {
    use super::{carries_secret, named_by_content};

    #[test]
    fn only_names_with_a_content_hash_are_cached_for_good() {
        assert!(named_by_content("/pkg/cqrs-bank.0123abcd.wasm"));
        assert!(!named_by_content("/pkg/cqrs-bank.wasm"));
        assert!(!named_by_content("/pkg/cqrs-bank_bg.wasm"));
        assert!(!named_by_content("/pkg/snippets/x/inline0.js"));
    }

    #[test]
    fn only_the_answers_with_secrets_are_left_uncompressed() {
        assert!(carries_secret("/api/tokens/create"));
        assert!(carries_secret("/api/auth/sign-in"));
        assert!(!carries_secret("/api/tokens/list"));
        assert!(!carries_secret("/api/queries/accounts/1"));
        assert!(!carries_secret("/"));
    }
}

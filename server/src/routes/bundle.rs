//! The bundle (`/pkg/…`: the WASM, its JS glue, the styles), served from disk with the headers
//! that let browsers keep it.
//!
//! It is precompressed at build time (`cargo xtask site`, like `cargo leptos build --release
//! --precompress`, writes `.br` and `.gz` beside each file): tower-http's file service sends the
//! smallest copy the browser accepts, and answers `304 Not Modified` to a browser that asks
//! whether its copy is still good (`If-Modified-Since`). With `hash-files` the names carry a
//! hash of their content, so a browser may keep them for a year without asking again: a new
//! build has new names.

use std::path::Path;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use tower_http::services::ServeDir;

/// A year, and never revalidated: the name changes with the content.
const IMMUTABLE: HeaderValue = HeaderValue::from_static("public, max-age=31536000, immutable");
/// Unhashed names (a debug build, a leftover of one) may change content under the same name:
/// asked about every time (a `304` when unchanged).
const REVALIDATE: HeaderValue = HeaderValue::from_static("no-cache");

/// `/pkg/…` from `<site_root>/<pkg_dir>`, with its caching headers; `hashed_names` when the build
/// names files by their content.
pub fn routes<S: Clone + Send + Sync + 'static>(site_root: &str, pkg_dir: &str, hashed_names: bool) -> Router<S> {
    let files = ServeDir::new(Path::new(site_root).join(pkg_dir)).precompressed_br().precompressed_gzip();
    Router::new()
        .nest_service(&format!("/{pkg_dir}"), files)
        .layer(axum::middleware::from_fn(move |request, next| cache_headers(hashed_names, request, next)))
}

/// On a file served (or found unchanged): immutable for a file named by its content, revalidated
/// otherwise, and `Vary: Accept-Encoding`, so that a shared cache does not hand a brotli copy to
/// a client that asked for gzip. A missing file's 404 gets none (the router's `no-store`).
async fn cache_headers(hashed_names: bool, request: Request, next: Next) -> Response {
    let immutable = hashed_names && named_by_content(request.uri().path());
    let mut response = next.run(request).await;
    if response.status().is_success() || response.status().is_redirection() {
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, if immutable { IMMUTABLE } else { REVALIDATE });
        headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    response
}

/// `cqrs-bank.<hash>.wasm`, as the site build (and cargo-leptos) names the bundle with
/// `hash-files`; not `cqrs-bank.wasm` nor `snippets/…/inline0.js`.
fn named_by_content(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or_default();
    name.split('.').filter(|part| !part.is_empty()).count() >= 3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_with_a_content_hash_are_cached_for_good() {
        assert!(named_by_content("/pkg/cqrs-bank.0123abcd.wasm"));
        assert!(!named_by_content("/pkg/cqrs-bank.wasm"));
        assert!(!named_by_content("/pkg/cqrs-bank_bg.wasm"));
        assert!(!named_by_content("/pkg/snippets/x/inline0.js"));
    }
}

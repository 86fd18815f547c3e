//! The API's bodies are JSON objects, as the contract says. Server functions decode their
//! arguments with serde's derived code, which also reads an array as the fields in order:
//! `["alice", 100, null]` would create an account. Refused here, before anything is decoded.

use app::api::ApiError;
use axum::body::Body;
use axum::extract::Request;
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;

/// Looks at a `POST /api/…` body's first character that is not white space, reading only the
/// chunks up to it (the rest streams on, under the body limit and timeout): anything but `{` is
/// 400. A body that is empty, or that cannot be read, is left to the route, which says why.
pub async fn objects_only(request: Request, next: Next) -> Response {
    if request.method() != Method::POST || !request.uri().path().starts_with("/api/") {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let mut stream = body.into_data_stream();
    let mut read = Vec::new();
    let first = loop {
        match stream.next().await {
            Some(Ok(chunk)) => {
                let first = chunk.iter().copied().find(|byte| !byte.is_ascii_whitespace());
                read.push(Ok(chunk));
                if first.is_some() {
                    break first;
                }
            }
            Some(Err(error)) => {
                read.push(Err(error));
                break None;
            }
            None => break None,
        }
    };
    if first.is_some_and(|byte| byte != b'{') {
        return ApiError::invalid_request("the request body must be a JSON object ({…})").into_response();
    }
    let body = Body::from_stream(futures_util::stream::iter(read).chain(stream));
    next.run(Request::from_parts(parts, body)).await
}

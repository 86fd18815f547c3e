//! Every error under `/api/` answers with the contract's status and JSON body.

use app::api::{ApiError, ErrorCode};
use axum::body::{Body, to_bytes};
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use leptos::server_fn::error::SERVER_FN_ERROR_HEADER;

/// An `ApiError` body is small; anything larger is not one.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Server functions answer every error with status 500 and the error in the body: put back the
/// status the error's code stands for. Errors raised outside our handlers (a body over the size
/// limit, an unknown `/api/` route, a wrong method) get the same JSON body as ours.
pub async fn json_errors(request: Request, next: Next) -> Response {
    let is_api = request.uri().path().starts_with("/api/");
    let response = next.run(request).await;

    if response.headers().contains_key(SERVER_FN_ERROR_HEADER) {
        let (mut parts, body) = response.into_parts();
        let Ok(bytes) = to_bytes(body, MAX_ERROR_BODY).await else {
            return ApiError::internal().into_response();
        };
        if let Ok(error) = serde_json::from_slice::<ApiError>(&bytes) {
            parts.status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        }
        parts.headers.remove(SERVER_FN_ERROR_HEADER);
        return Response::from_parts(parts, Body::from(bytes));
    }

    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/json"));
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(ErrorCode::PayloadTooLarge, "the request body is larger than 64 KiB").into_response();
    }
    if is_api && (status.is_client_error() || status.is_server_error()) && !is_json {
        let error = match status {
            StatusCode::NOT_FOUND => ApiError::new(ErrorCode::NotFound, "there is no such API route"),
            StatusCode::SERVICE_UNAVAILABLE => ApiError::service_unavailable(),
            StatusCode::REQUEST_TIMEOUT => ApiError::invalid_request("the request body did not arrive in time"),
            StatusCode::METHOD_NOT_ALLOWED => {
                ApiError::new(ErrorCode::MethodNotAllowed, "this route does not accept that HTTP method")
            }
            status if status.is_client_error() => {
                let (_, body) = response.into_parts();
                let detail = to_bytes(body, MAX_ERROR_BODY).await.unwrap_or_default();
                ApiError::invalid_request(String::from_utf8_lossy(&detail).trim().to_owned())
            }
            _ => ApiError::internal(),
        };
        let mut converted = error.into_response();
        *converted.status_mut() = status;
        return converted;
    }
    response
}

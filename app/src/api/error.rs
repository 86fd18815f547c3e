//! The one error type every command and query answers with, on every route.
//!
//! On the wire: `{"error": {"code": "insufficient_funds", "message": "..."}}` with the HTTP
//! status [`ApiError::status`] gives. Server functions always answer errors with 500; the
//! server's `json_errors` middleware reads the code back and sets the proper status.

use leptos::server_fn::codec::JsonEncoding;
use leptos::server_fn::error::{FromServerFnError, ServerFnErrorErr};
use serde::{Deserialize, Serialize};

use bank::domain::{DomainError, MoneyError, OwnerIdError, ReasonError, TransferRefusal};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Malformed JSON, a missing or mistyped field, a bad UUID or token.
    InvalidRequest,
    InvalidAmount,
    InvalidOwner,
    PayloadTooLarge,
    /// A `POST` whose body is not declared as JSON.
    UnsupportedMediaType,
    /// A request the server refuses whoever sends it this way (from another site), or that the
    /// caller's role does not allow.
    Forbidden,
    /// No valid session or token: sign in, or send `Authorization: Bearer <token>`.
    Unauthenticated,
    /// No such route.
    NotFound,
    MethodNotAllowed,
    AccountNotFound,
    AccountAlreadyExists,
    InsufficientFunds,
    BalanceLimitExceeded,
    /// Frozen by an operator: no money moves in or out.
    AccountFrozen,
    AccountClosed,
    /// Unfreezing an account that is not frozen.
    NotFrozen,
    /// Closing an account that still holds money.
    BalanceNotZero,
    /// A transfer from an account to itself.
    SameAccount,
    /// A reason that is empty, too long or has control characters.
    InvalidReason,
    /// A concurrent writer kept winning; the command was not applied.
    Conflict,
    /// A `commandId` sent before with a different command.
    CommandIdReused,
    /// Too many requests of this kind from this client (or in all) at once; retry later.
    TooManyRequests,
    /// The request never got an answer from the server (seen only in the browser).
    RequestFailed,
    /// The database is unreachable or overloaded; retrying later may succeed.
    ServiceUnavailable,
    /// A fault of ours, never of the client's input. Logged on the server.
    Internal,
}

impl ErrorCode {
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::InvalidRequest | ErrorCode::InvalidAmount | ErrorCode::InvalidOwner => 400,
            ErrorCode::AccountNotFound | ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::Conflict | ErrorCode::CommandIdReused => 409,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::Forbidden => 403,
            ErrorCode::Unauthenticated => 401,
            ErrorCode::TooManyRequests => 429,
            ErrorCode::AccountAlreadyExists
            | ErrorCode::InsufficientFunds
            | ErrorCode::BalanceLimitExceeded
            | ErrorCode::AccountFrozen
            | ErrorCode::AccountClosed
            | ErrorCode::NotFrozen
            | ErrorCode::BalanceNotZero
            | ErrorCode::SameAccount => 422,
            ErrorCode::InvalidReason => 400,
            ErrorCode::RequestFailed | ErrorCode::ServiceUnavailable => 503,
            ErrorCode::Internal => 500,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(from = "ErrorBody", into = "ErrorBody")]
#[error("{message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError { code, message: message.into() }
    }

    pub fn status(&self) -> u16 {
        self.code.status()
    }

    pub fn invalid_request(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::InvalidRequest, message)
    }

    pub fn account_not_found(account_id: impl std::fmt::Display) -> ApiError {
        ApiError::new(ErrorCode::AccountNotFound, format!("account {account_id} does not exist"))
    }

    pub fn unauthenticated() -> ApiError {
        ApiError::new(
            ErrorCode::Unauthenticated,
            "sign in first, or send an API token as 'Authorization: Bearer <token>'",
        )
    }

    pub fn operators_only() -> ApiError {
        ApiError::new(ErrorCode::Forbidden, "only operators may do this")
    }

    pub fn internal() -> ApiError {
        ApiError::new(ErrorCode::Internal, "internal error; it has been logged")
    }

    pub fn service_unavailable() -> ApiError {
        ApiError::new(ErrorCode::ServiceUnavailable, "the database is unavailable; please retry shortly")
    }
}

/// The wire shape: the error wrapped in an `error` object.
#[derive(Serialize, Deserialize)]
struct ErrorBody {
    error: ErrorFields,
}

#[derive(Serialize, Deserialize)]
struct ErrorFields {
    code: ErrorCode,
    message: String,
}

impl From<ErrorBody> for ApiError {
    fn from(body: ErrorBody) -> ApiError {
        ApiError { code: body.error.code, message: body.error.message }
    }
}

impl From<ApiError> for ErrorBody {
    fn from(error: ApiError) -> ErrorBody {
        ErrorBody { error: ErrorFields { code: error.code, message: error.message } }
    }
}

impl FromServerFnError for ApiError {
    type Encoder = JsonEncoding;

    fn from_server_fn_error(error: ServerFnErrorErr) -> ApiError {
        match error {
            // The request body or arguments could not be decoded: the client sent something wrong.
            ServerFnErrorErr::Deserialization(message)
            | ServerFnErrorErr::Args(message)
            | ServerFnErrorErr::MissingArg(message) => {
                ApiError::invalid_request(format!("the request could not be read: {message}"))
            }
            ServerFnErrorErr::UnsupportedRequestMethod(message) => ApiError::invalid_request(message),
            ServerFnErrorErr::Request(message) => {
                ApiError::new(ErrorCode::RequestFailed, format!("the request failed: {message}"))
            }
            other => ApiError::new(ErrorCode::Internal, other.to_string()),
        }
    }
}

impl From<MoneyError> for ApiError {
    fn from(error: MoneyError) -> ApiError {
        ApiError::new(ErrorCode::InvalidAmount, format!("invalid amount: {error}"))
    }
}

impl From<ReasonError> for ApiError {
    fn from(error: ReasonError) -> ApiError {
        ApiError::new(ErrorCode::InvalidReason, format!("invalid reason: {error}"))
    }
}

impl From<TransferRefusal> for ApiError {
    fn from(refusal: TransferRefusal) -> ApiError {
        let code = match refusal {
            TransferRefusal::SameAccount => ErrorCode::SameAccount,
            TransferRefusal::AlreadyRequested | TransferRefusal::OutOfStep { .. } => ErrorCode::Conflict,
            TransferRefusal::NotFound => ErrorCode::NotFound,
        };
        ApiError::new(code, capitalised(&refusal.to_string()))
    }
}

impl From<OwnerIdError> for ApiError {
    fn from(error: OwnerIdError) -> ApiError {
        ApiError::new(ErrorCode::InvalidOwner, format!("invalid owner: {error}"))
    }
}

impl From<DomainError> for ApiError {
    fn from(error: DomainError) -> ApiError {
        let code = match error {
            DomainError::AccountAlreadyExists => ErrorCode::AccountAlreadyExists,
            DomainError::AccountNotFound => ErrorCode::AccountNotFound,
            DomainError::InsufficientFunds { .. } => ErrorCode::InsufficientFunds,
            DomainError::BalanceLimitExceeded => ErrorCode::BalanceLimitExceeded,
            DomainError::AccountFrozen { .. } => ErrorCode::AccountFrozen,
            DomainError::AccountClosed => ErrorCode::AccountClosed,
            DomainError::NotFrozen => ErrorCode::NotFrozen,
            DomainError::BalanceNotZero { .. } => ErrorCode::BalanceNotZero,
            // Only a transfer's steps carry a deadline, and the process answers those itself.
            DomainError::TransferExpired => ErrorCode::Conflict,
            DomainError::AccountNotClosed => ErrorCode::Conflict,
        };
        ApiError::new(code, capitalised(&error.to_string()))
    }
}

fn capitalised(message: &str) -> String {
    let mut chars = message.chars();
    chars.next().map_or_else(String::new, |first| first.to_uppercase().chain(chars).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_in_the_contract_shape() {
        let error = ApiError::new(ErrorCode::InsufficientFunds, "Insufficient funds: balance 40.00, withdrawal 50.00");
        let json = serde_json::to_value(&error).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"error": {"code": "insufficient_funds",
                "message": "Insufficient funds: balance 40.00, withdrawal 50.00"}})
        );
        assert_eq!(serde_json::from_value::<ApiError>(json).unwrap(), error);
    }

    #[test]
    fn domain_refusals_are_422_and_read_like_sentences() {
        let error = ApiError::from(DomainError::AccountAlreadyExists);
        assert_eq!(error.status(), 422);
        assert_eq!(error.message, "The account already exists");
    }

    #[test]
    fn undecodable_requests_are_400() {
        let error = ApiError::from_server_fn_error(ServerFnErrorErr::Deserialization("expected value".into()));
        assert_eq!(error.status(), 400);
    }
}

#[cfg(feature = "ssr")]
mod server {
    //! Turning server-side failures into answers: the cause is logged, the client gets a
    //! clear message and never a 500 for something it sent.

    use super::{ApiError, ErrorCode, capitalised};
    use backend::account_store::LoadError;
    use backend::write_side::CommandError;
    use backend::write_side::transfers::TransferCommandError;

    impl From<sqlx::Error> for ApiError {
        fn from(error: sqlx::Error) -> ApiError {
            // The same test the projections use to tell "retry later" from "this is wrong".
            if eventstore::is_transient(&error) {
                tracing::warn!(%error, "database unavailable");
                ApiError::service_unavailable()
            } else {
                tracing::error!(%error, "database error");
                ApiError::internal()
            }
        }
    }

    impl From<CommandError> for ApiError {
        fn from(error: CommandError) -> ApiError {
            match error {
                CommandError::Rejected(refusal) => refusal.into(),
                conflict @ CommandError::Conflict { .. } => {
                    ApiError::new(ErrorCode::Conflict, capitalised(&conflict.to_string()))
                }
                reused @ CommandError::CommandIdReused { .. } => {
                    ApiError::new(ErrorCode::CommandIdReused, capitalised(&reused.to_string()))
                }
                CommandError::Busy(busy) => {
                    tracing::warn!(%busy, "commands queued for one account");
                    ApiError::new(
                        ErrorCode::ServiceUnavailable,
                        format!("{}; please retry shortly", capitalised(&busy.to_string())),
                    )
                }
                unreadable @ CommandError::UnreadableOutcome { .. } => {
                    tracing::error!(error = %unreadable, "unreadable stored outcome");
                    ApiError::internal()
                }
                CommandError::Unreadable(error) => {
                    tracing::error!(%error, "unreadable event in an account's stream");
                    ApiError::internal()
                }
                CommandError::Database(error) => error.into(),
            }
        }
    }

    impl From<TransferCommandError> for ApiError {
        fn from(error: TransferCommandError) -> ApiError {
            match error {
                TransferCommandError::Rejected(refusal) => refusal.into(),
                TransferCommandError::CommandIdReused { command_id } => ApiError::new(
                    ErrorCode::CommandIdReused,
                    format!("Command id {command_id} was already used for a different command"),
                ),
                TransferCommandError::Busy(busy) => ApiError::new(
                    ErrorCode::ServiceUnavailable,
                    format!("{}; please retry shortly", capitalised(&busy.to_string())),
                ),
                TransferCommandError::Conflict { .. } => {
                    ApiError::new(ErrorCode::Conflict, "The transfer kept changing concurrently; please retry")
                }
                TransferCommandError::Database(error) => error.into(),
                other => {
                    tracing::error!(error = %other, "a transfer command failed");
                    ApiError::internal()
                }
            }
        }
    }

    impl From<LoadError> for ApiError {
        fn from(error: LoadError) -> ApiError {
            match error {
                LoadError::Unreadable(error) => {
                    tracing::error!(%error, "unreadable event in an account's stream");
                    ApiError::internal()
                }
                LoadError::Database(error) => error.into(),
            }
        }
    }

    impl axum::response::IntoResponse for ApiError {
        fn into_response(self) -> axum::response::Response {
            let status = axum::http::StatusCode::from_u16(self.status())
                .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
            (status, axum::Json(self)).into_response()
        }
    }
}

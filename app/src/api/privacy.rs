//! Being forgotten: a customer asks it for themself (once their accounts are closed), an
//! operator does it for a customer (with a reason, which the log records). Either way their key
//! is destroyed, their personal data reads as *forgotten* everywhere, and they are signed out.

use leptos::prelude::*;
use leptos::server_fn::codec::Json;

use super::error::ApiError;
use bank::contract::{ForgetResponse, PersonalDataStatus};

/// Forgets the caller, given their password, from a signed-in browser: all their accounts must
/// be closed. They are signed out everywhere; their username is free again only after a
/// cooling-off period.
#[server(prefix = "/api", endpoint = "auth/forget-me", input = Json)]
#[middleware(crate::api::limits::Limited(crate::api::limits::Limit::SignIn))]
pub async fn forget_me(password: String) -> Result<ForgetResponse, ApiError> {
    use super::identity::server::{check_own_password, set_cookie};
    let caller = super::security::signed_in_with_a_session()?;
    let services = super::services()?;
    check_own_password(&caller, &password).await?;
    let forgotten =
        server::forget(&services, caller.user_id, backend::personal::erasure::ForgottenBy::Themself).await?;
    set_cookie(backend::identity::sessions::clear_cookie(services.secure_cookies));
    Ok(forgotten)
}

/// Forgets a customer on their behalf (an operator's lever): `reason` is recorded, sealed with
/// the operator's own key. The customer's accounts must be closed.
#[server(prefix = "/api", endpoint = "operations/forget-user", input = Json)]
#[middleware(crate::api::limits::Limited(crate::api::limits::Limit::Commands))]
pub async fn forget_user(username: String, reason: String) -> Result<ForgetResponse, ApiError> {
    use backend::identity::Username;
    use backend::personal::erasure::ForgottenBy;
    let operator = super::operator()?;
    let reason = bank::domain::Reason::parse(&reason)
        .map_err(|error| ApiError::new(super::ErrorCode::InvalidReason, format!("invalid reason: {error}")))?;
    let no_such_user = || ApiError::new(super::ErrorCode::NotFound, "there is no such user");
    let username = Username::parse(&username).map_err(|_| no_such_user())?;
    let services = super::services()?;
    let user_id: uuid::Uuid = sqlx::query_scalar("SELECT user_id FROM users WHERE username = $1")
        .bind(username.as_str())
        .fetch_optional(&services.pool)
        .await?
        .ok_or_else(no_such_user)?;
    server::forget(&services, user_id, ForgottenBy::Operator { operator_id: operator.user_id, reason }).await
}

/// Whether personal data is sealed, and how many keys exist and people were forgotten.
#[server(prefix = "/api", endpoint = "operations/personal-data", input = Json)]
pub async fn personal_data() -> Result<PersonalDataStatus, ApiError> {
    super::operator()?;
    let services = super::services()?;
    let counts = backend::personal::keys::counts(&services.pool, services.master_key()).await?;
    Ok(PersonalDataStatus {
        sealed: services.master_keys.is_some(),
        keys: counts.keys,
        keys_under_other_master_keys: counts.keys_under_other_master_keys,
        forgotten: counts.forgotten,
    })
}

#[cfg(feature = "ssr")]
mod server {
    use backend::Services;
    use backend::personal::erasure::{self, EraseError, ForgottenBy};
    use bank::contract::ForgetResponse;

    use crate::api::{ApiError, ErrorCode};

    pub async fn forget(services: &Services, user_id: uuid::Uuid, by: ForgottenBy) -> Result<ForgetResponse, ApiError> {
        let forgotten = erasure::forget(
            &services.pool,
            services.master_key(),
            &services.appends,
            user_id,
            by,
            services.username_cooling_off,
        )
        .await
        .map_err(erase_error)?;
        services.callers.forget_user(user_id);
        Ok(ForgetResponse { accounts: forgotten.accounts })
    }

    fn erase_error(error: EraseError) -> ApiError {
        let message = error.to_string();
        match error {
            EraseError::NoSuchUser => ApiError::new(ErrorCode::NotFound, message),
            EraseError::NotACustomer
            | EraseError::AccountsOpen { .. }
            | EraseError::TransfersUnderWay { .. }
            | EraseError::NoMasterKey => ApiError::new(ErrorCode::Conflict, message),
            EraseError::Conflict => ApiError::new(ErrorCode::Conflict, message),
            EraseError::Database(error) => error.into(),
            EraseError::Key(error) => {
                tracing::error!(%error, "could not forget a user");
                ApiError::internal()
            }
            EraseError::Unreadable(reason) => {
                tracing::error!(reason, "could not forget a user");
                ApiError::internal()
            }
        }
    }
}

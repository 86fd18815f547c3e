//! What a signed-in user does to keep their account theirs, as server functions
//! (`/api/auth/...`): change their password, see their sessions and end one, sign out
//! everywhere.

use leptos::prelude::*;
use leptos::server_fn::codec::Json;
use uuid::Uuid;

use super::error::ApiError;
use bank::contract::{SessionInfo, SignedIn};

/// Changes the caller's password, given their current one, from a signed-in browser. Every
/// other session ends, on every instance at once (this browser gets a new one); every token
/// too if `endTokens`, else they keep working.
#[server(prefix = "/api", endpoint = "auth/change-password", input = Json)]
#[middleware(crate::api::limits::Limited(crate::api::limits::Limit::SignIn))]
pub async fn change_password(
    #[server(rename = "currentPassword")] current_password: String,
    #[server(rename = "newPassword")] new_password: String,
    #[server(rename = "endTokens")]
    #[server(default)]
    end_tokens: bool,
) -> Result<SignedIn, ApiError> {
    use super::identity::server::{check_own_password, note_address, sign_up_error, start_session};
    use backend::identity::{Password, users};
    let caller = signed_in_with_a_session()?;
    let new_password = Password::parse(&new_password).map_err(ApiError::invalid_request)?;
    let services = super::services()?;
    let user = check_own_password(&caller, &current_password).await?;
    let changed = users::change_password(&services.pool, &services.passwords, &user, &new_password, end_tokens)
        .await
        .map_err(sign_up_error)?
        .ok_or_else(|| {
            ApiError::new(super::ErrorCode::Conflict, "your password was changed meanwhile (a reset?): sign in again")
        })?;
    services.callers.forget_user(changed.user_id);
    // The change forgot every address the user signed in from; this one is theirs.
    note_address(&services, &changed).await?;
    start_session(&services, &changed).await?;
    Ok(SignedIn { username: changed.username.to_string(), role: changed.role })
}

/// The caller's sessions that have not expired, most recently used first; the one this
/// request came with is marked `current`.
#[server(prefix = "/api", endpoint = "auth/sessions", input = Json)]
pub async fn list_sessions() -> Result<Vec<SessionInfo>, ApiError> {
    let caller = signed_in_with_a_session()?;
    let current = super::identity::server::session_cookie();
    Ok(backend::identity::sessions::list(&super::services()?.pool, caller.user_id, current.as_ref()).await?)
}

/// Ends one of the caller's sessions (a browser they do not recognise); it is signed out on
/// every instance at once.
#[server(prefix = "/api", endpoint = "auth/end-session", input = Json)]
#[middleware(crate::api::limits::Limited(crate::api::limits::Limit::Commands))]
pub async fn end_session(#[server(rename = "sessionId")] session_id: Uuid) -> Result<(), ApiError> {
    let caller = signed_in_with_a_session()?;
    let services = super::services()?;
    if backend::identity::sessions::end_by_id(&services.pool, caller.user_id, session_id).await? {
        services.callers.forget_user(caller.user_id);
        Ok(())
    } else {
        Err(ApiError::new(super::ErrorCode::NotFound, format!("you have no session {session_id}")))
    }
}

/// Ends every session of the caller, this browser's too ("sign out everywhere"). Tokens are
/// left alone (revoke them on the tokens page).
#[server(prefix = "/api", endpoint = "auth/sign-out-everywhere", input = Json)]
#[middleware(crate::api::limits::Limited(crate::api::limits::Limit::Commands))]
pub async fn sign_out_everywhere() -> Result<u64, ApiError> {
    use super::identity::server::set_cookie;
    let caller = signed_in_with_a_session()?;
    let services = super::services()?;
    let ended = backend::identity::sessions::end_all(&services.pool, caller.user_id).await?;
    services.callers.forget_user(caller.user_id);
    set_cookie(backend::identity::sessions::clear_cookie(services.secure_cookies));
    Ok(ended)
}

/// The caller, if signed in with a browser session: a token (which a program holds, and may
/// leak) neither sees nor ends sessions, nor changes the password. 401 signed out, 403 with a
/// token.
#[cfg(feature = "ssr")]
pub(crate) fn signed_in_with_a_session() -> Result<backend::identity::Caller, ApiError> {
    let caller = super::signed_in()?;
    if caller.credential != backend::identity::Credential::Session {
        return Err(ApiError::new(
            super::ErrorCode::Forbidden,
            "this is done from a signed-in browser, not with a token",
        ));
    }
    Ok(caller)
}

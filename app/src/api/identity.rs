//! Signing up, in and out, and API tokens, as server functions (`/api/auth/...`,
//! `/api/tokens/...`). A browser session lives in an `HttpOnly` cookie set here; programmatic
//! clients use a token made on the tokens page.

use leptos::prelude::*;
use leptos::server_fn::codec::Json;
use uuid::Uuid;

use super::error::ApiError;
use bank::contract::{ApiTokenInfo, NewApiToken, SignedIn, TokenScope};

/// Creates a customer and signs them in.
#[server(prefix = "/api", endpoint = "auth/sign-up", input = Json)]
#[middleware(crate::api::limits::Limited(crate::api::limits::Limit::SignUp))]
pub async fn sign_up(username: String, password: String) -> Result<SignedIn, ApiError> {
    use backend::identity::{Password, Role, SignUpError, Username, users};
    let services = super::services()?;
    let username = Username::parse(&username).map_err(|error| ApiError::invalid_request(error.to_string()))?;
    let password = Password::parse(&password).map_err(ApiError::invalid_request)?;
    // A forgotten person's name is refused until its cooling-off ends, as if it were taken.
    if server::is_cooling_off(&services, &username).await? {
        return Err(ApiError::new(super::ErrorCode::Conflict, SignUpError::Taken(username.clone()).to_string()));
    }
    let user = match users::create(&services.pool, &services.passwords, &username, &password, Role::Customer).await {
        Ok(user) => user,
        Err(taken @ SignUpError::Taken(_)) => {
            return Err(ApiError::new(super::ErrorCode::Conflict, taken.to_string()));
        }
        Err(other) => return Err(server::sign_up_error(other)),
    };
    server::note_address(&services, &user).await?;
    server::start_session(&services, &user).await?;
    Ok(SignedIn { username: user.username.to_string(), role: user.role })
}

/// Signs in: a new session (any session the browser had is ended first). Limited per address,
/// and per username for the failures (except from an address the user signed in from before).
#[server(prefix = "/api", endpoint = "auth/sign-in", input = Json)]
#[middleware(crate::api::limits::Limited(crate::api::limits::Limit::SignIn))]
pub async fn sign_in(username: String, password: String) -> Result<SignedIn, ApiError> {
    use backend::identity::Username;
    let services = super::services()?;
    let wrong = || ApiError::new(super::ErrorCode::Unauthenticated, "wrong username or password");
    let username = Username::parse(&username).map_err(|_| wrong())?;
    let user = server::check_password(&services, &username, &password).await?.ok_or_else(wrong)?;
    server::start_session(&services, &user).await?;
    Ok(SignedIn { username: user.username.to_string(), role: user.role })
}

/// Ends the browser's session, on the server (the cookie alone would survive a copy).
#[server(prefix = "/api", endpoint = "auth/sign-out", input = Json)]
pub async fn sign_out() -> Result<(), ApiError> {
    let services = super::services()?;
    if let Some(secret) = server::session_cookie() {
        backend::identity::sessions::end(&services.pool, &secret).await?;
        services.callers.forget_secret(&secret);
    }
    server::set_cookie(backend::identity::sessions::clear_cookie(services.secure_cookies));
    Ok(())
}

/// Who is signed in (`null` when nobody is).
#[server(prefix = "/api", endpoint = "auth/me", input = Json)]
pub async fn me() -> Result<Option<SignedIn>, ApiError> {
    Ok(super::caller().map(|caller| SignedIn { username: caller.username.to_string(), role: caller.role }))
}

/// Makes an API token, shown this once. Only from a signed-in browser: a token cannot mint
/// more tokens, so a leaked one cannot outlive its revocation; and with the user's password
/// again, so a session left open (or stolen) cannot mint one that outlives it. `scope` (full
/// by default) and `expiresInDays` (none by default) make it do less, and end by itself.
#[server(prefix = "/api", endpoint = "tokens/create", input = Json)]
#[middleware(crate::api::limits::Limited(crate::api::limits::Limit::Commands))]
#[middleware(crate::api::limits::Limited(crate::api::limits::Limit::SignIn))]
pub async fn create_token(
    name: String,
    password: String,
    #[server(default)] scope: TokenScope,
    #[server(rename = "expiresInDays")]
    #[server(default)]
    expires_in_days: Option<u32>,
) -> Result<NewApiToken, ApiError> {
    use backend::identity::Credential;
    use backend::identity::tokens::{self, TokenError, TokenRequest};
    let caller = super::signed_in()?;
    if caller.credential != Credential::Session {
        return Err(ApiError::new(
            super::ErrorCode::Forbidden,
            "tokens are made from a signed-in browser, not with a token",
        ));
    }
    let session = server::session_cookie().ok_or_else(ApiError::unauthenticated)?;
    server::check_own_password(&caller, &password).await?;
    let request = TokenRequest { name: &name, scope, lifetime_days: expires_in_days };
    match tokens::create(&super::services()?.pool, &caller, &session, &request).await {
        Ok(token) => Ok(token),
        Err(TokenError::Database(error)) => Err(error.into()),
        Err(changed @ TokenError::CredentialsChanged) => {
            Err(ApiError::new(super::ErrorCode::Unauthenticated, changed.to_string()))
        }
        Err(refusal @ (TokenError::BadName | TokenError::BadLifetime)) => {
            Err(ApiError::invalid_request(refusal.to_string()))
        }
        Err(refusal @ TokenError::TooMany) => Err(ApiError::new(super::ErrorCode::Conflict, refusal.to_string())),
    }
}

/// The caller's tokens (never their secrets).
#[server(prefix = "/api", endpoint = "tokens/list", input = Json)]
pub async fn list_tokens() -> Result<Vec<ApiTokenInfo>, ApiError> {
    let caller = super::signed_in()?;
    Ok(backend::identity::tokens::list(&super::services()?.pool, caller.user_id).await?)
}

/// Revokes one of the caller's tokens; it answers 401 from then on.
#[server(prefix = "/api", endpoint = "tokens/revoke", input = Json)]
#[middleware(crate::api::limits::Limited(crate::api::limits::Limit::Commands))]
pub async fn revoke_token(#[server(rename = "tokenId")] token_id: Uuid) -> Result<(), ApiError> {
    let caller = super::signed_in()?;
    let services = super::services()?;
    if backend::identity::tokens::revoke(&services.pool, caller.user_id, token_id).await? {
        // At once here; the other instances (and this one again) hear of it from Postgres.
        services.callers.forget_user(caller.user_id);
        Ok(())
    } else {
        Err(ApiError::new(super::ErrorCode::NotFound, format!("you have no token {token_id}")))
    }
}

#[cfg(feature = "ssr")]
pub(super) mod server {
    use axum::http::{HeaderValue, header};

    use crate::api::limits::{ClientAddress, RouteLimiters, client_key};
    use crate::api::{ApiError, ErrorCode, Services};
    use backend::identity::{Caller, PasswordError, Presented, Secret, SignUpError, User, Username, sessions, users};

    /// Ends the session the browser had (if any) and starts a new one in its cookie: an id
    /// someone planted before sign-in is worthless after it. Refused if the user's password or
    /// role changed since `user` was read: a reset must not be outrun by a sign-in that checked
    /// the old password.
    pub async fn start_session(services: &Services, user: &User) -> Result<(), ApiError> {
        if let Some(old) = session_cookie() {
            sessions::end(&services.pool, &old).await?;
            services.callers.forget_secret(&old);
        }
        let parts = super::super::request_parts();
        let user_agent = parts.as_ref().and_then(|parts| parts.headers.get(header::USER_AGENT)?.to_str().ok());
        let secret = sessions::start(&services.pool, user, user_agent.unwrap_or_default()).await?.ok_or_else(|| {
            ApiError::new(ErrorCode::Unauthenticated, "your password changed while signing in; sign in again")
        })?;
        set_cookie(sessions::set_cookie(&secret, services.secure_cookies));
        Ok(())
    }

    /// The user whose password this is, or `None`; limited per username: an attempt from an
    /// address the user signed in from before is always made; from elsewhere it is admitted
    /// (and counted) while the name's budget of failures lasts, and a right one is given back.
    /// A right password remembers the address.
    pub async fn check_password(
        services: &Services,
        username: &Username,
        password: &str,
    ) -> Result<Option<User>, ApiError> {
        let (limiter, client) = sign_in_limiter()?;
        let address = client_key(client).to_string();
        let known = users::signed_in_from(&services.pool, username, &address).await?;
        if !known {
            limiter.0.admit_password_attempt(username.as_str()).map_err(too_many_for_this_name)?;
        }
        let checked = users::check_password(&services.pool, &services.passwords, username, password).await;
        // An attempt that was right, or that could not be checked (no turn to hash), is given
        // back: only wrong guesses spend the name's budget.
        if !known && !matches!(checked, Ok(None)) {
            limiter.0.refund_password_attempt(username.as_str());
        }
        let checked = checked.map_err(sign_up_error)?;
        if let Some(user) = &checked {
            note_address_of(services, user.user_id, &address).await;
        }
        Ok(checked)
    }

    /// Remembers the address a user just signed up or in from.
    pub async fn note_address(services: &Services, user: &User) -> Result<(), ApiError> {
        let (_, client) = sign_in_limiter()?;
        note_address_of(services, user.user_id, &client_key(client).to_string()).await;
        Ok(())
    }

    /// A sign-in is not refused because its address could not be noted (two at once may
    /// deadlock on the same rows): the user's next sign-in notes it.
    async fn note_address_of(services: &Services, user_id: uuid::Uuid, address: &str) {
        if let Err(error) = users::note_sign_in_address(&services.pool, user_id, address).await {
            tracing::warn!(%error, "could not note a sign-in's address");
        }
    }

    /// Whether `username` belonged to someone forgotten less than the cooling-off period ago.
    pub async fn is_cooling_off(services: &Services, username: &backend::identity::Username) -> Result<bool, ApiError> {
        backend::personal::erasure::is_cooling_off(&services.pool, services.master_key(), username.as_str())
            .await
            .map_err(key_error)
    }

    /// A data key that could not be had: the database's fault (503), or the server's (500).
    pub fn key_error(error: backend::personal::keys::KeyError) -> ApiError {
        match error {
            backend::personal::keys::KeyError::Database(error) => error.into(),
            other => {
                tracing::error!(error = %other, "a data key could not be had");
                ApiError::internal()
            }
        }
    }

    /// Checks that `password` is the caller's own (asked again before something lasting is
    /// done with a session), as [`check_password`] does: a session cannot be used to guess the
    /// password faster than the sign-in page.
    pub async fn check_own_password(caller: &Caller, password: &str) -> Result<User, ApiError> {
        let services = super::super::services()?;
        match check_password(&services, &caller.username, password).await? {
            Some(user) if user.user_id == caller.user_id => Ok(user),
            _ => Err(ApiError::new(ErrorCode::Forbidden, "that is not your password")),
        }
    }

    /// The server's limiter and the client's address, as the server put them in the request.
    pub fn sign_in_limiter() -> Result<(RouteLimiters, std::net::IpAddr), ApiError> {
        let parts = super::super::request_parts().ok_or_else(ApiError::internal)?;
        let limiter = parts.extensions.get::<RouteLimiters>().cloned();
        let client = parts.extensions.get::<ClientAddress>().copied();
        match (limiter, client) {
            (Some(limiter), Some(ClientAddress(client))) => Ok((limiter, client)),
            // A router without them is a bug of ours: closed, not open.
            _ => Err(ApiError::new(ErrorCode::ServiceUnavailable, "the server is not ready")),
        }
    }

    /// 429 for a username whose failed sign-ins are spent, with `Retry-After`.
    pub fn too_many_for_this_name(wait: std::time::Duration) -> ApiError {
        let seconds = wait.as_secs().max(1);
        if let Some(response) = leptos::prelude::use_context::<leptos_axum::ResponseOptions>() {
            response.insert_header(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        ApiError::new(
            ErrorCode::TooManyRequests,
            format!("too many failed sign-ins for this username; retry in {seconds} s"),
        )
    }

    /// The session the request came with, as authentication found it (a cookie that names
    /// nobody is none: there is no session of it to end or to mark).
    pub fn session_cookie() -> Option<Secret> {
        match super::super::request_parts()?.extensions.get::<Presented>()? {
            Presented::Session(secret) => Some(secret.clone()),
            Presented::Token(_) => None,
        }
    }

    pub fn set_cookie(value: String) {
        if let (Some(response), Ok(value)) =
            (leptos::prelude::use_context::<leptos_axum::ResponseOptions>(), HeaderValue::from_str(&value))
        {
            response.append_header(header::SET_COOKIE, value);
        }
    }

    pub fn sign_up_error(error: SignUpError) -> ApiError {
        match error {
            SignUpError::Taken(name) => ApiError::new(ErrorCode::Conflict, format!("the username {name} is taken")),
            SignUpError::Password(PasswordError::Busy) => {
                ApiError::new(ErrorCode::ServiceUnavailable, PasswordError::Busy.to_string())
            }
            SignUpError::Password(error @ PasswordError::Unreadable(_)) => {
                tracing::error!(%error, "password check failed");
                ApiError::internal()
            }
            SignUpError::Database(error) => error.into(),
        }
    }
}

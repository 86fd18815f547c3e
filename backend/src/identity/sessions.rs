//! Browser sessions: a random id in an `HttpOnly` cookie, its hash in `sessions`. Signing in
//! always starts a new session (the old id, if any, is ended), so an id planted before sign-in
//! is worth nothing after; signing out deletes the row, so a copied cookie dies with it.

use sqlx::PgPool;
use time::Duration;

use super::users::User;
use super::{Caller, Credential, Role, Secret, Username};

/// How long a session lasts from sign-in.
pub const LIFETIME: Duration = Duration::days(7);

/// The cookie's name over plain http.
pub const COOKIE: &str = "bank_session";
/// Its name when cookies are `Secure`: browsers accept a `__Host-` cookie only from a secure
/// origin, for the whole host (no `Domain`), so a neighbouring subdomain or a plain-http page
/// cannot plant or overwrite it.
pub const SECURE_COOKIE: &str = "__Host-bank_session";

/// The cookie's name, as cookies are `Secure` or not.
pub fn cookie_name(secure: bool) -> &'static str {
    if secure { SECURE_COOKIE } else { COOKIE }
}

/// Starts a session for the user and returns its id (for the cookie); `None` if the user's
/// credentials changed since `user` was read (a reset raced this sign-in: it must not win).
pub async fn start(pool: &PgPool, user: &User) -> Result<Option<Secret>, sqlx::Error> {
    let secret = Secret::generate("");
    let started = sqlx::query(
        "INSERT INTO sessions (secret_hash, user_id, expires_at, credential_version)
         SELECT $1, user_id, now() + $3, credential_version FROM users
         WHERE user_id = $2 AND credential_version = $4",
    )
    .bind(secret.hash())
    .bind(user.user_id)
    .bind(LIFETIME)
    .bind(user.credential_version)
    .execute(pool)
    .await?;
    Ok((started.rows_affected() == 1).then_some(secret))
}

/// Who the session belongs to, if it exists, has not expired and was made under the user's
/// current credentials.
pub async fn find(pool: &PgPool, secret: &Secret) -> Result<Option<Caller>, sqlx::Error> {
    if !secret.well_formed("") {
        return Ok(None);
    }
    let found: Option<(uuid::Uuid, String, String, i64)> = sqlx::query_as(
        "SELECT u.user_id, u.username, u.role, u.credential_version FROM sessions s JOIN users u USING (user_id)
         WHERE s.secret_hash = $1 AND s.expires_at > now() AND s.credential_version = u.credential_version",
    )
    .bind(secret.hash())
    .fetch_optional(pool)
    .await?;
    Ok(found.and_then(|(user_id, username, role, credential_version)| {
        Some(Caller {
            user_id,
            username: Username::parse(&username).ok()?,
            role: Role::parse(&role)?,
            credential: Credential::Session,
            credential_version,
        })
    }))
}

/// Ends the session, whoever asks: knowing the id is the proof. Every instance forgets it.
pub async fn end(pool: &PgPool, secret: &Secret) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH ended AS (DELETE FROM sessions WHERE secret_hash = $1 RETURNING user_id)
         SELECT pg_notify($2, user_id::text) FROM ended",
    )
    .bind(secret.hash())
    .bind(super::cache::CHANNEL)
    .execute(pool)
    .await?;
    Ok(())
}

/// Deletes expired sessions; returns how many.
pub async fn purge_expired(pool: &PgPool) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query("DELETE FROM sessions WHERE expires_at <= now()").execute(pool).await?.rows_affected())
}

/// The session id a request's `Cookie` header carries, if any (under the name `secure` gives).
pub fn from_cookie_header(header: &str, secure: bool) -> Option<Secret> {
    header
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == cookie_name(secure))
        .map(|(_, value)| Secret::from_client(value.trim()))
        .filter(|secret| !secret.expose().is_empty())
}

/// The `Set-Cookie` value that stores a session id in the browser: not readable by scripts,
/// not sent with cross-site requests other than top-level navigations, over https only when
/// the site is served over https.
pub fn set_cookie(secret: &Secret, secure: bool) -> String {
    let name = cookie_name(secure);
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}={}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{secure}", secret.expose(), LIFETIME.whole_seconds())
}

/// The `Set-Cookie` value that removes it.
pub fn clear_cookie(secure: bool) -> String {
    let name = cookie_name(secure);
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{secure}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let found = from_cookie_header("theme=dark; bank_session=abc123 ; other=1", false).unwrap();
        assert_eq!(found.expose(), "abc123");
        assert!(from_cookie_header("bank_session=; x=1", false).is_none());
        assert!(from_cookie_header("not_bank_session=abc", false).is_none());
        // Over https only the `__Host-` cookie counts: a plain one may have been planted.
        assert!(from_cookie_header("bank_session=abc123", true).is_none());
        assert_eq!(from_cookie_header("__Host-bank_session=def", true).unwrap().expose(), "def");
    }

    #[test]
    fn the_cookie_is_http_only_and_lax_and_secure_when_asked() {
        let secret = Secret::from_client("s");
        let cookie = set_cookie(&secret, false);
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax") && !cookie.contains("Secure"));
        let secure = set_cookie(&secret, true);
        assert!(secure.starts_with("__Host-bank_session=s; Path=/;") && secure.ends_with("; Secure"));
        assert!(!secure.contains("Domain"));
    }
}

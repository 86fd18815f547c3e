//! Browser sessions: a random id in an `HttpOnly` cookie, its hash in `sessions`. Signing in
//! always starts a new session (the old id, if any, is ended), so an id planted before sign-in
//! is worth nothing after; signing out deletes the row, so a copied cookie dies with it.

use bank::contract::SessionInfo;
use sqlx::PgPool;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

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

/// How much of a browser's `User-Agent` a session keeps.
const USER_AGENT_CHARS: usize = 200;

/// Starts a session for the user, from the browser `user_agent` names, and returns its id (for
/// the cookie); `None` if the user's credentials changed since `user` was read (a reset raced
/// this sign-in: it must not win).
pub async fn start(pool: &PgPool, user: &User, user_agent: &str) -> Result<Option<Secret>, sqlx::Error> {
    let secret = Secret::generate("");
    let user_agent: String = user_agent.chars().filter(|c| !c.is_control()).take(USER_AGENT_CHARS).collect();
    let started = sqlx::query(
        "INSERT INTO sessions (secret_hash, user_id, expires_at, credential_version, user_agent)
         SELECT $1, user_id, now() + $3, credential_version, $5 FROM users
         WHERE user_id = $2 AND credential_version = $4",
    )
    .bind(secret.hash())
    .bind(user.user_id)
    .bind(LIFETIME)
    .bind(user.credential_version)
    .bind(user_agent)
    .execute(pool)
    .await?;
    Ok((started.rows_affected() == 1).then_some(secret))
}

/// Who the session belongs to, if it exists, has not expired and was made under the user's
/// current credentials; notes its use (at most once a minute, so that a busy page does not
/// write a row per request).
pub async fn find(pool: &PgPool, secret: &Secret) -> Result<Option<Caller>, sqlx::Error> {
    if !secret.well_formed("") {
        return Ok(None);
    }
    let found: Option<(uuid::Uuid, String, String, i64, bool)> = sqlx::query_as(
        "SELECT u.user_id, u.username, u.role, u.credential_version, s.last_seen_at < now() - interval '1 minute'
         FROM sessions s JOIN users u USING (user_id)
         WHERE s.secret_hash = $1 AND s.expires_at > now() AND s.credential_version = u.credential_version",
    )
    .bind(secret.hash())
    .fetch_optional(pool)
    .await?;
    if found.as_ref().is_some_and(|(.., note_use)| *note_use) {
        sqlx::query("UPDATE sessions SET last_seen_at = now() WHERE secret_hash = $1")
            .bind(secret.hash())
            .execute(pool)
            .await?;
    }
    Ok(found.and_then(|(user_id, username, role, credential_version, _)| {
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

/// The user's sessions that have not expired, the most recently used first; `current` is
/// marked.
pub async fn list(pool: &PgPool, user_id: Uuid, current: Option<&Secret>) -> Result<Vec<SessionInfo>, sqlx::Error> {
    let rows: Vec<(Uuid, OffsetDateTime, OffsetDateTime, String, bool)> = sqlx::query_as(
        "SELECT session_id, created_at, last_seen_at, user_agent, secret_hash = $2 FROM sessions
         WHERE user_id = $1 AND expires_at > now() ORDER BY last_seen_at DESC LIMIT 100",
    )
    .bind(user_id)
    .bind(current.map(Secret::hash).unwrap_or_default())
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(session_id, created_at, last_seen_at, user_agent, current)| SessionInfo {
            session_id,
            created_at,
            last_seen_at,
            user_agent,
            current,
        })
        .collect())
}

/// Ends one of the user's sessions, named by its id; `false` if they have no such session
/// (someone else's included). Every instance forgets it.
pub async fn end_by_id(pool: &PgPool, user_id: Uuid, session_id: Uuid) -> Result<bool, sqlx::Error> {
    let ended: Option<bool> = sqlx::query_scalar(
        "WITH ended AS (DELETE FROM sessions WHERE session_id = $1 AND user_id = $2 RETURNING user_id)
         SELECT pg_notify($3, user_id::text) IS NOT NULL FROM ended",
    )
    .bind(session_id)
    .bind(user_id)
    .bind(super::cache::CHANNEL)
    .fetch_optional(pool)
    .await?;
    Ok(ended.is_some())
}

/// Ends every session of the user ("sign out everywhere"); returns how many. Every instance
/// forgets them.
pub async fn end_all(pool: &PgPool, user_id: Uuid) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let ended = sqlx::query("DELETE FROM sessions WHERE user_id = $1").bind(user_id).execute(&mut *tx).await?;
    super::cache::announce_change(&mut tx, user_id).await?;
    tx.commit().await?;
    Ok(ended.rows_affected())
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

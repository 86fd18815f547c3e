//! API tokens for programmatic clients: made by a user (shown once), named, revocable, with the
//! time they were last used; each with a scope (everything, read only, or `/metrics` only) and
//! an optional expiry. Sent as `Authorization: Bearer <token>`.

use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Caller, Credential, Role, Secret, Username};
use bank::contract::{ApiTokenInfo, NewApiToken, TokenScope};

/// Every token starts with this, so that a leaked one is easy to recognise (and to scan for).
pub const PREFIX: &str = "cqb_";

/// A user may hold this many tokens that are not revoked.
pub const MAX_ACTIVE_PER_USER: i64 = 20;

/// Of a user's revoked tokens, this many (the newest) are kept for the tokens page; older ones
/// are deleted as new tokens are made, so a create/revoke loop cannot grow the table.
pub const KEPT_REVOKED_PER_USER: i64 = 50;

/// How long a revoked or expired token is kept at most (housekeeping deletes it after).
pub const KEPT_REVOKED_FOR: time::Duration = time::Duration::days(30);

/// The longest a token may be made to last for (`None`: until revoked).
pub const LONGEST_LIFETIME_DAYS: u32 = 365;

/// What a token is asked to be.
#[derive(Debug, Clone)]
pub struct TokenRequest<'a> {
    pub name: &'a str,
    pub scope: TokenScope,
    /// Days until it stops working by itself (1 to [`LONGEST_LIFETIME_DAYS`]); `None`: until
    /// revoked.
    pub lifetime_days: Option<u32>,
}

impl<'a> TokenRequest<'a> {
    /// A token that may do everything its owner may, until revoked.
    pub fn full(name: &'a str) -> TokenRequest<'a> {
        TokenRequest { name, scope: TokenScope::Full, lifetime_days: None }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("a token name has 1 to 64 characters, without control characters")]
    BadName,
    #[error("a token lasts 1 to {LONGEST_LIFETIME_DAYS} days, or until revoked")]
    BadLifetime,
    #[error("you already have {MAX_ACTIVE_PER_USER} tokens; revoke one first")]
    TooMany,
    /// The caller's password or role changed, or their session ended, since they were looked up.
    #[error("your session has ended or your credentials changed; sign in again")]
    CredentialsChanged,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Makes a token for `caller`, signed in with `session`, under the credentials they were looked
/// up with: a caller whose password was reset a moment ago, or whose session was signed out
/// (which another instance may still remember), makes none.
pub async fn create(
    pool: &PgPool,
    caller: &Caller,
    session: &Secret,
    request: &TokenRequest<'_>,
) -> Result<NewApiToken, TokenError> {
    let name = request.name.trim();
    if !(1..=64).contains(&name.chars().count()) || name.chars().any(char::is_control) {
        return Err(TokenError::BadName);
    }
    if request.lifetime_days.is_some_and(|days| !(1..=LONGEST_LIFETIME_DAYS).contains(&days)) {
        return Err(TokenError::BadLifetime);
    }
    let lifetime = request.lifetime_days.map(|days| time::Duration::days(i64::from(days)));
    let mut tx = pool.begin().await?;
    // The user's row, locked: concurrent requests count one after the other, and a reset
    // (which updates it) either comes before this (and the version differs) or after it (and
    // revokes what this makes).
    let current: Option<i64> = sqlx::query_scalar("SELECT credential_version FROM users WHERE user_id = $1 FOR UPDATE")
        .bind(caller.user_id)
        .fetch_optional(&mut *tx)
        .await?;
    let session_holds: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT FROM sessions WHERE secret_hash = $1 AND user_id = $2 AND expires_at > now())",
    )
    .bind(session.hash())
    .bind(caller.user_id)
    .fetch_one(&mut *tx)
    .await?;
    if current != Some(caller.credential_version) || !session_holds {
        return Err(TokenError::CredentialsChanged);
    }
    let active: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM api_tokens
         WHERE user_id = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())",
    )
    .bind(caller.user_id)
    .fetch_one(&mut *tx)
    .await?;
    if active >= MAX_ACTIVE_PER_USER {
        return Err(TokenError::TooMany);
    }
    let secret = Secret::generate(PREFIX);
    let token_id = Uuid::new_v4();
    let expires_at: Option<OffsetDateTime> = sqlx::query_scalar(
        "INSERT INTO api_tokens (token_id, user_id, name, secret_hash, credential_version, scope, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, now() + $7) RETURNING expires_at",
    )
    .bind(token_id)
    .bind(caller.user_id)
    .bind(name)
    .bind(secret.hash())
    .bind(caller.credential_version)
    .bind(request.scope.as_str())
    .bind(lifetime)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query(
        "DELETE FROM api_tokens WHERE user_id = $1 AND revoked_at IS NOT NULL AND token_id NOT IN (
             SELECT token_id FROM api_tokens WHERE user_id = $1 AND revoked_at IS NOT NULL
             ORDER BY revoked_at DESC LIMIT $2)",
    )
    .bind(caller.user_id)
    .bind(KEPT_REVOKED_PER_USER)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(NewApiToken {
        token_id,
        name: name.to_owned(),
        scope: request.scope,
        expires_at,
        token: secret.expose().to_owned(),
    })
}

/// Deletes tokens revoked or expired longer than [`KEPT_REVOKED_FOR`] ago; returns how many.
pub async fn purge_revoked(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let purged = sqlx::query("DELETE FROM api_tokens WHERE revoked_at < now() - $1 OR expires_at < now() - $1")
        .bind(KEPT_REVOKED_FOR)
        .execute(pool)
        .await?;
    Ok(purged.rows_affected())
}

/// The user's tokens, newest first (revoked ones too, marked).
pub async fn list(pool: &PgPool, user_id: Uuid) -> Result<Vec<ApiTokenInfo>, sqlx::Error> {
    let rows: Vec<TokenRow> = sqlx::query_as(
        "SELECT token_id, name, scope, expires_at, created_at, last_used_at, revoked_at FROM api_tokens
         WHERE user_id = $1 ORDER BY created_at DESC LIMIT 100",
    )
    .bind(user_id)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(TokenRow::into_info).collect())
}

/// A row of `api_tokens` as [`list`] reads it (the wire type knows no database).
#[derive(sqlx::FromRow)]
struct TokenRow {
    token_id: Uuid,
    name: String,
    scope: String,
    expires_at: Option<OffsetDateTime>,
    created_at: OffsetDateTime,
    last_used_at: Option<OffsetDateTime>,
    revoked_at: Option<OffsetDateTime>,
}

impl TokenRow {
    fn into_info(self) -> ApiTokenInfo {
        let TokenRow { token_id, name, scope, expires_at, created_at, last_used_at, revoked_at } = self;
        let scope = stored_scope(&scope);
        ApiTokenInfo { token_id, name, scope, expires_at, created_at, last_used_at, revoked_at }
    }
}

/// Revokes one of the user's tokens; `false` if the user has no such token (someone else's
/// included). Revoking a revoked token changes nothing; revoking a live one tells every
/// instance.
pub async fn revoke(pool: &PgPool, user_id: Uuid, token_id: Uuid) -> Result<bool, sqlx::Error> {
    let (found, _told): (bool, i64) = sqlx::query_as(
        "WITH target AS (SELECT revoked_at IS NULL AS live FROM api_tokens WHERE token_id = $1 AND user_id = $2),
              revoked AS (UPDATE api_tokens SET revoked_at = now()
                          WHERE token_id = $1 AND user_id = $2 AND revoked_at IS NULL RETURNING user_id),
              told AS (SELECT pg_notify($3, user_id::text) FROM revoked)
         SELECT EXISTS (SELECT FROM target), (SELECT count(*) FROM told)",
    )
    .bind(token_id)
    .bind(user_id)
    .bind(super::cache::CHANNEL)
    .fetch_one(pool)
    .await?;
    Ok(found)
}

/// Who the token belongs to, if it exists, is neither revoked nor expired and was made under
/// the user's current credentials; notes its use (at most once a minute, so that a busy client does not
/// write a row per request).
pub async fn find(pool: &PgPool, secret: &Secret) -> Result<Option<Caller>, sqlx::Error> {
    if !secret.well_formed(PREFIX) {
        return Ok(None);
    }
    let found: Option<(Uuid, bool, String, Uuid, String, String, i64)> = sqlx::query_as(
        "SELECT t.token_id, t.last_used_at IS NULL OR t.last_used_at < now() - interval '1 minute', t.scope,
                u.user_id, u.username, u.role, u.credential_version
         FROM api_tokens t JOIN users u USING (user_id)
         WHERE t.secret_hash = $1 AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > now())
           AND t.credential_version = u.credential_version",
    )
    .bind(secret.hash())
    .fetch_optional(pool)
    .await?;
    let Some((token_id, note_use, scope, user_id, username, role, credential_version)) = found else {
        return Ok(None);
    };
    let scope = stored_scope(&scope);
    if note_use {
        sqlx::query("UPDATE api_tokens SET last_used_at = now() WHERE token_id = $1")
            .bind(token_id)
            .execute(pool)
            .await?;
    }
    Ok(Username::parse(&username).ok().zip(Role::parse(&role)).map(|(username, role)| Caller {
        user_id,
        username,
        role,
        credential: Credential::Token { token_id, scope },
        credential_version,
    }))
}

/// A scope as `api_tokens` stores it. The column's check allows no other value; were one there,
/// the token would read only rather than do everything.
fn stored_scope(scope: &str) -> TokenScope {
    TokenScope::parse(scope).unwrap_or(TokenScope::Read)
}

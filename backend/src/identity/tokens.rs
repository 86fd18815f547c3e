//! API tokens for programmatic clients: made by a user (shown once), named, revocable, with the
//! time they were last used. Sent as `Authorization: Bearer <token>`.

use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Caller, Credential, Role, Secret, Username};
use bank::contract::{ApiTokenInfo, NewApiToken};

/// Every token starts with this, so that a leaked one is easy to recognise (and to scan for).
pub const PREFIX: &str = "cqb_";

/// A user may hold this many tokens that are not revoked.
pub const MAX_ACTIVE_PER_USER: i64 = 20;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("a token name has 1 to 64 characters, without control characters")]
    BadName,
    #[error("you already have {MAX_ACTIVE_PER_USER} tokens; revoke one first")]
    TooMany,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

pub async fn create(pool: &PgPool, user_id: Uuid, name: &str) -> Result<NewApiToken, TokenError> {
    let name = name.trim();
    if !(1..=64).contains(&name.chars().count()) || name.chars().any(char::is_control) {
        return Err(TokenError::BadName);
    }
    let secret = Secret::generate(PREFIX);
    let token_id = Uuid::new_v4();
    // One statement: two concurrent requests cannot both pass the count.
    let inserted = sqlx::query(
        "INSERT INTO api_tokens (token_id, user_id, name, secret_hash)
         SELECT $1, $2, $3, $4
         WHERE (SELECT count(*) FROM api_tokens WHERE user_id = $2 AND revoked_at IS NULL) < $5",
    )
    .bind(token_id)
    .bind(user_id)
    .bind(name)
    .bind(secret.hash())
    .bind(MAX_ACTIVE_PER_USER)
    .execute(pool)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(TokenError::TooMany);
    }
    Ok(NewApiToken { token_id, name: name.to_owned(), token: secret.expose().to_owned() })
}

/// The user's tokens, newest first (revoked ones too, marked).
pub async fn list(pool: &PgPool, user_id: Uuid) -> Result<Vec<ApiTokenInfo>, sqlx::Error> {
    let rows: Vec<TokenRow> = sqlx::query_as(
        "SELECT token_id, name, created_at, last_used_at, revoked_at FROM api_tokens
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
    created_at: OffsetDateTime,
    last_used_at: Option<OffsetDateTime>,
    revoked_at: Option<OffsetDateTime>,
}

impl TokenRow {
    fn into_info(self) -> ApiTokenInfo {
        let TokenRow { token_id, name, created_at, last_used_at, revoked_at } = self;
        ApiTokenInfo { token_id, name, created_at, last_used_at, revoked_at }
    }
}

/// Revokes one of the user's tokens; `false` if the user has no such token (someone else's
/// included).
pub async fn revoke(pool: &PgPool, user_id: Uuid, token_id: Uuid) -> Result<bool, sqlx::Error> {
    let revoked = sqlx::query(
        "UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE token_id = $1 AND user_id = $2",
    )
    .bind(token_id)
    .bind(user_id)
    .execute(pool)
    .await?;
    Ok(revoked.rows_affected() == 1)
}

/// Who the token belongs to, if it exists and is not revoked; notes its use (at most once a
/// minute, so that a busy client does not write a row per request).
pub async fn find(pool: &PgPool, secret: &Secret) -> Result<Option<Caller>, sqlx::Error> {
    if !secret.well_formed(PREFIX) {
        return Ok(None);
    }
    let found: Option<(Uuid, bool, Uuid, String, String)> = sqlx::query_as(
        "SELECT t.token_id, t.last_used_at IS NULL OR t.last_used_at < now() - interval '1 minute',
                u.user_id, u.username, u.role
         FROM api_tokens t JOIN users u USING (user_id)
         WHERE t.secret_hash = $1 AND t.revoked_at IS NULL",
    )
    .bind(secret.hash())
    .fetch_optional(pool)
    .await?;
    let Some((token_id, note_use, user_id, username, role)) = found else {
        return Ok(None);
    };
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
        credential: Credential::Token { token_id },
    }))
}

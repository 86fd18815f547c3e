//! Who is signed in, their role and their API tokens, on the wire.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

/// Who is signed in, as pages and clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignedIn {
    pub username: String,
    /// `customer` or `operator`.
    pub role: Role,
}

/// What a user may do: customers use their own accounts; operators also see every account and
/// run the read side's levers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Customer,
    Operator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Operator => "operator",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "customer" => Some(Role::Customer),
            "operator" => Some(Role::Operator),
            _ => None,
        }
    }
}

/// What a token may do: everything its owner may (`full`), read only (queries and the live
/// stream), or scrape `/metrics` only (an operator's scraper needs no token that can act).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenScope {
    #[default]
    Full,
    Read,
    Metrics,
}

impl TokenScope {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenScope::Full => "full",
            TokenScope::Read => "read",
            TokenScope::Metrics => "metrics",
        }
    }

    pub fn parse(text: &str) -> Option<TokenScope> {
        match text {
            "full" => Some(TokenScope::Full),
            "read" => Some(TokenScope::Read),
            "metrics" => Some(TokenScope::Metrics),
            _ => None,
        }
    }
}

/// An API token as its owner sees it in the list: never the secret, which is shown once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiTokenInfo {
    pub token_id: Uuid,
    pub name: String,
    pub scope: TokenScope,
    /// When it stops working by itself, if it does.
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

/// One of the user's browser sessions, as they see it in the list (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionInfo {
    pub session_id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Noted at most once a minute.
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen_at: OffsetDateTime,
    /// The browser's `User-Agent` when it signed in (the first 200 characters).
    pub user_agent: String,
    /// Whether this is the session the request came with.
    pub current: bool,
}

/// A token just made: the only time its secret is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewApiToken {
    pub token_id: Uuid,
    pub name: String,
    pub scope: TokenScope,
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// Send as `Authorization: Bearer <token>`.
    pub token: String,
}

/// What the operations page shows of personal data: whether it is sealed, how many people have
/// a data key, how many were forgotten.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PersonalDataStatus {
    /// The server has a master key: personal data is sealed, and people can be forgotten.
    pub sealed: bool,
    /// People with a data key.
    pub keys: i64,
    /// Of those, keys a master key other than the current one wrapped (a rotation under way).
    pub keys_under_other_master_keys: i64,
    /// People forgotten.
    pub forgotten: i64,
}

/// What forgetting someone did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ForgetResponse {
    /// Their accounts, which now read as owned by someone forgotten.
    pub accounts: Vec<Uuid>,
}

//! Who is asking: users (username and Argon2id password), their browser sessions and their API
//! tokens. Plain tables, not events: access control is not the bank's history; what a user did
//! is, and every event's metadata names its actor.
//!
//! Secrets (session ids, tokens) are 256 random bits, handed to the client once and stored only
//! as their SHA-256: a copy of the tables opens nothing.

mod cache;
mod passwords;
mod secrets;
pub mod sessions;
pub mod tokens;
pub mod users;

use uuid::Uuid;

pub use bank::contract::{Role, TokenScope};
pub(crate) use cache::announce_change;
pub use cache::{CallerCache, Presented};
pub use passwords::{PasswordError, Passwords};
pub use secrets::Secret;
pub use users::{AdminError, Password, SignUpError, User, Username, UsernameError};

/// Gives the server's role (quoted) what identity needs of its tables.
pub async fn grant_to_server_role(pool: &sqlx::PgPool, role: &str) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "GRANT SELECT, INSERT, UPDATE, DELETE ON users, sessions, api_tokens, sign_in_addresses, user_keys, forgotten_users TO {role}"
    ))
    .execute(pool)
    .await?;
    Ok(())
}

/// The user a request is from, as the server's authentication found them (a session cookie or
/// a bearer token). Requests without one carry no `Caller`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub user_id: Uuid,
    pub username: Username,
    pub role: Role,
    pub credential: Credential,
    /// The user's credential version when this was looked up: what the caller makes (a token)
    /// is made under it, and refused if it has moved on since.
    pub credential_version: i64,
}

/// How the caller proved who they are. A token carries no ambient authority (a browser never
/// sends one by itself), so cross-site checks apply to sessions only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    Session,
    Token { token_id: Uuid, scope: TokenScope },
}

impl Caller {
    pub fn is_operator(&self) -> bool {
        self.role == Role::Operator
    }

    /// Whether this caller may see an account owned by `owner_id`: its owner and operators.
    pub fn may_see(&self, owner_id: &str) -> bool {
        self.is_operator() || self.username.as_str() == owner_id
    }

    /// The owner whose accounts a list shows to this caller: `None` (all) for operators.
    pub fn visible_owner(&self) -> Option<&str> {
        if self.is_operator() { None } else { Some(self.username.as_str()) }
    }
}

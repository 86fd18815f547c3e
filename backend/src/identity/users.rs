//! Users: a unique lower-case name, which is also the `ownerId` of their accounts, an Argon2id
//! password hash and a role.

use sqlx::PgPool;
use uuid::Uuid;

use super::{Passwords, Role};

/// 3–32 characters: lower-case letters, digits, `.`, `_`, `-`, starting with a letter or digit.
/// Upper-case input is lowered, so `Alice` and `alice` are one user.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Username(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsernameError {
    #[error("a username has 3 to 32 characters")]
    Length,
    #[error("a username may hold only letters a–z, digits, '.', '_' and '-', and starts with a letter or digit")]
    Characters,
}

impl Username {
    pub fn parse(input: &str) -> Result<Username, UsernameError> {
        let name = input.trim().to_lowercase();
        if !(3..=32).contains(&name.chars().count()) {
            return Err(UsernameError::Length);
        }
        let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-');
        let starts_well = name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit());
        if !starts_well || !name.chars().all(allowed) {
            return Err(UsernameError::Characters);
        }
        Ok(Username(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Username {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// 8 to 128 characters (the upper bound keeps hashing cheap to ask for). Its `Debug` hides it.
#[derive(Clone)]
pub struct Password(String);

impl std::fmt::Debug for Password {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Password(…)")
    }
}

impl Password {
    pub const MIN_CHARS: usize = 8;
    pub const MAX_CHARS: usize = 128;

    pub fn parse(input: &str) -> Result<Password, String> {
        let length = input.chars().count();
        if length < Self::MIN_CHARS {
            return Err(format!("a password has at least {} characters", Self::MIN_CHARS));
        }
        if length > Self::MAX_CHARS {
            return Err(format!("a password has at most {} characters", Self::MAX_CHARS));
        }
        Ok(Password(input.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SignUpError {
    #[error("the username {0} is taken")]
    Taken(Username),
    #[error(transparent)]
    Password(#[from] super::PasswordError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Why `create-operator` or `reset-password` changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0} is a customer: pass --promote to make them an operator (their sessions and tokens end)")]
    IsCustomer(Username),
    #[error("{0} is already an operator: set their password with reset-password")]
    AlreadyOperator(Username),
    #[error("there is no user {0}")]
    Unknown(Username),
    #[error(transparent)]
    Password(#[from] super::PasswordError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// A user as stored.
#[derive(Debug, Clone)]
pub struct User {
    pub user_id: Uuid,
    pub username: Username,
    pub role: Role,
    /// Bumped by every change of password or role: sessions and tokens made under an older
    /// one name nobody.
    pub credential_version: i64,
}

/// Creates a user. The name is unique; a taken one is refused, never overwritten.
pub async fn create(
    pool: &PgPool,
    passwords: &Passwords,
    username: &Username,
    password: &Password,
    role: Role,
) -> Result<User, SignUpError> {
    let password_hash = passwords.hash(password.expose()).await?;
    let user_id = Uuid::new_v4();
    let credential_version: Option<i64> = sqlx::query_scalar(
        "INSERT INTO users (user_id, username, password_hash, role) VALUES ($1, $2, $3, $4)
         ON CONFLICT (username) DO NOTHING RETURNING credential_version",
    )
    .bind(user_id)
    .bind(username.as_str())
    .bind(&password_hash)
    .bind(role.as_str())
    .fetch_optional(pool)
    .await?;
    let Some(credential_version) = credential_version else {
        return Err(SignUpError::Taken(username.clone()));
    };
    Ok(User { user_id, username: username.clone(), role, credential_version })
}

/// Makes a new user `username` an operator with this password. A name already taken is
/// refused: a customer who registered the name an administrator meant for a new operator must
/// not get the role with it. With `promote`, an existing customer becomes an operator (the
/// password set, every session and token they had ended); an operator is never changed here
/// (see [`reset_password`]).
pub async fn create_operator(
    pool: &PgPool,
    passwords: &Passwords,
    username: &Username,
    password: &Password,
    promote: bool,
) -> Result<User, AdminError> {
    let password_hash = passwords.hash(password.expose()).await?;
    let mut tx = pool.begin().await?;
    let created: Option<(Uuid, i64)> = sqlx::query_as(
        "INSERT INTO users (user_id, username, password_hash, role) VALUES ($1, $2, $3, 'operator')
         ON CONFLICT (username) DO NOTHING RETURNING user_id, credential_version",
    )
    .bind(Uuid::new_v4())
    .bind(username.as_str())
    .bind(&password_hash)
    .fetch_optional(&mut *tx)
    .await?;
    let (user_id, credential_version) = match created {
        Some(created) => created,
        None => {
            let (user_id, role): (Uuid, String) =
                sqlx::query_as("SELECT user_id, role FROM users WHERE username = $1 FOR UPDATE")
                    .bind(username.as_str())
                    .fetch_one(&mut *tx)
                    .await?;
            if role == Role::Operator.as_str() {
                return Err(AdminError::AlreadyOperator(username.clone()));
            }
            if !promote {
                return Err(AdminError::IsCustomer(username.clone()));
            }
            let credential_version = change_credentials(&mut tx, user_id, &password_hash, Role::Operator).await?;
            (user_id, credential_version)
        }
    };
    tx.commit().await?;
    Ok(User { user_id, username: username.clone(), role: Role::Operator, credential_version })
}

/// Sets `username`'s password (an operator's who lost theirs, a customer's who asked, a name
/// reserved for the owner of old accounts): every session and token they had ends, on every
/// instance at once, including one a sign-in with the old password is creating right now.
pub async fn reset_password(
    pool: &PgPool,
    passwords: &Passwords,
    username: &Username,
    password: &Password,
) -> Result<User, AdminError> {
    let password_hash = passwords.hash(password.expose()).await?;
    let mut tx = pool.begin().await?;
    let found: Option<(Uuid, String)> =
        sqlx::query_as("SELECT user_id, role FROM users WHERE username = $1 FOR UPDATE")
            .bind(username.as_str())
            .fetch_optional(&mut *tx)
            .await?;
    let Some((user_id, role)) = found else {
        return Err(AdminError::Unknown(username.clone()));
    };
    let role = Role::parse(&role).unwrap_or(Role::Customer);
    let credential_version = change_credentials(&mut tx, user_id, &password_hash, role).await?;
    tx.commit().await?;
    Ok(User { user_id, username: username.clone(), role, credential_version })
}

/// How many addresses are remembered per user (the most recently used).
const SIGN_IN_ADDRESSES_KEPT: i64 = 8;

/// How long an address the user signed in from stays known without another sign-in there.
const SIGN_IN_ADDRESS_KEPT_FOR: time::Duration = time::Duration::days(90);

/// Whether `username` signed in or up from `address` (as the rate limits key clients) lately,
/// under their current password.
pub async fn signed_in_from(pool: &PgPool, username: &Username, address: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT FROM sign_in_addresses a JOIN users u USING (user_id)
                        WHERE u.username = $1 AND a.address = $2 AND a.last_used_at > now() - $3)",
    )
    .bind(username.as_str())
    .bind(address)
    .bind(SIGN_IN_ADDRESS_KEPT_FOR)
    .fetch_one(pool)
    .await
}

/// Forgets the addresses the user signed in from: after a password change or reset, whoever
/// signed in with the old password somewhere keeps no exemption there.
async fn forget_sign_in_addresses(tx: &mut sqlx::PgConnection, user_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM sign_in_addresses WHERE user_id = $1").bind(user_id).execute(tx).await?;
    Ok(())
}

/// Remembers that the user signed in or up from `address`, keeping the most recent few (and
/// none unused for [`SIGN_IN_ADDRESS_KEPT_FOR`]).
pub async fn note_sign_in_address(pool: &PgPool, user_id: Uuid, address: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH noted AS (
             INSERT INTO sign_in_addresses (user_id, address) VALUES ($1, $2)
             ON CONFLICT (user_id, address) DO UPDATE SET last_used_at = now())
         DELETE FROM sign_in_addresses WHERE user_id = $1 AND address <> $2 AND (
             last_used_at < now() - $4 OR address NOT IN (
                 SELECT address FROM sign_in_addresses WHERE user_id = $1 AND address <> $2
                 ORDER BY last_used_at DESC LIMIT $3 - 1))",
    )
    .bind(user_id)
    .bind(address)
    .bind(SIGN_IN_ADDRESSES_KEPT)
    .bind(SIGN_IN_ADDRESS_KEPT_FOR)
    .execute(pool)
    .await?;
    Ok(())
}

/// Sets the password of `user` (whose current password the caller checked). Every session ends
/// (this browser's too: the caller starts a new one), and every token, if `end_tokens`; else
/// their live tokens are carried over to the new credentials. `None` if their credentials
/// changed since `user` was read (a reset meanwhile wins): nothing was changed.
pub async fn change_password(
    pool: &PgPool,
    passwords: &Passwords,
    user: &User,
    new: &Password,
    end_tokens: bool,
) -> Result<Option<User>, SignUpError> {
    let password_hash = passwords.hash(new.expose()).await?;
    let mut tx = pool.begin().await?;
    let moved: Option<i64> = sqlx::query_scalar(
        "UPDATE users SET password_hash = $2, credential_version = credential_version + 1
         WHERE user_id = $1 AND credential_version = $3 RETURNING credential_version",
    )
    .bind(user.user_id)
    .bind(&password_hash)
    .bind(user.credential_version)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(credential_version) = moved else {
        return Ok(None);
    };
    let tokens = if end_tokens { Tokens::Revoke } else { Tokens::CarryOver { from: user.credential_version } };
    end_credentials(&mut tx, user.user_id, credential_version, tokens).await?;
    tx.commit().await?;
    Ok(Some(User { credential_version, ..user.clone() }))
}

/// Sets a user's password hash and role and moves their credentials on (see
/// [`end_credentials`]): every session and token ends.
async fn change_credentials(
    tx: &mut sqlx::PgConnection,
    user_id: Uuid,
    password_hash: &str,
    role: Role,
) -> Result<i64, sqlx::Error> {
    let credential_version: i64 = sqlx::query_scalar(
        "UPDATE users SET password_hash = $2, role = $3, credential_version = credential_version + 1
         WHERE user_id = $1 RETURNING credential_version",
    )
    .bind(user_id)
    .bind(password_hash)
    .bind(role.as_str())
    .fetch_one(&mut *tx)
    .await?;
    end_credentials(&mut *tx, user_id, credential_version, Tokens::Revoke).await?;
    Ok(credential_version)
}

/// The user with this name and password, or `None` (for an unknown name as for a wrong
/// password, in about the same time).
pub async fn check_password(
    pool: &PgPool,
    passwords: &Passwords,
    username: &Username,
    password: &str,
) -> Result<Option<User>, SignUpError> {
    let stored: Option<(Uuid, String, String, i64)> =
        sqlx::query_as("SELECT user_id, password_hash, role, credential_version FROM users WHERE username = $1")
            .bind(username.as_str())
            .fetch_optional(pool)
            .await?;
    // A reserved name ('!…', see the migration) has no password: checked like an unknown one.
    let usable = stored.as_ref().map(|(_, hash, _, _)| hash.as_str()).filter(|hash| !hash.starts_with('!'));
    let matches = passwords.verify(password, usable).await?;
    let stored = stored.filter(|(_, hash, _, _)| !hash.starts_with('!'));
    Ok(stored.filter(|_| matches).and_then(|(user_id, _, role, credential_version)| {
        Some(User { user_id, username: username.clone(), role: Role::parse(&role)?, credential_version })
    }))
}

/// What becomes of a user's live tokens when their credentials move on.
enum Tokens {
    /// Revoked.
    Revoke,
    /// Kept working: those made under version `from` are carried over to the new one.
    CarryOver { from: i64 },
}

/// What follows a user's credentials moving on to `credential_version`, in the transaction that
/// moved them: every session ends (deleted; made under an older version in any case), the
/// addresses they signed in from lose their exemption, their tokens are revoked or carried
/// over, and every instance forgets what it remembered of them when the transaction commits.
async fn end_credentials(
    tx: &mut sqlx::PgConnection,
    user_id: Uuid,
    credential_version: i64,
    tokens: Tokens,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM sessions WHERE user_id = $1").bind(user_id).execute(&mut *tx).await?;
    forget_sign_in_addresses(&mut *tx, user_id).await?;
    match tokens {
        Tokens::Revoke => {
            sqlx::query("UPDATE api_tokens SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL")
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
        }
        Tokens::CarryOver { from } => {
            sqlx::query(
                "UPDATE api_tokens SET credential_version = $2
                 WHERE user_id = $1 AND revoked_at IS NULL AND credential_version = $3",
            )
            .bind(user_id)
            .bind(credential_version)
            .bind(from)
            .execute(&mut *tx)
            .await?;
        }
    }
    super::cache::announce_change(&mut *tx, user_id).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_lowered_and_checked() {
        assert_eq!(Username::parse(" Alice ").unwrap().as_str(), "alice");
        assert_eq!(Username::parse("bo.b_1-x").unwrap().as_str(), "bo.b_1-x");
        assert_eq!(Username::parse("al"), Err(UsernameError::Length));
        assert_eq!(Username::parse(&"a".repeat(33)), Err(UsernameError::Length));
        assert_eq!(Username::parse("-alice"), Err(UsernameError::Characters));
        assert_eq!(Username::parse("al ice"), Err(UsernameError::Characters));
        assert_eq!(Username::parse("alicé"), Err(UsernameError::Characters));
    }

    #[test]
    fn passwords_have_bounds_and_hide_in_logs() {
        assert!(Password::parse("short").is_err());
        assert!(Password::parse(&"p".repeat(129)).is_err());
        let password = Password::parse("long enough").unwrap();
        assert_eq!(format!("{password:?}"), "Password(…)");
    }
}

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

/// A user as stored.
#[derive(Debug, Clone)]
pub struct User {
    pub user_id: Uuid,
    pub username: Username,
    pub role: Role,
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
    let inserted = sqlx::query(
        "INSERT INTO users (user_id, username, password_hash, role) VALUES ($1, $2, $3, $4)
         ON CONFLICT (username) DO NOTHING",
    )
    .bind(user_id)
    .bind(username.as_str())
    .bind(&password_hash)
    .bind(role.as_str())
    .execute(pool)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(SignUpError::Taken(username.clone()));
    }
    Ok(User { user_id, username: username.clone(), role })
}

/// Makes `username` an operator with this password: creates the user, or promotes an existing
/// one and sets the password (the documented way to recover an operator's access). Either way
/// every session and token the user had ends: whoever held them before (a customer who took
/// the name, a thief) does not become an operator with them.
pub async fn make_operator(
    pool: &PgPool,
    passwords: &Passwords,
    username: &Username,
    password: &Password,
) -> Result<User, SignUpError> {
    let password_hash = passwords.hash(password.expose()).await?;
    let mut tx = pool.begin().await?;
    let user_id: Uuid = sqlx::query_scalar(
        "INSERT INTO users (user_id, username, password_hash, role) VALUES ($1, $2, $3, 'operator')
         ON CONFLICT (username) DO UPDATE SET password_hash = EXCLUDED.password_hash, role = 'operator'
         RETURNING user_id",
    )
    .bind(Uuid::new_v4())
    .bind(username.as_str())
    .bind(&password_hash)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM sessions WHERE user_id = $1").bind(user_id).execute(&mut *tx).await?;
    sqlx::query("UPDATE api_tokens SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL")
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(User { user_id, username: username.clone(), role: Role::Operator })
}

/// The user with this name and password, or `None` (for an unknown name as for a wrong
/// password, in about the same time).
pub async fn check_password(
    pool: &PgPool,
    passwords: &Passwords,
    username: &Username,
    password: &str,
) -> Result<Option<User>, SignUpError> {
    let stored: Option<(Uuid, String, String)> =
        sqlx::query_as("SELECT user_id, password_hash, role FROM users WHERE username = $1")
            .bind(username.as_str())
            .fetch_optional(pool)
            .await?;
    // A reserved name ('!…', see the migration) has no password: checked like an unknown one.
    let usable = stored.as_ref().map(|(_, hash, _)| hash.as_str()).filter(|hash| !hash.starts_with('!'));
    let matches = passwords.verify(password, usable).await?;
    let stored = stored.filter(|(_, hash, _)| !hash.starts_with('!'));
    Ok(stored
        .filter(|_| matches)
        .and_then(|(user_id, _, role)| Some(User { user_id, username: username.clone(), role: Role::parse(&role)? })))
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

//! The texts an account carries, parsed at the edge: who owns it, and why it was frozen.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Who owns an account: a non-empty name of at most [`OwnerId::MAX_CHARS`] characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OwnerId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OwnerIdError {
    #[error("the owner must not be empty")]
    Empty,
    #[error("the owner must be at most 100 characters long")]
    TooLong,
    #[error("the owner must not contain control characters")]
    ControlCharacter,
}

impl OwnerId {
    pub const MAX_CHARS: usize = 100;

    pub fn parse(input: &str) -> Result<OwnerId, OwnerIdError> {
        match bounded_text(input, Self::MAX_CHARS) {
            Ok(text) => Ok(OwnerId(text.to_owned())),
            Err(TextFault::Empty) => Err(OwnerIdError::Empty),
            Err(TextFault::TooLong) => Err(OwnerIdError::TooLong),
            Err(TextFault::ControlCharacter) => Err(OwnerIdError::ControlCharacter),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Where a forgotten person was: their name is gone from every read of the log. No
    /// username can be it (usernames have no brackets), so it owns nothing anyone can reach.
    pub fn forgotten() -> OwnerId {
        OwnerId(FORGOTTEN.to_owned())
    }

    pub fn is_forgotten(&self) -> bool {
        self.0 == FORGOTTEN
    }
}

/// The text that stands where a forgotten person's name or words were.
pub const FORGOTTEN: &str = "(forgotten)";

impl TryFrom<String> for OwnerId {
    type Error = OwnerIdError;
    fn try_from(value: String) -> Result<OwnerId, OwnerIdError> {
        OwnerId::parse(&value)
    }
}

impl From<OwnerId> for String {
    fn from(owner: OwnerId) -> String {
        owner.0
    }
}

impl fmt::Display for OwnerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the rules for a short text (an owner, a reason) find wrong with one.
enum TextFault {
    Empty,
    TooLong,
    ControlCharacter,
}

/// `input` trimmed, if that is not empty, at most `max_chars` characters long and without
/// control characters.
fn bounded_text(input: &str, max_chars: usize) -> Result<&str, TextFault> {
    let trimmed = input.trim();
    if trimmed.is_empty() {
        Err(TextFault::Empty)
    } else if trimmed.chars().count() > max_chars {
        Err(TextFault::TooLong)
    } else if trimmed.chars().any(char::is_control) {
        Err(TextFault::ControlCharacter)
    } else {
        Ok(trimmed)
    }
}

/// Why an operator froze an account: 1 to [`Reason::MAX_CHARS`] characters, trimmed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Reason(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReasonError {
    #[error("a reason is required")]
    Empty,
    #[error("the reason must be at most 200 characters long")]
    TooLong,
    #[error("the reason must not contain control characters")]
    ControlCharacter,
}

impl Reason {
    pub const MAX_CHARS: usize = 200;

    pub fn parse(input: &str) -> Result<Reason, ReasonError> {
        match bounded_text(input, Self::MAX_CHARS) {
            Ok(text) => Ok(Reason(text.to_owned())),
            Err(TextFault::Empty) => Err(ReasonError::Empty),
            Err(TextFault::TooLong) => Err(ReasonError::TooLong),
            Err(TextFault::ControlCharacter) => Err(ReasonError::ControlCharacter),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Where the words of a forgotten person were.
    pub fn forgotten() -> Reason {
        Reason(FORGOTTEN.to_owned())
    }
}

impl TryFrom<String> for Reason {
    type Error = ReasonError;
    fn try_from(value: String) -> Result<Reason, ReasonError> {
        Reason::parse(&value)
    }
}

impl From<Reason> for String {
    fn from(reason: Reason) -> String {
        reason.0
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

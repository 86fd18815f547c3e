use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Where an event sits in the global log, as readers see it.
///
/// Readers walk the log ordered by `(transaction_id, global_position)`: `global_position` alone
/// is allocated at insert time and commits out of order, so a reader that only remembered it
/// would skip late commits. The derived `Ord` compares the pair, transaction first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position {
    pub transaction_id: i64,
    pub global_position: i64,
}

impl Position {
    /// Before the first event.
    pub const START: Position = Position { transaction_id: 0, global_position: 0 };
}

/// A position read from a row's `transaction_id` (as bigint) and `global_position` columns, as
/// the store's `projection_checkpoint(name)` relation gives them: `#[sqlx(flatten)]` it into a
/// row type.
#[cfg(feature = "postgres")]
impl<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> for Position {
    fn from_row(row: &'r sqlx::postgres::PgRow) -> Result<Position, sqlx::Error> {
        use sqlx::Row;
        Ok(Position {
            transaction_id: row.try_get("transaction_id")?,
            global_position: row.try_get("global_position")?,
        })
    }
}

/// The consistency token a command answers with: `"<transaction_id>:<global_position>"`.
impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.transaction_id, self.global_position)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a position: expected \"<transaction_id>:<global_position>\"")]
pub struct ParsePositionError(String);

impl FromStr for Position {
    type Err = ParsePositionError;

    fn from_str(s: &str) -> Result<Position, ParsePositionError> {
        let fail = || ParsePositionError(s.to_owned());
        let (transaction_id, global_position) = s.split_once(':').ok_or_else(fail)?;
        let transaction_id: i64 = transaction_id.parse().map_err(|_| fail())?;
        let global_position: i64 = global_position.parse().map_err(|_| fail())?;
        if transaction_id < 0 || global_position < 0 {
            return Err(fail());
        }
        Ok(Position { transaction_id, global_position })
    }
}

/// On the wire a position is its token string.
impl Serialize for Position {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Position {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Position, D::Error> {
        let token = String::deserialize(deserializer)?;
        token.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_its_token() {
        let position = Position { transaction_id: 812, global_position: 40 };
        assert_eq!(position.to_string(), "812:40");
        assert_eq!("812:40".parse::<Position>(), Ok(position));
    }

    #[test]
    fn orders_by_transaction_before_position() {
        let committed_late = Position { transaction_id: 9, global_position: 1 };
        let committed_early = Position { transaction_id: 10, global_position: 0 };
        assert!(committed_late < committed_early);
    }

    #[test]
    fn refuses_malformed_tokens() {
        for token in ["", "12", "a:b", "1:2:3", "-1:4", "1:"] {
            assert!(token.parse::<Position>().is_err(), "{token:?} was accepted");
        }
    }
}

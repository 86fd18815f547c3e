//! Keyset paging: where the next page of a list starts, as an opaque token.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

/// The last row of a page, newest-first lists being ordered by a time and then an id: the next
/// page holds the rows strictly before it. On the wire `<microseconds since 1970>.<uuid>`; a
/// client passes it back as it got it (`before`), so a page costs an index seek, however deep,
/// and rows added meanwhile shift nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PageCursor {
    pub at: OffsetDateTime,
    pub id: Uuid,
}

impl PageCursor {
    /// Microseconds: what Postgres keeps of a time.
    fn micros(self) -> i128 {
        self.at.unix_timestamp_nanos() / 1_000
    }
}

impl fmt::Display for PageCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.micros(), self.id)
    }
}

impl FromStr for PageCursor {
    type Err = String;

    fn from_str(token: &str) -> Result<PageCursor, String> {
        let invalid = || format!("{token:?} is not a page token (as a list's nextPage gives)");
        let (micros, id) = token.split_once('.').ok_or_else(invalid)?;
        let nanos = micros.parse::<i128>().ok().and_then(|micros| micros.checked_mul(1_000)).ok_or_else(invalid)?;
        let at = OffsetDateTime::from_unix_timestamp_nanos(nanos).map_err(|_| invalid())?;
        let id = Uuid::parse_str(id).map_err(|_| invalid())?;
        Ok(PageCursor { at, id })
    }
}

impl TryFrom<String> for PageCursor {
    type Error = String;

    fn try_from(token: String) -> Result<PageCursor, String> {
        token.parse()
    }
}

impl From<PageCursor> for String {
    fn from(cursor: PageCursor) -> String {
        cursor.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_reads_back_as_the_row_it_names() {
        let cursor = PageCursor {
            at: OffsetDateTime::from_unix_timestamp_nanos(1_764_000_000_123_456_000).unwrap(),
            id: Uuid::new_v4(),
        };
        assert_eq!(cursor.to_string().parse::<PageCursor>(), Ok(cursor));
        let json = serde_json::to_string(&cursor).unwrap();
        assert_eq!(serde_json::from_str::<PageCursor>(&json).unwrap(), cursor);
    }

    #[test]
    fn anything_else_is_refused() {
        let id = "3f0e0000-0000-0000-0000-000000000000";
        let beyond_any_time = format!("99999999999999999999999999.{id}");
        let beyond_any_number = format!("{}.{id}", i128::MAX);
        for token in ["", "12", "x.y", "12.not-a-uuid", &beyond_any_time, &beyond_any_number] {
            assert!(token.parse::<PageCursor>().is_err(), "{token}");
        }
    }
}

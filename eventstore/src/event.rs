use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::Position;

/// An event about to be appended. Its stream and version are given by the append.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: i32,
    pub data: Value,
    pub metadata: Value,
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct RecordedEvent {
    pub global_position: i64,
    pub transaction_id: i64,
    pub event_id: Uuid,
    /// The stream's type (its category): which kind of aggregate it is.
    pub stream_type: String,
    pub stream_id: Uuid,
    pub stream_version: i64,
    pub event_type: String,
    pub schema_version: i32,
    pub data: Value,
    pub metadata: Value,
    pub recorded_at: OffsetDateTime,
}

impl RecordedEvent {
    pub fn position(&self) -> Position {
        Position { transaction_id: self.transaction_id, global_position: self.global_position }
    }
}

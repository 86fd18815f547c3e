//! The log: appending to a stream (`append`), reading one stream (`streams`), and reading the
//! whole log in order (`log`).

mod append;
mod append_streams;
mod log;
mod streams;

pub use append::{
    AppendAndRecordError, AppendError, Appended, CommandRecord, WRITER_TIMEOUTS, append, append_and_record,
    begin_with_stream_lock, stream_lock_key,
};
pub(crate) use append::{EVENTS_UNIQUE, PROCESSED_COMMANDS_KEY, constraint};
pub use append_streams::{GroupedCommand, StreamGroup, StreamKind, append_streams_and_record};
pub use log::{ChangedStream, LogBatch, changed_streams, head, read_all_after, read_batch, read_partition_batch};
pub use streams::{
    latest_version, read_stream, read_stream_from_snapshot, read_stream_until, stream_times, version_before,
};

const RECORDED_EVENT_COLUMNS: &str = "global_position, transaction_id::text::bigint AS transaction_id, \
     event_id, stream_type, stream_id, stream_version, event_type, schema_version, data, metadata, recorded_at";

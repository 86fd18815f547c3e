//! The transfer as the event store keeps it: its stream type and how its events are stored.
//! Transfers are short (at most six events), so they are never snapshotted.

use eventstore::{Aggregate, NewEvent, RecordedEvent, SnapshotVersion};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::event_codec::{self, DecodeError};
use bank::domain::transfer::{self, TransferCommand, TransferEvent, TransferRefusal, TransferState};

pub struct Transfer;

impl Aggregate for Transfer {
    const STREAM_TYPE: &'static str = "transfer";
    const SNAPSHOT_VERSION: SnapshotVersion = SnapshotVersion { schema: 1, fold: 1 };

    type State = TransferState;
    type Command = TransferCommand;
    type Event = TransferEvent;
    type Refusal = TransferRefusal;
    type DecodeError = DecodeError;

    fn decide(state: &TransferState, command: &TransferCommand) -> Result<Vec<TransferEvent>, TransferRefusal> {
        transfer::decide(state, command)
    }

    fn evolve(state: TransferState, event: &TransferEvent) -> TransferState {
        transfer::evolve(state, event)
    }

    fn encode(event: &TransferEvent, metadata: &Value) -> NewEvent {
        event_codec::encode_transfer(event, metadata)
    }

    fn decode(event: &RecordedEvent) -> Result<TransferEvent, DecodeError> {
        event_codec::decode_transfer(event)
    }

    /// A new transfer's id is made per request, and its deadline from the time it arrives: both
    /// are left out, so that a retried request is the same request.
    fn request(transfer_id: Uuid, command: &TransferCommand) -> Value {
        match command {
            TransferCommand::Request(terms) => json!({
                "type": "RequestTransfer", "from": terms.from, "to": terms.to, "amount": terms.amount,
            }),
            TransferCommand::RecordDebit => json!({ "type": "RecordDebit", "transferId": transfer_id }),
            TransferCommand::RecordDebitRefused { reason } => {
                json!({ "type": "RecordDebitRefused", "transferId": transfer_id, "reason": reason })
            }
            TransferCommand::RecordCredit => json!({ "type": "RecordCredit", "transferId": transfer_id }),
            TransferCommand::RecordRefund { reason } => {
                json!({ "type": "RecordRefund", "transferId": transfer_id, "reason": reason })
            }
        }
    }
}

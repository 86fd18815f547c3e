//! A customer's request starts a transfer's stream, with its deadline.

use std::time::Duration;

use eventstore::{AppendNotifier, CommandEnvelope};
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use super::super::WriteOptions;
use crate::event_codec::DecodeError;
use crate::transfer_store::Transfer;
use bank::contract::TransferAccepted;
use bank::domain::{TransferCommand, TransferRefusal, TransferTerms};

/// Why a transfer command was not applied.
pub type TransferCommandError = eventstore::CommandError<TransferRefusal, DecodeError>;

/// Starts transfers: a customer's request becomes a transfer's first event.
#[derive(Clone)]
pub struct TransferRequests {
    transfers: eventstore::CommandHandler<Transfer>,
    /// How long a transfer has to complete before it is undone.
    deadline: Duration,
}

impl TransferRequests {
    pub fn new(pool: PgPool, appends: AppendNotifier, options: WriteOptions, deadline: Duration) -> TransferRequests {
        // Every request opens a new stream: keeping its state would only fill memory.
        let options = WriteOptions { warm_streams: 0, ..options };
        TransferRequests { transfers: eventstore::CommandHandler::new(pool, appends, options), deadline }
    }

    /// Requests the transfer `envelope.command` names, with its deadline from now; the
    /// caller has checked that the requester owns the source. The transfer's id is
    /// `envelope.stream_id`, or the first request's when the request is a retry.
    pub async fn request(
        &self,
        envelope: CommandEnvelope<TransferTermsWithoutDeadline>,
    ) -> Result<TransferAccepted, TransferCommandError> {
        let deadline = OffsetDateTime::now_utc() + self.deadline;
        let TransferTermsWithoutDeadline { from, to, amount, requested_by } = envelope.command.clone();
        let terms = TransferTerms { from, to, amount, requested_by, deadline };
        // Every event of the transfer, on all three streams, carries its id as correlation; the
        // one the request came with is kept beside it.
        let mut metadata = envelope.metadata;
        metadata.insert("correlationIdFromClient".into(), false.into());
        metadata.insert("requestCorrelationId".into(), envelope.correlation_id.to_string().into());
        let envelope = CommandEnvelope {
            command_id: envelope.command_id,
            correlation_id: envelope.stream_id,
            stream_id: envelope.stream_id,
            command: TransferCommand::Request(terms),
            causation_id: envelope.causation_id,
            metadata,
        };
        let accepted = self.transfers.handle(envelope).await?;
        Ok(TransferAccepted { transfer_id: accepted.stream_id, version: accepted.version, position: accepted.position })
    }
}

/// A transfer as a customer asks for it: its deadline is set when the request arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferTermsWithoutDeadline {
    pub from: Uuid,
    pub to: Uuid,
    pub amount: bank::domain::Amount,
    pub requested_by: bank::domain::OwnerId,
}

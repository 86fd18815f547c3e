//! Transfers on the write side: a customer's request starts a transfer's stream; the transfer
//! process then takes its steps (debit the source, credit the target, or refund the source),
//! each an account command, and records each outcome in the transfer's stream.
//!
//! The process is woken two ways, and either may wake it for a transfer more than once:
//! - by the events in the log, as a projection (`transfer_process`): one instance leads it at
//!   a time, and its checkpoint moves (compare-and-set, fenced by the leader's epoch) only after
//!   every transfer of a batch has been taken as far as it goes;
//! - by the clock: the leader looks every second for transfers past their deadline and takes
//!   them on, which the accounts then refuse as too late (and the source is refunded). It
//!   reads the process's own record of the transfers it has begun (`transfer_process_open`),
//!   never the transfers read model, which may lag or be rebuilding.
//!
//! Exactly once: every step's command id is made of the transfer's id and the step's name, so
//! a step taken again (a crash between a step and its record, a paused leader waking up, the
//! deadline racing the log) is answered by the account from its first outcome, and the
//! transfer's stream records each outcome once. Command ids are forgotten after their
//! retention, so three more rules keep that true for a step that comes back later still:
//! the purge spares the step ids of a transfer not yet finished ([`step_ids_to_keep`]); the
//! account judges a step late by when it arrives, not by when it was planned; and a refund is
//! given only to a transfer still where the refused step found it.

mod process;
mod requests;
mod tables;
mod wakeups;

pub use process::{
    DEADLINE_MARGIN, LONGEST_DEADLINE, PARKED_RETRY, PARKED_RETRY_SOON, PROCESS_NAME, PlannedStep, ProcessError,
    TransferProcess,
};
pub use requests::{TransferCommandError, TransferRequests, TransferTermsWithoutDeadline};
pub use tables::{grant_to_server_role, step_command_id, step_ids_to_keep};

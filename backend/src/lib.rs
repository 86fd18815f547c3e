//! The bank on the server, behind its API: the write side (command handlers and the transfer
//! process), the read side (projections, queries, read stores), identity, and the event codec
//! and stores that tie the domain (`bank`) to the event store (`eventstore`). Nothing here
//! knows HTTP or pages: the API (`app`) calls [`Services`].

pub mod account_store;
pub mod event_codec;
pub mod identity;
pub mod personal;
pub mod read_side;
pub mod schema;
pub mod transfer_store;
pub mod write_side;

mod services;
pub use services::Services;

#![recursion_limit = "256"]

//! The bank: its rules (`domain`), its API (`api`), its pages (`ui`) and, on the server, the
//! write side and read side behind the API.

pub mod api;
pub mod domain;
pub mod ui;

#[cfg(feature = "ssr")]
pub mod account_store;
#[cfg(feature = "ssr")]
pub mod event_codec;
#[cfg(feature = "ssr")]
pub mod read_side;
#[cfg(feature = "ssr")]
pub mod write_side;

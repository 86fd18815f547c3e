#![recursion_limit = "256"]

//! The bank: its rules (`domain`), its wire types (`contract`), its API (`api`), its pages
//! (`ui`) and, on the server, the write side and read side behind the API. Imports run one
//! way: `ui` and `api` use the write and read sides, which use `domain`, `contract` and the
//! event store; nothing inside imports `api` or `ui`.

pub mod api;
pub mod contract;
pub mod domain;
pub mod ui;

#[cfg(feature = "ssr")]
pub mod account_store;
#[cfg(feature = "ssr")]
pub mod event_codec;
#[cfg(feature = "ssr")]
pub mod identity;
#[cfg(feature = "ssr")]
pub mod read_side;
#[cfg(feature = "ssr")]
pub mod transfer_store;
#[cfg(feature = "ssr")]
pub mod write_side;

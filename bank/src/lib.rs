//! The bank: its rules (`domain`: accounts and transfers, decided and folded without I/O) and
//! its wire types (`contract`: what crosses HTTP). Pure, so that the server and the browser
//! share it; nothing here knows a database, a web framework or a page.

pub mod contract;
pub mod domain;

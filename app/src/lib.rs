#![recursion_limit = "256"]

//! The bank's web application: its pages (`ui`) and its API (`api`, Leptos server functions).
//! The rules and wire types are `bank`'s; on the server, the API's bodies call `backend`,
//! which the browser's build never sees.

pub mod api;
pub mod ui;

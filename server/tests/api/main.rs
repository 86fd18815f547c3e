//! The server over HTTP against a real Postgres: one fresh database per test (`sqlx::test`
//! creates it from `DATABASE_URL` and drops it when the test passes), the app on a free port.

mod bad_input;
mod cluster_move;
mod commands;
mod concurrency;
mod credentials;
mod cross_site;
mod erasure;
mod fuzz;
mod helpers;
mod history;
mod idempotency;
mod identity;
mod live;
mod multi_instance;
mod openapi;
mod operations;
mod pages;
mod partitions;
mod private_postgres;
mod processes;
mod queries;
mod read_model;
mod redis_cluster;
mod redis_store;
mod replica;
mod restore;
mod roles;
mod schema;
mod snapshots;
mod statements;
mod transfers;
mod unavailable;
mod upcasting;
mod warm_streams;
mod wire;

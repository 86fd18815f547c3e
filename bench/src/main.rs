//! Benchmarks of the bank against a real Postgres, each figure printed beside a baseline
//! measured in the same run.
//!
//!     cargo run --release -p bench -- [--smoke] [--only NAME[,NAME…]]
//!
//! `DATABASE_URL` names the server (any database on it); the benchmarks use a database of
//! their own, `cqrs_bank_bench`, recreated on every run.

mod database;
mod report;
mod scenarios;

use std::process::ExitCode;

/// How big the runs are: `Default` for the published figures, `Smoke` for the test suite,
/// which only checks that every scenario still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    Default,
    Smoke,
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut size = Size::Default;
    let mut only: Option<Vec<String>> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--smoke" => size = Size::Smoke,
            "--only" => only = args.next().map(|names| names.split(',').map(str::to_owned).collect()),
            other => {
                eprintln!("unknown argument {other:?}\nusage: bench [--smoke] [--only NAME[,NAME…]]");
                return ExitCode::FAILURE;
            }
        }
    }
    let pool = match database::fresh().await {
        Ok(pool) => pool,
        Err(error) => {
            eprintln!("cannot prepare the benchmark database: {error}");
            return ExitCode::FAILURE;
        }
    };
    let wanted = |name: &str| only.as_ref().is_none_or(|names| names.iter().any(|n| n == name));
    report::machine();
    let mut failed = false;
    for (name, scenario) in scenarios::all() {
        if !wanted(name) {
            continue;
        }
        if let Err(error) = scenario(pool.clone(), size).await {
            eprintln!("{name} failed: {error}");
            failed = true;
        }
    }
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

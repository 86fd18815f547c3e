//! Benchmarks of the bank against a real Postgres, each figure printed beside a baseline
//! measured in the same run.
//!
//!     cargo run --release -p bench -- [--smoke | --big] [--only NAME[,NAME…]] [--diagnose]
//!
//! `DATABASE_URL` names the server (any database on it); the benchmarks use a database of
//! their own, `cqrs_bank_bench`, recreated before every scenario so that none inherits
//! another's events (the events table refuses DELETE and TRUNCATE). The last scenario's
//! database is left behind for inspection. See `BENCHMARKS.md`.

mod database;
mod diagnose;
mod http;
mod load;
mod pgbench;
mod redis_store;
mod report;
mod scenarios;
mod sealing;
mod server;

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use sqlx::PgPool;

/// How big the runs are: `Default` for the published figures, `Smoke` for the test suite,
/// which only checks that every scenario still runs, `Big` where a larger run is cheap to ask
/// for (B4's backlog); elsewhere it is `Default`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    Smoke,
    Default,
    Big,
}

impl Size {
    /// The value for this size; `Big` falls back to `default`.
    pub fn pick<T>(self, smoke: T, default: T) -> T {
        match self {
            Size::Smoke => smoke,
            Size::Default | Size::Big => default,
        }
    }
}

/// Figures one scenario measured that a later one uses as its baseline (B4 uses B1's append
/// rate, B3 uses B2's maximum load). A scenario run alone measures what it needs itself.
#[derive(Default)]
pub struct Shared {
    figures: Mutex<HashMap<&'static str, f64>>,
}

pub const B1_APPEND_32: &str = "b1.append.32";
pub const B2_MAX_RATE: &str = "b2.max_rate";
pub const B3_QUERY_P99: &str = "b3.query_p99_ms";
pub const PGBENCH_32: &str = "pgbench.32";

impl Shared {
    pub fn set(&self, key: &'static str, value: f64) {
        self.figures.lock().expect("not poisoned").insert(key, value);
    }

    pub fn get(&self, key: &str) -> Option<f64> {
        self.figures.lock().expect("not poisoned").get(key).copied()
    }
}

/// What a scenario gets: a fresh, migrated database and the run's settings.
#[derive(Clone)]
pub struct Context {
    pub pool: PgPool,
    pub size: Size,
    pub shared: Arc<Shared>,
    /// `--diagnose`: sample wait events and CPU during each measured phase.
    pub diagnose: bool,
}

/// The most connections a pool or client count of the smoke run opens: with the server's own
/// leaders and listeners, the run stays under half of a default Postgres's 100.
const SMOKE_CONNECTIONS: u32 = 8;

const USAGE: &str = "usage: bench [--smoke | --big] [--only NAME[,NAME…]] [--diagnose]";

#[tokio::main]
async fn main() -> ExitCode {
    let mut size = Size::Default;
    let mut only: Option<Vec<String>> = None;
    let mut diagnose = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--smoke" => size = Size::Smoke,
            "--big" => size = Size::Big,
            "--diagnose" => diagnose = true,
            "--only" => only = args.next().map(|names| names.split(',').map(str::to_owned).collect()),
            "--help" | "-h" => {
                println!(
                    "{USAGE}\nscenarios: {}",
                    scenarios::all().iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                );
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("unknown argument {other:?}\n{USAGE}");
                return ExitCode::FAILURE;
            }
        }
    }
    if let Some(names) = &only {
        let known: Vec<&str> = scenarios::all().iter().map(|(name, _)| *name).collect();
        if let Some(unknown) = names.iter().find(|name| !known.contains(&name.as_str())) {
            eprintln!("unknown scenario {unknown:?}; known: {}", known.join(", "));
            return ExitCode::FAILURE;
        }
    }
    report::SMOKE.store(size == Size::Smoke, std::sync::atomic::Ordering::Relaxed);
    if size == Size::Smoke {
        database::cap_connections(SMOKE_CONNECTIONS);
    }
    // The server started in-process logs like the real one, but only warnings and errors (not
    // sqlx's slow-statement warnings: slow statements are what a benchmark makes).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,sqlx=error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();

    let wanted = |name: &str| only.as_ref().is_none_or(|names| names.iter().any(|n| n == name));
    let shared = Arc::new(Shared::default());
    let mut failed = false;
    let mut first = true;
    for (name, scenario) in scenarios::all() {
        if !wanted(name) {
            continue;
        }
        let pool = match database::fresh().await {
            Ok(pool) => pool,
            Err(error) => {
                eprintln!("cannot prepare the benchmark database: {error}");
                return ExitCode::FAILURE;
            }
        };
        if first {
            report::machine(&pool, size).await;
            first = false;
        }
        let context = Context { pool: pool.clone(), size, shared: shared.clone(), diagnose };
        if let Err(error) = scenario(context).await {
            eprintln!("{name} failed: {error}");
            failed = true;
        }
        pool.close().await;
    }
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

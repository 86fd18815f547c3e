//! Printing figures: each with its baseline and the ratio between them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::PgPool;

use crate::Size;

/// The machine and the Postgres settings that shape every figure.
pub async fn machine(pool: &PgPool, size: Size) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("# machine: {cores} cores, {}; size: {size:?}", std::env::consts::ARCH);
    let version: String = sqlx::query_scalar("SHOW server_version").fetch_one(pool).await.unwrap_or_default();
    let mut settings = Vec::new();
    for name in ["shared_buffers", "synchronous_commit", "fsync", "commit_delay", "max_connections"] {
        let value: String =
            sqlx::query_scalar(&format!("SHOW {name}")).fetch_one(pool).await.unwrap_or_else(|_| "?".into());
        settings.push(format!("{name}={value}"));
    }
    println!("# postgres {version}: {}", settings.join(" "));
    match crate::http::wrk() {
        Some(path) => println!("# load generator: {} (and the built-in one for paced runs)", path.display()),
        None => println!("# load generator: built-in (wrk not found; `apt-get install wrk` for the published runs)"),
    }
}

pub fn heading(name: &str, what: &str) {
    println!("\n## {name}: {what}");
}

/// `measured` beside `baseline`, both in the same unit, and measured / baseline.
pub fn against(label: &str, measured: f64, baseline_label: &str, baseline: f64, unit: &str) {
    let ratio = if baseline > 0.0 { measured / baseline } else { f64::NAN };
    println!("{label:<44} {measured:>12.1} {unit:<8} | {baseline_label} {baseline:>10.1} {unit} | ratio {ratio:.2}");
}

/// Like [`against`], with three decimals, for small figures (milliseconds).
pub fn against_fine(label: &str, measured: f64, baseline_label: &str, baseline: f64, unit: &str) {
    let ratio = if baseline > 0.0 { measured / baseline } else { f64::NAN };
    println!("{label:<44} {measured:>12.3} {unit:<8} | {baseline_label} {baseline:>10.3} {unit} | ratio {ratio:.2}");
}

pub fn figure(label: &str, value: f64, unit: &str) {
    println!("{label:<44} {value:>12.1} {unit}");
}

/// A line of context under a figure.
pub fn note(text: &str) {
    println!("  {text}");
}

/// Set for `--smoke`, whose figures are too small to judge targets on.
pub static SMOKE: AtomicBool = AtomicBool::new(false);

/// Whether a target of the issue is met, with the figure it was judged on (not in smoke runs).
pub fn target(what: &str, met: bool, actual: &str) {
    if SMOKE.load(Ordering::Relaxed) {
        return;
    }
    println!("  target {what}: {} ({actual})", if met { "met" } else { "MISSED" });
}

/// Latency percentiles, from samples or from a load generator's histogram.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latencies {
    pub p50: Duration,
    pub p99: Duration,
    pub p999: Duration,
    pub max: Duration,
    pub count: usize,
}

impl Latencies {
    /// The percentiles of `samples` (sorted in place); `None` without samples.
    pub fn of(samples: &mut [Duration]) -> Option<Latencies> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let at = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
        Some(Latencies {
            p50: at(0.50),
            p99: at(0.99),
            p999: at(0.999),
            max: samples[samples.len() - 1],
            count: samples.len(),
        })
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub fn latencies(label: &str, latencies: Option<&Latencies>) {
    match latencies {
        None => println!("{label:<44} no samples"),
        Some(l) => println!(
            "{label:<44} p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms  (n={})",
            ms(l.p50),
            ms(l.p99),
            ms(l.p999),
            ms(l.max),
            l.count
        ),
    }
}

/// p50 and p99 of `measured` beside those of `baseline`, with the p99 ratio.
pub fn latencies_against(
    label: &str,
    measured: Option<&Latencies>,
    baseline_label: &str,
    baseline: Option<&Latencies>,
) {
    match (measured, baseline) {
        (Some(m), Some(b)) => println!(
            "{label:<44} p50 {:>7.2} ms  p99 {:>7.2} ms | {baseline_label} p50 {:.2} ms  p99 {:.2} ms | p99 ratio {:.2}",
            ms(m.p50),
            ms(m.p99),
            ms(b.p50),
            ms(b.p99),
            ms(m.p99) / ms(b.p99)
        ),
        _ => println!("{label:<44} no samples"),
    }
}

pub fn per_second(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

pub fn millis(d: Duration) -> f64 {
    ms(d)
}

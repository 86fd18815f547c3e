//! Printing figures: each with its baseline and the ratio between them.

use std::time::Duration;

pub fn machine() {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("# machine: {cores} cores, {}", std::env::consts::ARCH);
}

pub fn heading(name: &str, what: &str) {
    println!("\n## {name}: {what}");
}

/// `measured` beside `baseline`, both in the same unit, and measured / baseline.
pub fn against(label: &str, measured: f64, baseline_label: &str, baseline: f64, unit: &str) {
    let ratio = if baseline > 0.0 { measured / baseline } else { f64::NAN };
    println!("{label:<44} {measured:>12.1} {unit:<8} | {baseline_label} {baseline:>10.1} {unit} | ratio {ratio:.2}");
}

#[allow(dead_code)] // used by the scenarios still to come
pub fn figure(label: &str, value: f64, unit: &str) {
    println!("{label:<44} {value:>12.1} {unit}");
}

/// Latency percentiles of `samples` (sorted in place).
#[allow(dead_code)] // used by the scenarios still to come
pub fn percentiles(label: &str, samples: &mut [Duration]) {
    if samples.is_empty() {
        println!("{label:<44} no samples");
        return;
    }
    samples.sort_unstable();
    let at = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{label:<44} p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms  (n={})",
        ms(at(0.50)),
        ms(at(0.99)),
        ms(at(0.999)),
        ms(samples[samples.len() - 1]),
        samples.len()
    );
}

pub fn per_second(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

//! Command counts and latencies of this instance, for `/metrics`.

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

const COMMANDS: [&str; 7] =
    ["create-account", "deposit", "withdraw", "transfer", "freeze-account", "unfreeze-account", "close-account"];
/// Outcomes by status class: accepted, refused or invalid (4xx), failed (5xx).
const OUTCOMES: [&str; 3] = ["accepted", "rejected", "failed"];
/// Histogram bucket bounds in seconds.
const BUCKETS: [f64; 12] = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0];

#[derive(Default)]
pub struct Metrics {
    commands: [[AtomicU64; OUTCOMES.len()]; COMMANDS.len()],
    /// Cumulative bucket counts per command, plus the +Inf bucket.
    latency_buckets: [[AtomicU64; BUCKETS.len() + 1]; COMMANDS.len()],
    latency_micros_sum: [AtomicU64; COMMANDS.len()],
}

impl Metrics {
    fn record(&self, command: usize, status: u16, seconds: f64) {
        let outcome = match status {
            200..=399 => 0,
            400..=499 => 1,
            _ => 2,
        };
        self.commands[command][outcome].fetch_add(1, Ordering::Relaxed);
        for (bucket, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                self.latency_buckets[command][bucket].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_buckets[command][BUCKETS.len()].fetch_add(1, Ordering::Relaxed);
        self.latency_micros_sum[command].fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        let mut text = String::new();
        let _ = writeln!(
            text,
            "# HELP cqrs_bank_commands_total Commands answered, by command and outcome.\n# TYPE cqrs_bank_commands_total counter"
        );
        for (c, command) in COMMANDS.iter().enumerate() {
            for (o, outcome) in OUTCOMES.iter().enumerate() {
                let count = self.commands[c][o].load(Ordering::Relaxed);
                let _ =
                    writeln!(text, "cqrs_bank_commands_total{{command=\"{command}\",outcome=\"{outcome}\"}} {count}");
            }
        }
        let name = "cqrs_bank_command_duration_seconds";
        let _ = writeln!(text, "# HELP {name} Time to answer a command.\n# TYPE {name} histogram");
        for (c, command) in COMMANDS.iter().enumerate() {
            for (b, bound) in BUCKETS.iter().enumerate() {
                let count = self.latency_buckets[c][b].load(Ordering::Relaxed);
                let _ = writeln!(text, "{name}_bucket{{command=\"{command}\",le=\"{bound}\"}} {count}");
            }
            let total = self.latency_buckets[c][BUCKETS.len()].load(Ordering::Relaxed);
            let sum = self.latency_micros_sum[c].load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(text, "{name}_bucket{{command=\"{command}\",le=\"+Inf\"}} {total}");
            let _ = writeln!(text, "{name}_sum{{command=\"{command}\"}} {sum}");
            let _ = writeln!(text, "{name}_count{{command=\"{command}\"}} {total}");
        }
        text
    }
}

/// Times every `POST /api/commands/<command>`.
pub async fn measure_commands(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let command = request
        .uri()
        .path()
        .strip_prefix("/api/commands/")
        .and_then(|name| COMMANDS.iter().position(|known| *known == name));
    let started = Instant::now();
    let response = next.run(request).await;
    if let Some(command) = command {
        metrics.record(command, response.status().as_u16(), started.elapsed().as_secs_f64());
    }
    response
}

//! This instance's figures for `/metrics`: its HTTP answers and its build, recorded through the
//! `metrics` facade into a Prometheus recorder of its own.
//!
//! The recorder is the instance's, not the process's global one: tests run several instances
//! in one process, and each must show only its own answers.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const REQUESTS: &str = "cqrs_bank_http_requests_total";
const REQUEST_DURATION: &str = "cqrs_bank_http_request_duration_seconds";
const BUILD_INFO: &str = "cqrs_bank_build_info";
/// Histogram bucket bounds in seconds: a command's answer takes a few milliseconds; the request
/// timeout cuts anything off at 10 s.
const BUCKETS: [f64; 12] = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0];
/// How often recorded latencies are folded into their histograms when nobody scrapes: until
/// they are, every sample is kept.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(REQUEST_DURATION.to_owned()), &BUCKETS)
            .expect("the buckets are not empty")
            .build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            describe_counter!(REQUESTS, "HTTP requests answered, by method, matched route and status.");
            describe_histogram!(
                REQUEST_DURATION,
                Unit::Seconds,
                "Time to the start of the answer, by method, matched route and status."
            );
            describe_gauge!(BUILD_INFO, "Always 1: the version and profile this server was built as.");
            let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
            gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "profile" => profile).set(1.0);
        });
        Metrics { recorder, handle }
    }

    /// Counts one answer and its latency, under its matched route (never the raw path: the
    /// label's values must stay few).
    pub fn record_response(&self, method: &Method, route: &str, status: StatusCode, elapsed: Duration) {
        let labels =
            [("method", known_method(method)), ("route", route.to_owned()), ("status", status.as_str().to_owned())];
        metrics::with_local_recorder(&self.recorder, || {
            counter!(REQUESTS, &labels).increment(1);
            histogram!(REQUEST_DURATION, &labels).record(elapsed.as_secs_f64());
        });
    }

    /// The Prometheus text of everything recorded.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// Folds recorded latencies into their histograms every few seconds, until `shutdown`.
    pub fn spawn_upkeep(self: &Arc<Self>, shutdown: CancellationToken) -> JoinHandle<()> {
        let metrics = Arc::clone(self);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(UPKEEP_EVERY);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = every.tick() => metrics.handle.run_upkeep(),
                }
            }
        })
    }
}

/// The method as a label: one of the standard ones, else `other` (a client may send any token).
fn known_method(method: &Method) -> String {
    const KNOWN: [Method; 9] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::OPTIONS,
        Method::CONNECT,
        Method::TRACE,
    ];
    if KNOWN.contains(method) { method.as_str().to_owned() } else { "other".to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_counted_and_timed_by_route_and_status_and_odd_methods_share_one_label() {
        let metrics = Metrics::new();
        metrics.record_response(&Method::POST, "/api/commands/deposit", StatusCode::OK, Duration::from_millis(3));
        metrics.record_response(&Method::POST, "/api/commands/deposit", StatusCode::OK, Duration::from_millis(30));
        let odd = Method::from_bytes(b"BREW").unwrap();
        metrics.record_response(&odd, "(unmatched)", StatusCode::METHOD_NOT_ALLOWED, Duration::from_millis(1));
        let text = metrics.render();
        let deposits = r#"method="POST",route="/api/commands/deposit",status="200""#;
        for expected in [
            format!("cqrs_bank_http_requests_total{{{deposits}}} 2"),
            format!("cqrs_bank_http_request_duration_seconds_bucket{{{deposits},le=\"0.005\"}} 1"),
            format!("cqrs_bank_http_request_duration_seconds_bucket{{{deposits},le=\"0.05\"}} 2"),
            format!("cqrs_bank_http_request_duration_seconds_count{{{deposits}}} 2"),
            r#"cqrs_bank_http_requests_total{method="other",route="(unmatched)",status="405"} 1"#.to_owned(),
            "# TYPE cqrs_bank_http_request_duration_seconds histogram".to_owned(),
            format!("cqrs_bank_build_info{{version=\"{}\",", env!("CARGO_PKG_VERSION")),
        ] {
            assert!(text.contains(&expected), "{expected} in:\n{text}");
        }
        assert!(!text.contains("BREW"), "{text}");
    }

    #[test]
    fn each_instance_shows_only_its_own_answers() {
        let (one, other) = (Metrics::new(), Metrics::new());
        one.record_response(&Method::GET, "/health", StatusCode::OK, Duration::from_millis(1));
        assert!(one.render().contains("route=\"/health\""));
        assert!(!other.render().contains("route=\"/health\""));
    }
}

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Logs to stderr (colours only on a terminal), as text or, with `LOG_FORMAT=json`, as one JSON
/// object a line for machines; `RUST_LOG` overrides the default level. (Read before the
/// settings: a setting that does not parse is logged too.)
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if std::env::var("LOG_FORMAT").is_ok_and(|format| format.eq_ignore_ascii_case("json")) {
        logs.json().with_current_span(false).try_init()
    } else {
        logs.with_target(false).with_ansi(std::io::stderr().is_terminal()).try_init()
    };
}

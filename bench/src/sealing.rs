//! Issue 32's figure: the same command load with personal data sealed (a master key, the
//! writer's data key loaded) and in clear (no key), interleaved in one run, printed as
//! sealed ÷ clear. Each sealed run is checked against the events table: its deposits' actor
//! names must be sealed, and a clear run's must not, so that a silent "clear" cannot pass for
//! "sealed".

use backend::personal::{MasterKey, MasterKeys};
use sqlx::PgPool;

use crate::Size;
use crate::load::Run;
use crate::report;

/// Whether a run seals personal data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Clear,
    Sealed,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Clear => "clear",
            Mode::Sealed => "sealed",
        }
    }
}

/// The runs, in order: clear, sealed, sealed, clear, twice (so that a drift over the run, such
/// as the growing events table or a neighbour's load, weighs on both alike); the smoke run does
/// one of each.
pub fn order(size: Size) -> Vec<Mode> {
    use Mode::{Clear, Sealed};
    size.pick(vec![Clear, Sealed], vec![Clear, Sealed, Sealed, Clear, Clear, Sealed, Sealed, Clear])
}

/// A new master key, installed in this process (what a server given one does at start).
pub fn master_keys() -> MasterKeys {
    let current = MasterKey::parse(&MasterKey::generate()).expect("a generated master key parses");
    let keys = MasterKeys { current, previous: None };
    keys.install();
    keys
}

/// The log's end now: the runs' events are those after it.
pub async fn log_end(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COALESCE(max(global_position), 0) FROM events").fetch_one(pool).await
}

/// The deposits appended after `from`: how many name their actor sealed, and how many in clear.
pub async fn deposits_since(pool: &PgPool, from: i64) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE metadata -> 'actor' -> 'username' ->> 'ciphertext' IS NOT NULL),
                count(*) FILTER (WHERE jsonb_typeof(metadata -> 'actor' -> 'username') = 'string')
         FROM events WHERE global_position > $1 AND event_type = 'MoneyDeposited'",
    )
    .bind(from)
    .fetch_one(pool)
    .await
}

/// One measured run and what it wrote.
pub struct Measured {
    pub mode: Mode,
    pub run: Run,
    /// Deposits written with the actor's name sealed, and in clear.
    pub sealed: i64,
    pub clear: i64,
}

/// Prints the runs, sealed ÷ clear (all sealed runs' operations over their time against the
/// clear runs'), and what they wrote; an error if a sealed run wrote a name in clear or a
/// clear run sealed one, or if either wrote nothing.
pub fn report(label: &str, unit: &str, runs: &[Measured]) -> Result<f64, String> {
    let pooled = |mode: Mode| {
        let (ok, seconds) = runs
            .iter()
            .filter(|m| m.mode == mode)
            .fold((0usize, 0f64), |(ok, s), m| (ok + m.run.ok, s + m.run.elapsed.as_secs_f64()));
        if seconds > 0.0 { ok as f64 / seconds } else { 0.0 }
    };
    let (sealed_rate, clear_rate) = (pooled(Mode::Sealed), pooled(Mode::Clear));
    report::against(&format!("{label}, sealed"), sealed_rate, "clear", clear_rate, unit);
    let each: Vec<String> = runs
        .iter()
        .map(|m| {
            let p99 = m.run.latencies.map_or(f64::NAN, |l| report::millis(l.p99));
            format!("{} {:.0} (p99 {p99:.2} ms)", m.mode.name(), m.run.rate())
        })
        .collect();
    report::note(&format!("runs in order, {unit}: {}", each.join(", ")));
    // Each run beside its neighbour of the other mode: how much the ratio moves within the run.
    let pairs: Vec<String> = runs
        .chunks_exact(2)
        .map(|pair| {
            let (sealed, clear) =
                if pair[0].mode == Mode::Sealed { (&pair[0], &pair[1]) } else { (&pair[1], &pair[0]) };
            format!("{:.2}", sealed.run.rate() / clear.run.rate())
        })
        .collect();
    report::note(&format!("sealed ÷ clear, each pair of neighbouring runs: {}", pairs.join(", ")));
    let total =
        |mode: Mode| runs.iter().filter(|m| m.mode == mode).fold((0, 0), |(s, c), m| (s + m.sealed, c + m.clear));
    let ((sealed_in_sealed, clear_in_sealed), (sealed_in_clear, clear_in_clear)) =
        (total(Mode::Sealed), total(Mode::Clear));
    report::note(&format!(
        "check, events table: sealed runs wrote {sealed_in_sealed} deposits with the actor's name sealed, \
         {clear_in_sealed} in clear; clear runs {sealed_in_clear} sealed, {clear_in_clear} in clear"
    ));
    for m in runs {
        m.run.report_errors(&format!("{} deposits", m.mode.name()));
    }
    if sealed_in_sealed == 0 || clear_in_sealed > 0 || sealed_in_clear > 0 || clear_in_clear == 0 {
        return Err(format!("{label}: the sealed runs did not seal every actor's name, or the clear runs sealed some"));
    }
    let ratio = if clear_rate > 0.0 { sealed_rate / clear_rate } else { f64::NAN };
    report::target(&format!("issue 32: {label}, sealed ≥ 0.9 × clear"), ratio >= 0.9, &format!("{ratio:.2}"));
    Ok(ratio)
}

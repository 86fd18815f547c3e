//! What the tests of every crate share: one way to wait for something to happen.
//!
//! Tests prove behaviour, never speed. A wait says *that* something happens, with a bound ten
//! times and more what it takes on an idle machine, so that a busy machine makes a test slower,
//! never red. How fast it happens is a benchmark's question (`bench/`).

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// The bound of a wait for something that takes a second or two on an idle machine.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Asks `probe` again and again until it answers `Ok`, and returns that answer.
///
/// The probe answers `Err` with what it saw instead, for the message of a failed wait. It is
/// asked at once, then after pauses growing from 10 ms to a quarter of a second.
///
/// # Panics
///
/// When the probe has not answered `Ok` within `within`: the message says `what` was awaited
/// and what the probe saw last.
pub async fn eventually<T, E, F>(what: &str, within: Duration, mut probe: impl FnMut() -> F) -> T
where
    E: Debug,
    F: Future<Output = Result<T, E>>,
{
    let started = Instant::now();
    let mut pause = Duration::from_millis(10);
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(seen) if started.elapsed() >= within => {
                panic!("not {what} within {within:?}; last seen: {seen:?}")
            }
            Err(_) => {}
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

/// `Ok(value)` if it passes `test`, else `Err(value)`: a probe's answer from what it read.
pub fn when<T>(value: T, test: impl FnOnce(&T) -> bool) -> Result<T, T> {
    if test(&value) { Ok(value) } else { Err(value) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_wait_returns_the_first_answer_that_passes() {
        let mut asked = 0;
        let found = eventually("three asks", PATIENCE, || {
            asked += 1;
            let seen = asked;
            async move { when(seen, |&seen| seen == 3) }
        })
        .await;
        assert_eq!(found, 3);
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "not something within 1s; last seen: \"nothing yet\"")]
    async fn a_wait_that_runs_out_says_what_it_saw_last() {
        eventually("something", Duration::from_secs(1), || async { Err::<(), _>("nothing yet") }).await;
    }
}

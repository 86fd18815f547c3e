//! Rate limits: how often one address may try to sign in or sign up, one username may be
//! guessed at, and one user may send commands. Each is a keyed GCRA (a token bucket kept as one instant per key): `burst`
//! requests at once, then one every `interval`. Over the limit: 429 with `Retry-After`, in the
//! JSON error shape. Kept in memory per instance: with N instances a client gets N times the
//! rate at most, which bounds what it costs, and nothing shared slows every request down.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use app::api::limits::client_key;
use app::api::limits::{ClientAddress, Limit, RouteLimiter};
use axum::extract::Request;
use backend::identity::Caller;

/// One limit: `burst` at once, then one per `interval`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub burst: u32,
    pub interval: Duration,
}

impl Rate {
    pub fn per_minute(count: u32) -> Rate {
        Rate { burst: count.max(1), interval: Duration::from_secs(60) / count.max(1) }
    }

    pub fn per_hour(count: u32) -> Rate {
        Rate { burst: count.max(1), interval: Duration::from_secs(3600) / count.max(1) }
    }

    pub fn per_second(count: u32) -> Rate {
        Rate { burst: count.max(1), interval: Duration::from_secs(1) / count.max(1) }
    }
}

/// The limits the server applies (settings, see `configuration`).
#[derive(Clone, Copy, Debug)]
pub struct RateSettings {
    /// Sign-in attempts per address (`SIGN_INS_PER_MINUTE`, default 10).
    pub sign_in: Rate,
    /// Sign-ups per address (`SIGN_UPS_PER_HOUR`, default 20).
    pub sign_up: Rate,
    /// Commands and other writes (tokens, operators' levers) per user, whether from a browser
    /// or with a token (`COMMANDS_PER_SECOND`, default 50).
    pub commands: Rate,
    /// Failed sign-ins per username, from any address (10 in 15 minutes, then one every 90 s):
    /// a guesser spread over many addresses is slowed down too. The user's own addresses (where
    /// they signed in before) are never held back by it.
    pub sign_in_failures: Rate,
}

impl Default for RateSettings {
    fn default() -> RateSettings {
        RateSettings {
            sign_in: Rate::per_minute(10),
            sign_up: Rate::per_hour(20),
            commands: Rate::per_second(50),
            sign_in_failures: Rate { burst: 10, interval: Duration::from_secs(90) },
        }
    }
}

#[derive(Clone)]
pub struct RateLimits {
    sign_in: Arc<Limiter>,
    sign_up: Arc<Limiter>,
    commands: Arc<Limiter>,
    /// Requests whose token names nobody, per address: 60 a minute.
    bad_credentials: Arc<Limiter>,
    /// Failed sign-ins (and other password checks), per username.
    sign_in_failures: Arc<Limiter>,
}

impl RateLimits {
    /// Counts a well-formed credential that named nobody against its address: `Err` once the
    /// address has sent too many (`routes::identity::authenticate` answers 429 then).
    pub fn count_bad_credentials(&self, address: IpAddr) -> Result<(), Duration> {
        self.bad_credentials.check(&client_key(address).to_string())
    }

    pub fn new(settings: RateSettings) -> RateLimits {
        RateLimits {
            sign_in: Arc::new(Limiter::new(settings.sign_in)),
            sign_up: Arc::new(Limiter::new(settings.sign_up)),
            commands: Arc::new(Limiter::new(settings.commands)),
            bad_credentials: Arc::new(Limiter::new(Rate::per_minute(60))),
            sign_in_failures: Arc::new(Limiter::new(settings.sign_in_failures)),
        }
    }
}

impl RouteLimiter for RateLimits {
    /// Sign-ins and sign-ups by the client's address, commands by the user authentication
    /// found (none found: the command is refused as unauthenticated further in).
    fn check(&self, limit: Limit, request: &Request) -> Result<(), Duration> {
        let address = || request.extensions().get::<ClientAddress>().map(|ClientAddress(client)| client_key(*client));
        match limit {
            Limit::SignIn => self.sign_in.check(&address().ok_or_else(no_address)?.to_string()),
            Limit::SignUp => self.sign_up.check(&address().ok_or_else(no_address)?.to_string()),
            Limit::Commands => match request.extensions().get::<Caller>() {
                Some(caller) => self.commands.check(&caller.user_id.to_string()),
                None => Ok(()),
            },
        }
    }

    fn admit_password_attempt(&self, username: &str) -> Result<(), Duration> {
        self.sign_in_failures.check(username)
    }

    fn refund_password_attempt(&self, username: &str) {
        self.sign_in_failures.refund(username);
    }
}

/// A request without its client's address: authentication always sets one, so this is a bug
/// of ours, refused (retry in a second) rather than let through unlimited.
fn no_address() -> Duration {
    tracing::error!("a rate-limited request came without its client's address");
    Duration::from_secs(1)
}

/// A keyed GCRA: per key, the instant at which its bucket is full again.
struct Limiter {
    rate: Rate,
    max_keys: usize,
    state: Mutex<LimiterState>,
}

struct LimiterState {
    full_again: HashMap<String, Instant>,
    last_sweep: Instant,
}

/// Keys whose bucket is full again are forgotten (they would be allowed anyway) at most once a
/// second, so memory follows the clients active within one burst's time. Beyond [`MAX_KEYS`]
/// keys (an attack from many addresses), the half nearest to full again is forgotten at once:
/// memory stays bounded, a newcomer is never refused for what others did, and those forgotten
/// were the least limited anyway.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
const MAX_KEYS: usize = 100_000;

impl Limiter {
    fn new(rate: Rate) -> Limiter {
        Limiter::with_max_keys(rate, MAX_KEYS)
    }

    fn with_max_keys(rate: Rate, max_keys: usize) -> Limiter {
        let state = LimiterState { full_again: HashMap::new(), last_sweep: Instant::now() };
        Limiter { rate, max_keys, state: Mutex::new(state) }
    }

    /// `Ok` and counted, or how long until the key may try again.
    fn check(&self, key: &str) -> Result<(), Duration> {
        self.check_at(key, Instant::now(), true)
    }

    /// Gives back one counted request of `key`'s.
    fn refund(&self, key: &str) {
        let mut state = self.state.lock().expect("rate limits are never poisoned");
        let now = Instant::now();
        if let Some(at) = state.full_again.get_mut(key) {
            *at = at.checked_sub(self.rate.interval).unwrap_or(now);
            if *at <= now {
                state.full_again.remove(key);
            }
        }
    }

    fn check_at(&self, key: &str, now: Instant, count: bool) -> Result<(), Duration> {
        let mut state = self.state.lock().expect("rate limits are never poisoned");
        if now.duration_since(state.last_sweep) >= SWEEP_EVERY {
            state.full_again.retain(|_, at| *at > now);
            state.last_sweep = now;
        }
        let tolerance = self.rate.interval * self.rate.burst.saturating_sub(1);
        let known = state.full_again.get(key).copied().filter(|at| *at > now);
        if known.is_none() && state.full_again.len() >= self.max_keys {
            state.full_again.retain(|_, at| *at > now);
            if state.full_again.len() >= self.max_keys {
                forget_the_least_limited_half(&mut state.full_again);
            }
        }
        let at = known.unwrap_or(now);
        if at > now + tolerance {
            return Err(at - (now + tolerance));
        }
        if count {
            state.full_again.insert(key.to_owned(), at + self.rate.interval);
        }
        Ok(())
    }
}

/// Forgets the half of the keys whose buckets are nearest to full again: O(n), once per n/2
/// new keys.
fn forget_the_least_limited_half(full_again: &mut HashMap<String, Instant>) {
    let mut instants: Vec<Instant> = full_again.values().copied().collect();
    let middle = instants.len() / 2;
    let (_, &mut median, _) = instants.select_nth_unstable(middle);
    full_again.retain(|_, at| *at >= median);
    if full_again.len() > middle {
        // Many at the median itself (keys counted at the same instant): those go too.
        full_again.retain(|_, at| *at > median);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_one_per_interval_each_key_apart() {
        let limiter = Limiter::new(Rate { burst: 3, interval: Duration::from_secs(10) });
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.check_at("a", start, false), Ok(()), "peeking counts nothing");
        }
        for _ in 0..3 {
            assert_eq!(limiter.check_at("a", start, true), Ok(()));
        }
        let wait = limiter.check_at("a", start, true).unwrap_err();
        assert_eq!(wait, Duration::from_secs(10));
        assert_eq!(limiter.check_at("b", start, true), Ok(()), "another key has its own bucket");
        assert!(limiter.check_at("a", start + Duration::from_secs(9), true).is_err());
        assert_eq!(limiter.check_at("a", start + Duration::from_secs(10), true), Ok(()));
        assert!(limiter.check_at("a", start + Duration::from_secs(10), true).is_err());
    }

    #[test]
    fn a_full_table_forgets_the_least_limited_half_and_refuses_no_newcomer() {
        // Given a table of four keys, each counted a second after the one before,
        let limiter = Limiter::with_max_keys(Rate { burst: 1, interval: Duration::from_secs(60) }, 4);
        let start = Instant::now();
        for (second, key) in (0..).zip(["a", "b", "c", "d"]) {
            assert_eq!(limiter.check_at(key, start + Duration::from_secs(second), true), Ok(()));
        }
        // when a fifth arrives, it is served,
        let now = start + Duration::from_secs(5);
        assert_eq!(limiter.check_at("e", now, true), Ok(()), "a newcomer is never refused for others");
        // the most limited keys stay limited, and the least limited were forgotten.
        assert!(limiter.check_at("d", now, false).is_err());
        assert!(limiter.check_at("c", now, false).is_err());
        assert_eq!(limiter.check_at("a", now, false), Ok(()));
        assert!(limiter.state.lock().unwrap().full_again.len() <= 4, "memory stays bounded");
    }

    #[test]
    fn password_attempts_are_counted_when_admitted_and_a_right_one_given_back() {
        let settings = RateSettings { sign_in_failures: Rate::per_hour(3), ..RateSettings::default() };
        let limits = RateLimits::new(settings);
        // Three attempts at once are admitted; a fourth waits, whoever sends it.
        for _ in 0..3 {
            assert_eq!(limits.admit_password_attempt("alice"), Ok(()));
        }
        assert!(limits.admit_password_attempt("alice").is_err(), "counted when admitted, not when failed");
        // One that was right is given back, and another may be tried; other names are untouched.
        limits.refund_password_attempt("alice");
        assert_eq!(limits.admit_password_attempt("alice"), Ok(()));
        assert!(limits.admit_password_attempt("alice").is_err());
        assert_eq!(limits.admit_password_attempt("bob"), Ok(()));
    }

    #[test]
    fn rates_spread_their_count_over_the_period() {
        assert_eq!(Rate::per_minute(10), Rate { burst: 10, interval: Duration::from_secs(6) });
        assert_eq!(Rate::per_second(0).burst, 1);
    }
}

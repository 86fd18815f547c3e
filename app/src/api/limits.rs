//! Which routes are rate-limited, and by what: the rule sits on the route it governs
//! (`#[middleware(Limited(Limit::SignIn))]` beside `#[server]`), so that renaming or adding a
//! route carries its rule with it; the limiter behind it is the server's
//! ([`RouteLimiter`], in the request's extensions).

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, header};
use axum::response::IntoResponse;

use super::error::{ApiError, ErrorCode};

/// A kind of request whose rate is limited.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Limit {
    /// Sign-in attempts, per client address: each costs a password hash.
    SignIn,
    /// Sign-ups, per client address.
    SignUp,
    /// Commands and every other request that writes (tokens, operators' levers), per user (who
    /// is known by then).
    Commands,
}

/// What checks a request against a [`Limit`]: the server's limiter tables.
pub trait RouteLimiter: Send + Sync + 'static {
    /// `Ok` and counted, or how long until this client may try again.
    fn check(&self, limit: Limit, request: &Request<Body>) -> Result<(), Duration>;

    /// Admits (and counts) an attempt at `username`'s password from an address they have not
    /// signed in from, or says how long until one may be made: failed attempts at one name,
    /// from wherever, slow further ones down. Counted when admitted, so that attempts made at
    /// once cannot all pass before the first fails.
    fn admit_password_attempt(&self, username: &str) -> Result<(), Duration>;

    /// Gives back an admitted attempt that turned out right.
    fn refund_password_attempt(&self, username: &str);
}

/// Who counts as one client by address: an IPv4 address, or an IPv6 /64 (what one subscriber
/// usually holds).
pub fn client_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
        v4 => v4,
    }
}

/// The address a request is from, as the server decided (the connection's peer, or the client
/// a trusted reverse proxy names): in every request's extensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddress(pub IpAddr);

/// 429 in the JSON error shape, with `Retry-After` in whole seconds (at least one).
pub fn too_many(wait: Duration) -> Response<Body> {
    let seconds = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
    let mut response =
        ApiError::new(ErrorCode::TooManyRequests, format!("Too many requests of this kind; retry in {seconds} s"))
            .into_response();
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

/// The limiter, as the server puts it in every request's extensions.
#[derive(Clone)]
pub struct RouteLimiters(pub Arc<dyn RouteLimiter>);

/// The layer a limited server function names in its `#[middleware]`.
#[derive(Clone, Copy, Debug)]
pub struct Limited(pub Limit);

impl<S> tower::Layer<S> for Limited {
    type Service = LimitedService<S>;

    fn layer(&self, inner: S) -> LimitedService<S> {
        LimitedService { limit: self.0, inner }
    }
}

/// A server function behind its limit.
pub struct LimitedService<S> {
    limit: Limit,
    inner: S,
}

impl<S> tower::Service<Request<Body>> for LimitedService<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let checked = match request.extensions().get::<RouteLimiters>() {
            Some(limiters) => limiters.0.check(self.limit, &request).map_err(too_many),
            // A router without the limiter is a bug of ours: closed, not open.
            None => {
                tracing::error!(limit = ?self.limit, "a limited route was called without the server's limiter");
                Err(ApiError::new(ErrorCode::ServiceUnavailable, "the server is not ready").into_response())
            }
        };
        match checked {
            Ok(()) => Box::pin(self.inner.call(request)),
            Err(refusal) => Box::pin(async move { Ok(refusal) }),
        }
    }
}

//! [`Limits`]: per-client connection, long-poll and rate limits (docs/protocol.md "Limits and timeouts").
//!
//! A client is its IP address; IPv6 addresses count per `/64`, the block one subscriber line
//! usually gets, so rotating through a prefix does not multiply the allowance. Behind a reverse
//! proxy every client has the proxy's address: there, turn the per-IP limits off (`0`) and limit
//! in the proxy (nginx `limit_conn`, `limit_req`).
//!
//! - **Connections per IP** (`max_connections_per_ip`): counted by the accept loop; one over
//!   gets `429` and is closed.
//! - **Held long polls per IP** (`max_longpolls_per_ip`): one over gets `429` at once.
//! - **Subscriptions per second per IP** (`subscribes_per_sec_per_ip`): a stream, iframe, SSE or
//!   WebSocket request, a WebSocket `subscribe` command, or a poll or long poll *without* a cursor
//!   (a poll with one continues a subscription). Over: `429` + `Retry-After`, or an `error` frame
//!   with code `rate_limited`.
//! - **Publishes per second** (`publishes_per_sec`): per token subject, or per IP for anonymous
//!   callers; back-ends with the publish API key are not limited.
//!
//! Rates are GCRA (the `governor` crate) and allow bursts of [`BURST_SECONDS`] seconds' worth.
//! Every refusal counts in `comet_limit_refusals_total{limit}`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use http::StatusCode;

use crate::auth::Identity;
use crate::error::ApiError;
use crate::metrics::Metrics;

/// A rate limit allows a burst of this many seconds' worth of its rate.
pub const BURST_SECONDS: u32 = 5;

/// Which limit refused something: the `limit` label of `comet_limit_refusals_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    /// `max_connections`: the whole server is full.
    Connections,
    /// `max_connections_per_ip`.
    ConnectionsPerIp,
    /// `max_longpolls_per_ip`.
    LongPollsPerIp,
    /// `subscribes_per_sec_per_ip`.
    Subscribes,
    /// `publishes_per_sec`.
    Publishes,
    /// `max_connections_per_user`.
    ConnectionsPerUser,
    /// `max_tickets_per_user`.
    TicketsPerUser,
}

impl Limit {
    /// Every limit.
    pub const ALL: [Limit; 7] = [
        Limit::Connections,
        Limit::ConnectionsPerIp,
        Limit::LongPollsPerIp,
        Limit::Subscribes,
        Limit::Publishes,
        Limit::ConnectionsPerUser,
        Limit::TicketsPerUser,
    ];

    /// The setting's name, used as the metric label.
    pub fn name(self) -> &'static str {
        match self {
            Limit::Connections => "max_connections",
            Limit::ConnectionsPerIp => "max_connections_per_ip",
            Limit::LongPollsPerIp => "max_longpolls_per_ip",
            Limit::Subscribes => "subscribes_per_sec_per_ip",
            Limit::Publishes => "publishes_per_sec",
            Limit::ConnectionsPerUser => "max_connections_per_user",
            Limit::TicketsPerUser => "max_tickets_per_user",
        }
    }
}

/// Who a publish rate is charged to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Account {
    /// A token holder, by subject (`sub`), wherever it connects from.
    Subject(String),
    /// An anonymous caller, by address (see [`client_key`]).
    Ip(IpAddr),
}

impl Account {
    /// Who `identity`'s publishes are charged to; `None` for a back-end (not limited) or an
    /// anonymous caller of unknown address.
    pub fn of(identity: &Identity, ip: Option<IpAddr>) -> Option<Self> {
        if let Some(subject) = identity.subject() {
            Some(Account::Subject(subject.to_owned()))
        } else if identity.is_anonymous() {
            ip.map(|ip| Account::Ip(client_key(ip)))
        } else {
            None
        }
    }
}

/// The address a client is counted by: IPv4 as is (and IPv4-mapped IPv6 as IPv4), IPv6 by its
/// `/64` prefix.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(v6.to_bits() & !u128::from(u64::MAX))),
        },
    }
}

/// Counts what each client (an address, or a token subject) holds open, up to a maximum each.
#[derive(Debug)]
struct PerClient<K> {
    held: Mutex<HashMap<K, u32>>,
    max: u32,
}

impl<K: std::hash::Hash + Eq + Clone> PerClient<K> {
    fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            held: Mutex::new(HashMap::new()),
            max: u32::try_from(max).unwrap_or(u32::MAX),
        })
    }

    /// One more for `key`, or `false` if it holds `max` already (`max == 0`: no limit, nothing
    /// counted).
    fn try_add(&self, key: &K) -> bool {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let count = held.entry(key.clone()).or_insert(0);
        if *count >= self.max {
            return false;
        }
        *count += 1;
        true
    }

    fn remove(&self, key: &K) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = held.get_mut(key) {
            *count -= 1;
            if *count == 0 {
                held.remove(key);
            }
        }
    }

    fn count(&self, key: &K) -> u32 {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.get(key).copied().unwrap_or(0)
    }
}

impl PerClient<IpAddr> {
    /// One more for `ip` (by [`client_key`]), or `None` if it holds `max` already.
    fn acquire(self: &Arc<Self>, ip: IpAddr) -> Option<Held> {
        if self.max == 0 {
            return Some(Held(None));
        }
        let key = client_key(ip);
        self.try_add(&key)
            .then(|| Held(Some(Release::Ip(Arc::clone(self), key))))
    }
}

/// What a [`Held`] gives back.
#[derive(Debug)]
enum Release {
    Ip(Arc<PerClient<IpAddr>>, IpAddr),
    Subject(Arc<PerClient<Arc<str>>>, Arc<str>),
}

/// One connection or held long poll of a client, given back when dropped.
#[derive(Debug)]
pub struct Held(Option<Release>);

impl Drop for Held {
    fn drop(&mut self) {
        match self.0.take() {
            Some(Release::Ip(per_client, key)) => per_client.remove(&key),
            Some(Release::Subject(per_client, key)) => per_client.remove(&key),
            None => {}
        }
    }
}

fn limiter<K: std::hash::Hash + Eq + Clone>(per_sec: u32) -> Option<DefaultKeyedRateLimiter<K>> {
    let rate = NonZeroU32::new(per_sec)?;
    let burst = rate.saturating_mul(NonZeroU32::new(BURST_SECONDS).unwrap_or(NonZeroU32::MIN));
    Some(RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)))
}

/// At most `max` tickets per `ttl_secs` for one subject, in a burst of `max` (`max == 0`: none).
fn ticket_limiter(max: usize, ttl: Duration) -> Option<DefaultKeyedRateLimiter<Arc<str>>> {
    let burst = NonZeroU32::new(u32::try_from(max).unwrap_or(u32::MAX))?;
    let period = ttl.max(Duration::from_secs(1)) / burst.get();
    let quota = Quota::with_period(period.max(Duration::from_nanos(1)))?.allow_burst(burst);
    Some(RateLimiter::keyed(quota))
}

/// The limits section of the configuration (made by `Config::limits` from the keys named);
/// `0` means no limit. No `Default`: take `Config::default().limits()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    /// `max_connections_per_ip`.
    pub max_connections_per_ip: usize,
    /// `max_longpolls_per_ip`.
    pub max_longpolls_per_ip: usize,
    /// `max_connections_per_user`.
    pub max_connections_per_user: usize,
    /// `max_tickets_per_user`, within `ticket_ttl`.
    pub max_tickets_per_user: usize,
    /// `ticket_ttl_secs`.
    pub ticket_ttl: Duration,
    /// `subscribes_per_sec_per_ip`.
    pub subscribes_per_sec_per_ip: u32,
    /// `publishes_per_sec`.
    pub publishes_per_sec: u32,
}

/// The server's limits and what each client currently holds. One per server, in
/// [`AppState`](crate::AppState).
pub struct Limits {
    connections: Arc<PerClient<IpAddr>>,
    longpolls: Arc<PerClient<IpAddr>>,
    per_user: Arc<PerClient<Arc<str>>>,
    tickets: Option<DefaultKeyedRateLimiter<Arc<str>>>,
    max_tickets: usize,
    ticket_ttl: Duration,
    subscribes: Option<DefaultKeyedRateLimiter<IpAddr>>,
    publishes: Option<DefaultKeyedRateLimiter<Account>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("max_connections_per_ip", &self.connections.max)
            .field("max_longpolls_per_ip", &self.longpolls.max)
            .finish_non_exhaustive()
    }
}

impl Limits {
    /// The limits `config` sets; refusals count in `metrics`.
    pub fn new(config: &LimitsConfig, metrics: Arc<Metrics>) -> Self {
        Self {
            connections: PerClient::new(config.max_connections_per_ip),
            longpolls: PerClient::new(config.max_longpolls_per_ip),
            per_user: PerClient::new(config.max_connections_per_user),
            tickets: ticket_limiter(config.max_tickets_per_user, config.ticket_ttl),
            max_tickets: config.max_tickets_per_user,
            ticket_ttl: config.ticket_ttl,
            subscribes: limiter(config.subscribes_per_sec_per_ip),
            publishes: limiter(config.publishes_per_sec),
            metrics,
        }
    }

    /// A connection from `ip`, counted until the returned value is dropped; `None` (and a
    /// refusal counted) if `ip` holds `max_connections_per_ip` already.
    pub fn connection(&self, ip: IpAddr) -> Option<Held> {
        let held = self.connections.acquire(ip);
        if held.is_none() {
            self.metrics.limit_refused(Limit::ConnectionsPerIp);
        }
        held
    }

    /// Open connections from `ip` (its `/64` for IPv6), as counted for `max_connections_per_ip`.
    pub fn connections_of(&self, ip: IpAddr) -> u32 {
        self.connections.count(&client_key(ip))
    }

    /// A subscriber connection (stream, iframe, SSE, WebSocket, held long poll) of `identity`'s
    /// token subject, counted until the returned value is dropped; `None` to count for
    /// anonymous callers and back-ends (limited by address instead).
    ///
    /// # Errors
    /// `429 too_many_connections` if the subject holds `max_connections_per_user` already.
    pub fn user_connection(&self, identity: &Identity) -> Result<Option<Held>, ApiError> {
        let (Some(subject), true) = (identity.subject(), self.per_user.max > 0) else {
            return Ok(None);
        };
        let key: Arc<str> = subject.into();
        if self.per_user.try_add(&key) {
            return Ok(Some(Held(Some(Release::Subject(Arc::clone(&self.per_user), key)))));
        }
        self.metrics.limit_refused(Limit::ConnectionsPerUser);
        Err(too_many(
            "too_many_connections",
            format!(
                "this token's subject already holds {} connections (max_connections_per_user)",
                self.per_user.max
            ),
            Duration::from_secs(1),
        ))
    }

    /// Subscriber connections of the token subject `subject`, as counted for
    /// `max_connections_per_user`.
    pub fn connections_of_user(&self, subject: &str) -> u32 {
        self.per_user.count(&Arc::from(subject))
    }

    /// Charges one ticket to `identity`'s token subject (back-ends are not limited).
    ///
    /// # Errors
    /// `429 rate_limited` once the subject was issued `max_tickets_per_user` within
    /// `ticket_ttl_secs`, with the wait until another is allowed.
    pub fn ticket(&self, identity: &Identity) -> Result<(), ApiError> {
        let (Some(limiter), Some(subject)) = (&self.tickets, identity.subject()) else {
            return Ok(());
        };
        limiter.check_key(&Arc::from(subject)).map_err(|not_until| {
            self.metrics.limit_refused(Limit::TicketsPerUser);
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            too_many(
                "rate_limited",
                format!(
                    "this token's subject was issued {} tickets within {} s (max_tickets_per_user)",
                    self.max_tickets,
                    self.ticket_ttl.as_secs()
                ),
                wait,
            )
        })
    }

    /// A held long poll of `ip` (none to count if `ip` is unknown).
    ///
    /// # Errors
    /// `429 too_many_longpolls` if `ip` holds `max_longpolls_per_ip` already.
    pub fn longpoll(&self, ip: Option<IpAddr>) -> Result<Option<Held>, ApiError> {
        let Some(ip) = ip else { return Ok(None) };
        match self.longpolls.acquire(ip) {
            Some(held) => Ok(Some(held)),
            None => {
                self.metrics.limit_refused(Limit::LongPollsPerIp);
                Err(too_many(
                    "too_many_longpolls",
                    format!(
                        "this address already holds {} long polls (max_longpolls_per_ip)",
                        self.longpolls.max
                    ),
                    Duration::from_secs(1),
                ))
            }
        }
    }

    /// Charges one new subscription to `ip` (nothing if `ip` is unknown).
    ///
    /// # Errors
    /// `429 rate_limited` with the wait until one is allowed.
    pub fn subscribe(&self, ip: Option<IpAddr>) -> Result<(), ApiError> {
        let (Some(limiter), Some(ip)) = (&self.subscribes, ip) else {
            return Ok(());
        };
        limiter.check_key(&client_key(ip)).map_err(|not_until| {
            self.metrics.limit_refused(Limit::Subscribes);
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            too_many(
                "rate_limited",
                "too many subscriptions from this address (subscribes_per_sec_per_ip)",
                wait,
            )
        })
    }

    /// Charges one publish to `publisher` (`None`: a back-end, not limited).
    ///
    /// # Errors
    /// `429 rate_limited` with the wait until one is allowed.
    pub fn publish(&self, publisher: Option<&Account>) -> Result<(), ApiError> {
        let (Some(limiter), Some(publisher)) = (&self.publishes, publisher) else {
            return Ok(());
        };
        limiter.check_key(publisher).map_err(|not_until| {
            self.metrics.limit_refused(Limit::Publishes);
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            too_many("rate_limited", "too many publishes (publishes_per_sec)", wait)
        })
    }

    /// Forgets rate state of clients that are back to a full allowance (bounds the memory the
    /// rate limits take to the clients active in the last few seconds). Call now and then.
    pub fn sweep(&self) {
        if let Some(l) = &self.subscribes {
            l.retain_recent();
            l.shrink_to_fit();
        }
        if let Some(l) = &self.publishes {
            l.retain_recent();
            l.shrink_to_fit();
        }
        if let Some(l) = &self.tickets {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

/// A `429 Too Many Requests` that says when to retry (whole seconds, at least 1).
fn too_many(code: &'static str, message: impl Into<String>, wait: Duration) -> ApiError {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let secs = secs.max(1);
    ApiError {
        status: StatusCode::TOO_MANY_REQUESTS,
        code,
        message: format!("{}; retry in {secs} s", message.into()),
        retry_after: Some(secs),
    }
}

/// The client address the accept loop attached to `extensions`, if any (requests served by
/// another loop, such as `axum::serve` without connect info, have none: no per-IP limit).
pub fn client_ip(extensions: &http::Extensions) -> Option<IpAddr> {
    extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_counts_per_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(client_key(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn per_client_counts_and_gives_back() {
        let per = PerClient::new(2);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let one = per.acquire(ip).unwrap();
        let two = per.acquire(ip).unwrap();
        assert!(per.acquire(ip).is_none(), "a third is over the limit");
        assert!(per.acquire(other).is_some(), "another address has its own allowance");
        drop(one);
        assert_eq!(per.count(&ip), 1);
        let _three = per.acquire(ip).unwrap();
        drop(two);
        assert_eq!(per.count(&ip), 1);
        assert!(PerClient::new(0).acquire(ip).is_some(), "0 means no limit");
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(too_many("x", "m", Duration::from_millis(1)).retry_after, Some(1));
        assert_eq!(too_many("x", "m", Duration::from_millis(1500)).retry_after, Some(2));
        assert_eq!(too_many("x", "m", Duration::ZERO).retry_after, Some(1));
    }
}

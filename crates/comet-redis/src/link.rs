//! Connections to Redis that notice a dead peer.
//!
//! A TCP connection can die without a FIN or an RST (a NAT or firewall that forgot it, a failover
//! behind a virtual IP): writes go into the kernel's buffer and no answer ever comes. Two things
//! catch it here: the kernel (TCP keepalive probes, and `TCP_USER_TIMEOUT` so unacknowledged data
//! aborts the connection, RFC 5482), and the application (every command has a response timeout,
//! and a connection that timed out is replaced rather than used again: `redis`'s
//! `ConnectionManager` reconnects on a dropped connection, not on a silent one).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::io::tcp::{TcpSettings, socket2};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    Client, Cmd, ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo, Pipeline, ProtocolVersion, PushInfo,
    RedisError, RedisFuture, RedisResult, Value,
};
use tokio::sync::mpsc;

/// How long a command may wait for its answer before the connection is taken as dead.
pub(crate) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// TCP settings of every connection: probe the peer (keepalive after 5 s idle, every 2 s, 3
/// probes) and give up on data unacknowledged for 5 s.
fn tcp_settings() -> TcpSettings {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(5))
        .with_interval(Duration::from_secs(2))
        .with_retries(3);
    TcpSettings::default()
        .set_nodelay(true)
        .set_keepalive(keepalive)
        .set_user_timeout(Duration::from_secs(5))
}

/// Where connections go: one address, or the master that Redis Sentinel names now.
#[derive(Clone)]
pub(crate) enum Source {
    /// `redis://…`: this address, always.
    Fixed(Client),
    /// `redis+sentinel://…`: asked of the sentinels at every (re)connection, so that after a
    /// failover new connections reach the new master.
    Sentinel(Arc<tokio::sync::Mutex<SentinelClient>>),
    /// `redis+cluster://…`: Redis Cluster, from these seed nodes; the client learns the slots,
    /// follows `MOVED`/`ASK` and a failover itself.
    Cluster(Vec<ConnectionInfo>),
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Fixed(client) => write!(f, "Fixed({:?})", client.get_connection_info().addr()),
            Self::Sentinel(_) => f.write_str("Sentinel"),
            Self::Cluster(nodes) => write!(f, "Cluster({} seed nodes)", nodes.len()),
        }
    }
}

fn bad_url(url: &str, why: &str) -> RedisError {
    RedisError::from((
        ErrorKind::InvalidClientConfig,
        "invalid broker URL",
        format!("{:?}: {why}", redacted_url(url)),
    ))
}

/// `url` with the password of its user information (RFC 3986 §3.2.1) replaced by `***`, for
/// logs and error messages: `redis://:secret@host:6379` → `redis://:***@host:6379`. A user name
/// alone is kept.
pub fn redacted_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    // The authority ends at the first `/`, `?` or `#`; the user information at its last `@`.
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
        None => url.to_owned(),
    }
}

impl Source {
    /// `redis://[user:password@]host:port[/db]`, or
    /// `redis+sentinel://[[user]:password@]HOST:PORT[,HOST:PORT…]/MASTER_NAME[/db]` (the password
    /// is the master's; the sentinels are asked without one). `resp3` for the pub/sub connection.
    pub(crate) fn open(url: &str, resp3: bool) -> Result<Self, RedisError> {
        if let Some(rest) = url.strip_prefix("redis+cluster://") {
            return Self::cluster(url, rest);
        }
        let Some(rest) = url.strip_prefix("redis+sentinel://") else {
            let url = match (resp3, url.contains('?')) {
                (false, _) => url.to_owned(),
                (true, true) => format!("{url}&protocol=resp3"),
                (true, false) => format!("{url}?protocol=resp3"),
            };
            let info = url.as_str().into_connection_info()?;
            return Ok(Self::Fixed(Client::open(info.set_tcp_settings(tcp_settings()))?));
        };
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((auth, rest)) => (Some(auth), rest),
            None => (None, rest),
        };
        let (hosts, path) = rest
            .split_once('/')
            .ok_or_else(|| bad_url(url, "expected redis+sentinel://HOST:PORT[,HOST:PORT…]/MASTER_NAME"))?;
        let (name, db) = match path.split_once('/') {
            Some((name, db)) => (
                name,
                Some(
                    db.parse::<i64>()
                        .map_err(|_| bad_url(url, "the database must be a number"))?,
                ),
            ),
            None => (path, None),
        };
        if name.is_empty() {
            return Err(bad_url(url, "the master's name is missing"));
        }
        let mut sentinels = Vec::new();
        for host in hosts.split(',') {
            let (h, p) = host
                .rsplit_once(':')
                .ok_or_else(|| bad_url(url, "each sentinel must be HOST:PORT"))?;
            let port = p
                .parse()
                .map_err(|_| bad_url(url, "a sentinel's port must be a number"))?;
            sentinels.push(ConnectionAddr::Tcp(h.trim_matches(['[', ']']).to_owned(), port));
        }
        let mut builder = SentinelClientBuilder::new(sentinels, name, SentinelServerType::Master)?
            .set_client_to_redis_tcp_settings(tcp_settings())
            .set_client_to_sentinel_tcp_settings(tcp_settings());
        if resp3 {
            builder = builder.set_client_to_redis_protocol(ProtocolVersion::RESP3);
        }
        if let Some(db) = db {
            builder = builder.set_client_to_redis_db(db);
        }
        if let Some((user, password)) = auth.map(|a| a.split_once(':').unwrap_or(("", a))) {
            if !user.is_empty() {
                builder = builder.set_client_to_redis_username(user);
            }
            builder = builder.set_client_to_redis_password(password);
        }
        Ok(Self::Sentinel(Arc::new(tokio::sync::Mutex::new(builder.build()?))))
    }

    /// `redis+cluster://[[user]:password@]HOST:PORT[,HOST:PORT…]` (`rest` is what follows the
    /// scheme): the seed nodes, each with the same credentials.
    fn cluster(url: &str, rest: &str) -> Result<Self, RedisError> {
        let (auth, hosts) = match rest.rsplit_once('@') {
            Some((auth, hosts)) => (format!("{auth}@"), hosts),
            None => (String::new(), rest),
        };
        let hosts = hosts.trim_end_matches('/');
        if hosts.is_empty() || hosts.contains('/') {
            return Err(bad_url(url, "expected redis+cluster://HOST:PORT[,HOST:PORT…]"));
        }
        let mut nodes = Vec::new();
        for host in hosts.split(',') {
            let (h, p) = host
                .rsplit_once(':')
                .ok_or_else(|| bad_url(url, "each node must be HOST:PORT"))?;
            p.parse::<u16>()
                .map_err(|_| bad_url(url, "a node's port must be a number"))?;
            let info = format!("redis://{auth}{h}:{p}").as_str().into_connection_info()?;
            nodes.push(info.set_tcp_settings(tcp_settings()));
        }
        Ok(Self::Cluster(nodes))
    }

    /// Whether this is Redis Cluster.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// A connection to the server (or cluster) to use now; with `pushes`, a RESP3 one whose
    /// pub/sub messages (and disconnections) go there, resubscribed after a reconnection.
    pub(crate) async fn connect(&self, pushes: Option<mpsc::UnboundedSender<PushInfo>>) -> RedisResult<Conn> {
        if let Self::Cluster(nodes) = self {
            let mut builder = ClusterClientBuilder::new(nodes.clone())
                .connection_timeout(Duration::from_secs(1))
                .response_timeout(RESPONSE_TIMEOUT)
                .retries(3)
                .tcp_settings(tcp_settings());
            if let Some(tx) = pushes {
                builder = builder.use_protocol(ProtocolVersion::RESP3).push_sender(tx);
            }
            let client = builder.build()?;
            let con = tokio::time::timeout(RESPONSE_TIMEOUT * 2, client.get_async_connection())
                .await
                .map_err(|_| RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut)))??;
            return Ok(Conn::Cluster(con));
        }
        let client = self.client().await?;
        let config = match pushes {
            Some(tx) => manager_config().set_push_sender(tx).set_automatic_resubscription(),
            None => manager_config(),
        };
        Ok(Conn::Single(ConnectionManager::new_with_config(client, config).await?))
    }

    /// A client for the server to connect to now (not for [`Source::Cluster`]).
    pub(crate) async fn client(&self) -> Result<Client, RedisError> {
        match self {
            Self::Cluster(_) => Err(RedisError::from((
                ErrorKind::InvalidClientConfig,
                "a cluster has no single server",
            ))),
            Self::Fixed(client) => Ok(client.clone()),
            Self::Sentinel(sentinel) => {
                let ask = async { sentinel.lock().await.async_get_client().await };
                tokio::time::timeout(RESPONSE_TIMEOUT, ask)
                    .await
                    .map_err(|_| RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut)))?
            }
        }
    }
}

/// A connection to one Redis (reconnecting, [`ConnectionManager`]) or to a Redis Cluster
/// ([`ClusterConnection`]: one connection per node, commands routed by their keys' slot).
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Single(_) => "Conn::Single",
            Self::Cluster(_) => "Conn::Cluster",
        })
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

impl Conn {
    /// Whether this is a connection to a cluster.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// Subscribes to a classic pub/sub channel (on a cluster, every node's `PUBLISH` reaches it).
    pub(crate) async fn subscribe(&mut self, channel: &str) -> RedisResult<()> {
        match self {
            Self::Single(c) => c.subscribe(channel).await,
            Self::Cluster(c) => c.subscribe(channel).await,
        }
    }

    /// Subscribes to a channel's notifications: `SUBSCRIBE`, or on a cluster `SSUBSCRIBE` at the
    /// shard that owns the channel's slot (sharded pub/sub, Redis 7).
    pub(crate) async fn subscribe_notify(&mut self, channel: &str) -> RedisResult<()> {
        match self {
            Self::Single(c) => c.subscribe(channel).await,
            Self::Cluster(c) => c.ssubscribe(channel).await,
        }
    }

    /// Undoes [`subscribe_notify`](Self::subscribe_notify).
    pub(crate) async fn unsubscribe_notify(&mut self, channel: &str) -> RedisResult<()> {
        match self {
            Self::Single(c) => c.unsubscribe(channel).await,
            Self::Cluster(c) => c.sunsubscribe(channel).await,
        }
    }

    /// The keys matching `pattern`, from every master of a cluster or from the one server, at
    /// most about `max` (`SCAN` in pages of 1,000).
    pub(crate) async fn scan(&mut self, pattern: &str, max: usize) -> RedisResult<Vec<String>> {
        let nodes: Vec<Option<(String, u16)>> = match self {
            Self::Single(_) => vec![None],
            Self::Cluster(c) => {
                let text: String = redis::cmd("CLUSTER").arg("NODES").query_async(c).await?;
                masters(&text).into_iter().map(Some).collect()
            }
        };
        let mut out = Vec::new();
        for node in nodes {
            let mut cursor = 0u64;
            loop {
                let mut cmd = redis::cmd("SCAN");
                cmd.arg(cursor).arg("MATCH").arg(pattern).arg("COUNT").arg(1000);
                let (next, keys): (u64, Vec<String>) = match (&mut *self, &node) {
                    (Self::Cluster(c), Some((host, port))) => {
                        use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
                        let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                            host: host.clone(),
                            port: *port,
                        });
                        redis::from_redis_value(c.route_command(cmd, routing).await?)?
                    }
                    (con, _) => cmd.query_async(con).await?,
                };
                out.extend(keys);
                cursor = next;
                if cursor == 0 || out.len() >= max {
                    break;
                }
            }
        }
        Ok(out)
    }
}

/// The masters' addresses in a `CLUSTER NODES` answer (lines `id host:port@bus flags master …`).
fn masters(nodes: &str) -> Vec<(String, u16)> {
    nodes
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let addr = fields.nth(1)?;
            let flags = fields.next()?;
            if !flags.split(',').any(|f| f == "master") || flags.contains("fail") {
                return None;
            }
            let hostport = addr.split('@').next()?;
            let (host, port) = hostport.rsplit_once(':')?;
            Some((host.to_owned(), port.parse().ok()?))
        })
        .collect()
}

pub(crate) fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500))
}

/// The command connection: a [`ConnectionManager`] replaced by a fresh one (to the master
/// that Sentinel names now) after a timeout, a refused or dropped connection under Sentinel, or
/// a server that turned replica (`READONLY`).
#[derive(Debug, Clone)]
pub(crate) struct DataLink {
    source: Source,
    current: Arc<Mutex<Conn>>,
    replacing: Arc<AtomicBool>,
}

impl DataLink {
    /// Connects once (so that an unreachable Redis at start is a clear error).
    pub(crate) async fn connect(source: Source) -> Result<Self, RedisError> {
        let con = source.connect(None).await?;
        Ok(Self {
            source,
            current: Arc::new(Mutex::new(con)),
            replacing: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The connection to use now.
    pub(crate) fn get(&self) -> Conn {
        self.current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Looks at a command's error: a timeout means the peer may be gone silently, so the
    /// connection is replaced (lazily: the next command connects anew).
    pub(crate) fn note(&self, error: &RedisError) {
        let moved = matches!(self.source, Source::Sentinel(_))
            && (error.is_connection_refusal() || error.is_connection_dropped());
        if error.is_timeout() || moved || error.code() == Some("READONLY") {
            tracing::warn!(error = %error, "redis did not answer as a master in time; reconnecting");
            self.replace();
        }
    }

    /// [`note`](Self::note)s `error` and gives the broker's error for it.
    pub(crate) fn failed(&self, error: &RedisError) -> comet_core::BrokerError {
        self.note(error);
        crate::unavailable(error)
    }

    /// Replaces the connection, in the background (one replacement at a time); commands use
    /// the old one until the new one is there.
    pub(crate) fn replace(&self) {
        if self.replacing.swap(true, Ordering::AcqRel) {
            return;
        }
        let link = self.clone();
        tokio::spawn(async move {
            let fresh = if link.source.is_cluster() {
                link.source.connect(None).await
            } else {
                match link.source.client().await {
                    Ok(client) => ConnectionManager::new_lazy_with_config(client, manager_config()).map(Conn::Single),
                    Err(e) => Err(e),
                }
            };
            match fresh {
                Ok(fresh) => *link.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = fresh,
                Err(e) => tracing::warn!(error = %e, "cannot make a new redis connection"),
            }
            link.replacing.store(false, Ordering::Release);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::redacted_url;

    #[test]
    fn passwords_are_redacted_from_urls() {
        for (url, shown) in [
            ("redis://:s3cret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
            ("redis://user:p%40ss@host:1", "redis://user:***@host:1"),
            ("rediss://u:a@b@host", "rediss://u:***@host"),
            (
                "redis+sentinel://:pw@h1:26379,h2:26379/mymaster",
                "redis+sentinel://:***@h1:26379,h2:26379/mymaster",
            ),
            ("redis://user@host:6379", "redis://user@host:6379"),
            ("redis://host:6379/0?x=a@b", "redis://host:6379/0?x=a@b"),
            ("memory", "memory"),
        ] {
            assert_eq!(redacted_url(url), shown, "{url}");
        }
    }
}

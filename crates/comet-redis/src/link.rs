//! Connections to Redis that notice a dead peer.
//!
//! A TCP connection can die without a FIN or an RST (a NAT or firewall that forgot it, a failover
//! behind a virtual IP): writes go into the kernel's buffer and no answer ever comes. Two things
//! catch it here: the kernel (TCP keepalive probes, and `TCP_USER_TIMEOUT` so unacknowledged data
//! aborts the connection, RFC 5482), and the application (every command has a response timeout,
//! and a connection that timed out is replaced rather than used again: `redis`'s
//! `ConnectionManager` reconnects on a dropped connection, not on a silent one).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::io::tcp::{TcpSettings, socket2};
use redis::{Client, IntoConnectionInfo, RedisError};

/// How long a command may wait for its answer before the connection is taken as dead.
pub(crate) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// A client whose connections probe their peer (keepalive after 5 s idle, every 2 s, 3 probes)
/// and give up on data unacknowledged for 5 s.
pub(crate) fn client(url: &str) -> Result<Client, RedisError> {
    let info = url.into_connection_info()?;
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(5))
        .with_interval(Duration::from_secs(2))
        .with_retries(3);
    let tcp = TcpSettings::default()
        .set_nodelay(true)
        .set_keepalive(keepalive)
        .set_user_timeout(Duration::from_secs(5));
    Client::open(info.set_tcp_settings(tcp))
}

pub(crate) fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500))
}

/// The command connection: a [`ConnectionManager`] replaced by a fresh one after a timeout.
#[derive(Debug, Clone)]
pub(crate) struct DataLink {
    client: Client,
    current: Arc<Mutex<ConnectionManager>>,
}

impl DataLink {
    /// Connects once (so that an unreachable Redis at start is a clear error).
    pub(crate) async fn connect(client: Client) -> Result<Self, RedisError> {
        let manager = ConnectionManager::new_with_config(client.clone(), manager_config()).await?;
        Ok(Self {
            client,
            current: Arc::new(Mutex::new(manager)),
        })
    }

    /// The connection to use now.
    pub(crate) fn get(&self) -> ConnectionManager {
        self.current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Looks at a command's error: a timeout means the peer may be gone silently, so the
    /// connection is replaced (lazily: the next command connects anew).
    pub(crate) fn note(&self, error: &RedisError) {
        if error.is_timeout() {
            tracing::warn!(error = %error, "redis did not answer in time; reconnecting");
            self.replace();
        }
    }

    /// Replaces the connection (lazily: the next command connects anew).
    pub(crate) fn replace(&self) {
        match ConnectionManager::new_lazy_with_config(self.client.clone(), manager_config()) {
            Ok(fresh) => *self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = fresh,
            Err(e) => tracing::warn!(error = %e, "cannot make a new redis connection"),
        }
    }
}

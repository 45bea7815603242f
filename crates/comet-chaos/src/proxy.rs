//! A TCP fault proxy on 127.0.0.1 for injecting network faults without `tc netem`: between a
//! client and a server it passes bytes, delays them, discards them without closing anything
//! (a blackhole: no FIN, no RST, as after a NAT timeout), resets connections (RST), or
//! half-closes them (FIN towards the client, the other way still open).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// One proxied connection's switches.
#[derive(Debug, Default)]
struct Conn {
    /// Discard what the client sends.
    drop_up: AtomicBool,
    /// Discard what the server sends.
    drop_down: AtomicBool,
    /// Reset both sides now.
    reset: Notify,
    /// Close the client's side for writing (FIN), keep reading.
    half_close: Notify,
}

#[derive(Debug, Default)]
struct State {
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    next: AtomicU64,
    /// Delay of every chunk, in ms, both ways.
    delay_ms: AtomicU64,
    /// New connections are blackholed too.
    blackhole_new: AtomicBool,
}

/// A proxy to `target`; stops accepting when dropped (its connections end with their tasks).
#[derive(Debug)]
pub struct FaultProxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    state: Arc<State>,
    accept: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// A proxy on a free port of 127.0.0.1 to `target`, passing everything.
    ///
    /// # Panics
    /// When no port can be bound.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let accept = tokio::spawn({
            let state = Arc::clone(&state);
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    tokio::spawn(serve(Arc::clone(&state), client, target));
                }
            }
        });
        Self { addr, state, accept }
    }

    /// `redis://` URL of the proxy.
    pub fn redis_url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    fn each(&self, f: impl Fn(&Conn)) {
        for conn in self.state.conns.lock().unwrap().values() {
            f(conn);
        }
    }

    /// How many connections are open through the proxy.
    pub fn connections(&self) -> usize {
        self.state.conns.lock().unwrap().len()
    }

    /// The open connections go silent both ways (their bytes are discarded, nothing is closed);
    /// new connections pass, as after a NAT forgot a flow.
    pub fn blackhole_existing(&self) {
        self.each(|c| {
            c.drop_up.store(true, Ordering::SeqCst);
            c.drop_down.store(true, Ordering::SeqCst);
        });
    }

    /// The `n`th connection accepted (from 0) goes silent both ways, if it is still open.
    pub fn blackhole_nth(&self, n: u64) {
        if let Some(c) = self.state.conns.lock().unwrap().get(&n) {
            c.drop_up.store(true, Ordering::SeqCst);
            c.drop_down.store(true, Ordering::SeqCst);
        }
    }

    /// What the server sends on the open connections is discarded (requests still arrive): the
    /// answers are lost. New connections pass.
    pub fn drop_replies_existing(&self) {
        self.each(|c| c.drop_down.store(true, Ordering::SeqCst));
    }

    /// New connections go silent (`true`) or pass (`false`); open ones are left as they are.
    pub fn blackhole_new(&self, on: bool) {
        self.state.blackhole_new.store(on, Ordering::SeqCst);
    }

    /// Every connection, open or new, goes silent (`true`), or new ones pass again (`false`).
    pub fn blackhole_all(&self, on: bool) {
        self.state.blackhole_new.store(on, Ordering::SeqCst);
        if on {
            self.blackhole_existing();
        }
    }

    /// Delays every chunk both ways by `delay` (zero: none).
    pub fn set_delay(&self, delay: Duration) {
        self.state.delay_ms.store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Resets (RST) every open connection.
    pub fn reset_all(&self) {
        self.each(|c| c.reset.notify_one());
    }

    /// Half-closes every open connection towards its client (FIN), the client's side still read.
    pub fn half_close_all(&self) {
        self.each(|c| c.half_close.notify_one());
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.reset_all();
    }
}

async fn serve(state: Arc<State>, client: TcpStream, target: SocketAddr) {
    let Ok(server) = TcpStream::connect(target).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let id = state.next.fetch_add(1, Ordering::SeqCst);
    let conn = Arc::new(Conn::default());
    if state.blackhole_new.load(Ordering::SeqCst) {
        conn.drop_up.store(true, Ordering::SeqCst);
        conn.drop_down.store(true, Ordering::SeqCst);
    }
    state.conns.lock().unwrap().insert(id, Arc::clone(&conn));
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up = pump(&state, &conn, true, &mut client_read, &mut server_write);
    let down = async {
        tokio::select! {
            () = pump(&state, &conn, false, &mut server_read, &mut client_write) => {}
            () = conn.half_close.notified() => {
                let _ = client_write.shutdown().await;
                std::future::pending::<()>().await;
            }
        }
    };
    let reset = tokio::select! {
        () = up => false,
        () = down => false,
        () = conn.reset.notified() => true,
    };
    state.conns.lock().unwrap().remove(&id);
    if reset {
        if let Ok(client) = client_read.reunite(client_write) {
            let _ = client.set_zero_linger(); // close = RST
            drop(client);
        }
        if let Ok(server) = server_read.reunite(server_write) {
            let _ = server.set_zero_linger();
            drop(server);
        }
    }
}

/// Copies `from` to `to` until either side ends, applying the switches to each chunk.
async fn pump(
    state: &State,
    conn: &Conn,
    upstream: bool,
    from: &mut tokio::net::tcp::OwnedReadHalf,
    to: &mut tokio::net::tcp::OwnedWriteHalf,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        let delay = state.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let dropped = if upstream { &conn.drop_up } else { &conn.drop_down };
        if dropped.load(Ordering::SeqCst) {
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

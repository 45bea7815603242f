//! A WebSocket upgrade on plain TCP served without hyper: the connection layer reads the
//! handshake, runs the handler (which answers it, RFC 6455 §4.2.2) and, once it has written the
//! `101`, hands the `TcpStream` itself to the handler's session through a [`DirectUpgrade`] in
//! the request's extensions.

use std::sync::{Arc, Mutex};

use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// The request extension of a WebSocket upgrade the connection layer read itself: there is no
/// hyper `OnUpgrade` to hand to the WebSocket library; the session receives the connection from
/// [`DirectUpgrade::take`]'s receiver once the `101` is written.
#[derive(Clone, Debug)]
pub(crate) struct DirectUpgrade(Arc<Mutex<Option<oneshot::Receiver<TcpStream>>>>);

impl DirectUpgrade {
    /// The extension, and the sender the connection layer hands the connection over with.
    pub(crate) fn new() -> (Self, oneshot::Sender<TcpStream>) {
        let (sender, receiver) = oneshot::channel();
        (Self(Arc::new(Mutex::new(Some(receiver)))), sender)
    }

    /// The receiver of the connection; `None` once taken.
    pub(crate) fn take(&self) -> Option<oneshot::Receiver<TcpStream>> {
        self.0.lock().ok()?.take()
    }
}

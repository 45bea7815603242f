//! The server API's orders (docs/protocol.md "Server API") on the transports' side: a
//! connection's mailbox with the wait for its next order ([`Ordered`]), and the JSON of the
//! notices that tell the client ([`notice_object`]).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::futures::OwnedNotified;

use crate::io::orders::{Order, Registered};
use crate::state::AppState;

/// The JSON object of a server notice for the transports that carry objects:
/// `{"type":name,…fields}`.
pub(crate) fn notice_object(name: &'static str, fields: &serde_json::Value) -> Vec<u8> {
    let mut object = serde_json::json!({"type": name});
    if let (Some(out), Some(fields)) = (object.as_object_mut(), fields.as_object()) {
        out.extend(fields.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    object.to_string().into_bytes()
}

/// A stream's mailbox for the server API's orders (for a caller with a user), and the wait for
/// the next order.
pub(crate) struct Ordered {
    registered: Registered,
    wait: Pin<Box<OwnedNotified>>,
}

impl Ordered {
    /// The mailbox of a connection of `user` (`None`: anonymous callers get no order).
    pub(crate) fn register(state: &AppState, user: Option<&str>) -> Option<Box<Self>> {
        let registered = state.orders.register(user)?;
        let wait = Box::pin(registered.mailbox.wait());
        Some(Box::new(Self { registered, wait }))
    }

    /// Polls for orders: the ones left, once the wait is over (then waiting again).
    pub(crate) fn poll_orders(&mut self, cx: &mut Context<'_>) -> Poll<Vec<Order>> {
        if self.wait.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.wait = Box::pin(self.registered.mailbox.wait());
        Poll::Ready(self.registered.mailbox.take())
    }

    /// The user the orders are for.
    pub(crate) fn user(&self) -> Option<&str> {
        Some(self.registered.user())
    }

    /// Waits for the next orders.
    pub(crate) async fn next(&mut self) -> Vec<Order> {
        std::future::poll_fn(|cx| self.poll_orders(cx)).await
    }
}

//! [`Orders`]: what the server API (docs/protocol.md "Server API") asks of one user's
//! connections on this node: end them ([`Order::Disconnect`]), or drop one channel from their
//! subscriptions ([`Order::Unsubscribe`]). Each long-lived connection of a user (a WebSocket,
//! an SSE, stream or iframe response, a held long poll) holds a [`Mailbox`] while it lives; an
//! order is left in every mailbox of the user and wakes its task.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use comet_core::ChannelName;
use tokio::sync::Notify;

/// An order to a user's connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Order {
    /// End the connection; `reconnect: false` asks the client not to come back.
    Disconnect { reconnect: bool },
    /// Stop delivering this channel.
    Unsubscribe(ChannelName),
}

/// One connection's orders, and the wake-up of its task.
#[derive(Debug, Default)]
pub(crate) struct Mailbox {
    orders: Mutex<Vec<Order>>,
    notify: Arc<Notify>,
}

impl Mailbox {
    /// The orders left since the last call.
    pub(crate) fn take(&self) -> Vec<Order> {
        std::mem::take(&mut *self.orders.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Ready once an order is left (at once if one was left since the last wait).
    pub(crate) fn wait(&self) -> tokio::sync::futures::OwnedNotified {
        Arc::clone(&self.notify).notified_owned()
    }
}

/// The mailboxes of every user's connections on this node.
#[derive(Debug, Default)]
pub(crate) struct Orders {
    users: Mutex<HashMap<Arc<str>, Vec<Weak<Mailbox>>>>,
}

/// A connection's place among its user's: its mailbox, removed when dropped.
#[derive(Debug)]
pub(crate) struct Registered {
    orders: Arc<Orders>,
    user: Arc<str>,
    pub(crate) mailbox: Arc<Mailbox>,
}

impl Registered {
    /// The user whose connection this is.
    pub(crate) fn user(&self) -> &str {
        &self.user
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut users = self.orders.lock();
        if let Some(boxes) = users.get_mut(&self.user) {
            boxes.retain(|b| b.strong_count() > 0 && !std::ptr::eq(b.as_ptr(), Arc::as_ptr(&self.mailbox)));
            if boxes.is_empty() {
                users.remove(&self.user);
            }
        }
    }
}

impl Orders {
    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, Vec<Weak<Mailbox>>>> {
        self.users.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A mailbox for a connection of `user` (`None` for anonymous callers: no order names
    /// them).
    pub(crate) fn register(self: &Arc<Self>, user: Option<&str>) -> Option<Registered> {
        let user: Arc<str> = Arc::from(user?);
        let mailbox = Arc::new(Mailbox::default());
        self.lock()
            .entry(Arc::clone(&user))
            .or_default()
            .push(Arc::downgrade(&mailbox));
        Some(Registered {
            orders: Arc::clone(self),
            user,
            mailbox,
        })
    }

    /// Leaves `order` with every connection of `user` on this node; returns how many.
    pub(crate) fn send(&self, user: &str, order: &Order) -> usize {
        let boxes: Vec<Arc<Mailbox>> = self
            .lock()
            .get(user)
            .map(|boxes| boxes.iter().filter_map(Weak::upgrade).collect())
            .unwrap_or_default();
        for mailbox in &boxes {
            mailbox
                .orders
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(order.clone());
            mailbox.notify.notify_one();
        }
        boxes.len()
    }

    /// Users with a connection here (for tests).
    #[cfg(test)]
    fn users(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn orders_reach_every_connection_of_the_user_and_only_while_it_lives() {
        let orders = Arc::new(Orders::default());
        assert!(orders.register(None).is_none(), "anonymous callers get no mailbox");
        let a = orders.register(Some("alice")).unwrap();
        let b = orders.register(Some("alice")).unwrap();
        let bob = orders.register(Some("bob")).unwrap();
        let waiting = a.mailbox.wait();
        assert_eq!(orders.send("alice", &Order::Disconnect { reconnect: false }), 2);
        waiting.await;
        assert_eq!(a.mailbox.take(), [Order::Disconnect { reconnect: false }]);
        assert!(a.mailbox.take().is_empty());
        // An order left before the wait is not lost.
        b.mailbox.wait().await;
        assert_eq!(b.mailbox.take().len(), 1);
        assert!(bob.mailbox.take().is_empty());
        drop((a, b));
        assert_eq!(orders.send("alice", &Order::Disconnect { reconnect: true }), 0);
        assert_eq!(orders.users(), 1, "only bob is left");
        drop(bob);
        assert_eq!(orders.users(), 0);
    }
}

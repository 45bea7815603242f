//! Byte-level pieces below every layer: they know sockets and bodies, not HTTP routes or
//! transports.
//!
//! - [`gate`]: a future polled only after its own wake (the seldom-ready branches of a
//!   subscriber's task);
//! - [`stall`]: the write-stall timeout and the lingering close;
//! - [`joined`]: small pieces copied into one `send`;
//! - [`body`]: request bodies with a read deadline, response bodies that keep a guard;
//! - [`hold`]: places in the connection limits a response keeps while it lasts;
//! - [`lease`]: what a poller keeps between its requests, until its time to live passes;
//! - [`upgrade`]: a plain TCP connection handed from the connection layer to a WebSocket;
//! - [`orders`]: the server API's orders to one user's connections (disconnect, unsubscribe).

pub(crate) mod body;
pub(crate) mod gate;
pub(crate) mod hold;
pub(crate) mod joined;
pub(crate) mod lease;
pub(crate) mod orders;
pub(crate) mod stall;
pub(crate) mod upgrade;

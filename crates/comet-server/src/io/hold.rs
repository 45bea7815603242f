//! Places in the connection limits that a response keeps for as long as it lasts, in each
//! request's extensions.
//!
//! The connection layer (conn/) puts a [`ConnectionHold`] (the TCP connection's place in
//! `max_connections` and `max_connections_per_ip`) and, over HTTP/2, a [`StreamHold`] (the
//! stream's place per IP) in every request; the dispatcher adds a [`UserHold`] (the place in
//! `max_connections_per_user`). A transport whose session outlives its response (a WebSocket)
//! clones them into its task. Opaque here: each place is given back when its last clone drops.

use std::sync::Arc;

/// Any place held: dropped (given back) with the last clone of the hold that has it.
type Place = Arc<dyn Send + Sync>;

macro_rules! hold {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub(crate) struct $name(#[allow(dead_code)] Place);

        impl $name {
            /// Holds `place` until the last clone is dropped.
            pub(crate) fn new(place: impl Send + Sync + 'static) -> Self {
                Self(Arc::new(place))
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(stringify!($name))
            }
        }
    };
}

hold!(
    /// The TCP connection's places (`max_connections`, `max_connections_per_ip`).
    ConnectionHold
);
hold!(
    /// An HTTP/2 request's places: its stream counted per IP as a connection of its own.
    StreamHold
);
hold!(
    /// A subscriber connection's place in `max_connections_per_user`.
    UserHold
);

//! Comet's load generator (`comet bench`): opens N subscribers over a chosen transport on one or
//! many channels, publishes at a fixed rate or as fast as subscribers keep up, and reports
//! deliveries per second, publish → receive latency percentiles, connection setup, lost and
//! duplicated messages, and the server's memory and CPU from `/proc/PID`.
//!
//! It drives other servers through [`Adapter`]s (URL and body templates plus the framing of what
//! comes back), built in for Comet, Nchan and Pushpin, or loaded from JSON. Client sockets are
//! plain tokio `TcpStream`s with hand-written HTTP/1.1 and incremental parsers ([`parse`]),
//! bound to 127.0.0.x source addresses so one address's ephemeral ports are not the limit.
//!
//! Every message carries a [`Marker`](parse::Marker) `#seq/ns#`: the publisher's sequence number
//! in the channel and the time it was due to be sent, so latency and loss are measured the same
//! way whatever framing the server uses. At a fixed rate the load is open: publishes go out when
//! due, pipelined on the publisher's keep-alive connection, so a slow answer does not slow the
//! publisher down (see [`PublishSpec::pipelining`]).

mod adapter;
mod error;
pub mod net;
pub mod parse;
pub mod procstat;
mod publisher;
mod report;
mod run;
mod subscriber;

pub use adapter::{Adapter, Framing, PublishSpec, Resume, SubscribeSpec, Template, Transport};
pub use error::{BenchError, ParseError};
pub use report::{Percentiles, Report, ServerUse};
pub use run::{BenchConfig, run};

//! Hostile clients against an in-process server over real sockets (raw TCP where the point is
//! the bytes, reqwest and tokio-tungstenite otherwise).
//!
//! Every case shows two things: the clear answer the hostile client gets (a status and a JSON
//! error code, a WebSocket close code and reason, or its connection closed), and that nothing
//! else broke. For the second, the bystanders (comet-test-support's `bystanders`) subscribe to
//! one channel on every transport (SSE, stream, iframe, long poll and poll by cursor, WebSocket)
//! while a publisher keeps publishing there, each publish acknowledged with `201`; at the end
//! every bystander must have received every acknowledged message exactly once and in order.
//!
//! One module per kind of hostile client. Not here: per-IP connection limits and request-rate
//! limits (tested with their implementation, tests/limits.rs).

mod crowds;
mod frames;
mod never_read;
mod publish_bodies;
mod requests;
mod resume;
mod slow_clients;
mod tokens;

/// What every module here uses.
mod prelude {
    pub(crate) use comet_server::Config;
    pub(crate) use comet_server::transport::Kind;
    pub(crate) use comet_test_support::bystanders::{
        Bystanders, MIN_PUBLISHED, Pace, STEADY, bystander_client, cut, join,
    };
    pub(crate) use comet_test_support::memory::{MIB, rss, run_alone};
    pub(crate) use comet_test_support::raw::{
        Answer, client_frame, client_frame_with, connect, connect_small, exchange, head, ping_flood, raw_ws,
        read_until_closed, ws_head,
    };
    pub(crate) use comet_test_support::{
        SOON, TestServer, expect_error, recv_timeout, start_server_with, subscribers, unlimited, wait_subscribers,
    };
    pub(crate) use futures_util::{SinkExt, StreamExt};
    pub(crate) use serde_json::{Value, json};
    pub(crate) use std::net::SocketAddr;
    pub(crate) use std::time::Duration;
    pub(crate) use tokio::io::{AsyncReadExt, AsyncWriteExt};
    pub(crate) use tokio::net::TcpStream;
    pub(crate) use tokio::time::Instant;
    pub(crate) use tokio_tungstenite::tungstenite::Message as WsMessage;

    // The helpers one module defines and others use.
    pub(crate) use crate::frames::*;
    pub(crate) use crate::requests::*;
    pub(crate) use crate::tokens::*;
}

use prelude::*;

/// The bystanders on a quiet server: the baseline every other test compares with.
#[tokio::test]
async fn bystanders_on_every_transport_receive_every_acknowledged_message() {
    let server = start_server_with(unlimited()).await;
    let crowd = Bystanders::start(&server, "calm", STEADY, None).await;
    crowd.wait_acked(MIN_PUBLISHED).await;
    crowd.finish().await;
}

//! Clients that never read: stalled SSE and WebSocket readers, large replays nobody reads, ping floods; the server's memory stays bounded.

use crate::prelude::*;

// ---------------------------------------------------------------------------------------------
// Clients that never read

/// An SSE subscriber and a WebSocket subscriber whose sockets are never read while 22 MiB are
/// published to their channel: the server's memory stays flat, and the bystanders still receive
/// everything.
///
/// The bound: the first 6 MiB warm the server up (history fills: 32 messages of 32 KiB with up to
/// six cached encodings each, about 6 MiB; the never-readers' socket send buffers fill, up to
/// `tcp_wmem`'s 4 MiB each, kernel memory). From then on a server that sends only what a client
/// takes holds nothing more, while one that queued what it cannot send would grow by the next
/// 16 MiB for each never-reading subscriber (their encodings differ). RSS is measured after the
/// warm-up and its growth during the next 16 MiB must stay under 8 MiB, room for allocator slack
/// and the bystanders' buffers in this same process (about 2 MiB was measured).
#[test]
fn subscribers_that_never_read_do_not_grow_the_servers_memory() {
    run_alone("never_read::alone_subscribers_that_never_read");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run in a process of its own by subscribers_that_never_read_do_not_grow_the_servers_memory"]
async fn alone_subscribers_that_never_read() {
    const SIZE: usize = 32 * 1024;
    const WARM_UP: u64 = 6 * MIB / SIZE as u64;
    const MEASURED: u64 = 16 * MIB / SIZE as u64;
    let server = start_server_with(Config {
        history_size: 32,
        ..unlimited()
    })
    .await;
    let mut sse = connect_small(server.addr).await;
    sse.write_all(&head("GET", "/sub/calm", &["Accept: text/event-stream"]))
        .await
        .expect("write");
    let mut ws = connect_small(server.addr).await;
    ws.write_all(&ws_head("/sub/calm")).await.expect("write");
    wait_subscribers(&server, "calm", 2, "the never-readers subscribe").await;

    let pace = Pace {
        size: SIZE,
        every: Duration::ZERO,
        max: WARM_UP + MEASURED,
    };
    let started = Instant::now();
    let crowd = Bystanders::start(&server, "calm", pace, None).await;
    crowd.wait_acked(WARM_UP).await;
    let settled = rss();
    let mut peak = settled;
    let deadline = Instant::now() + Duration::from_secs(60);
    while crowd.acked() < pace.max && !crowd.publisher_done() {
        assert!(Instant::now() < deadline, "publishing took too long");
        peak = peak.max(rss());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    crowd.finish().await;
    peak = peak.max(rss());
    let growth = peak.saturating_sub(settled);
    eprintln!(
        "never-reading subscribers: RSS {} MiB after the warm-up, peak {} MiB (+{} KiB), {:?} in all",
        settled / MIB,
        peak / MIB,
        growth / 1024,
        started.elapsed()
    );
    assert!(
        growth < 8 * MIB,
        "RSS grew by {} MiB while 16 MiB were published to subscribers that never read",
        growth / MIB
    );
    drop((sse, ws));
}

/// Issue 16, point 1: clients that ask for a large replay and never read it. The channel holds
/// 100 messages of 30,000 control characters, each envelope 180,000 bytes (JSON writes a
/// control character as `\u00XX`). Eight streams, six SSE (`envelope=1`) and two iframes ask
/// for it all (`since=earliest`), and three polls too; none reads a byte.
///
/// The bound: RSS is measured once one reader has taken the whole replay (the shared encodings
/// exist then, 18 MB per form) and must grow by less than 8 MiB while the nineteen never-readers
/// are held. Writing the shared encodings by reference, 1.4 MiB was measured; copying each
/// batch into a buffer per subscriber, 23 MiB with batches capped at `max_batch_bytes` (and a
/// batch of 100 messages, 18 MB, each without that cap). Then `write_stall_timeout_secs` (2 s here) closes every one of them, the channel
/// has no subscriber left, and a bystander on every transport received everything meanwhile.
#[test]
fn stalled_readers_of_a_large_replay_hold_no_copies_and_are_closed_at_the_write_stall_timeout() {
    run_alone("never_read::alone_stalled_readers_of_a_large_replay");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run in a process of its own by stalled_readers_of_a_large_replay_hold_no_copies_and_are_closed_at_the_write_stall_timeout"]
async fn alone_stalled_readers_of_a_large_replay() {
    let server = start_server_with(Config {
        history_size: 128,
        write_stall_timeout_secs: 2,
        ..unlimited()
    })
    .await;
    let client = bystander_client();
    let data = "\u{1}".repeat(30_000);
    for _ in 0..100 {
        let res = recv_timeout(SOON, client.post(server.url("/pub/big")).body(data.clone()).send())
            .await
            .expect("publish");
        assert_eq!(res.status(), 201);
    }
    // One reader takes the whole replay on each transport, so the shared encodings exist (an
    // iframe document ends at `iframe_budget`: its first batch).
    let mut iframe = connect(server.addr).await;
    iframe
        .write_all(&head("GET", "/sub/big?transport=iframe&since=earliest", &[]))
        .await
        .expect("write");
    let document = read_until_closed(&mut iframe, SOON).await;
    assert!(
        document.closed && document.bytes.len() > 180_000,
        "the iframe document ends after its budget"
    );
    // SSE with the envelope as data: 180,000 bytes a message too (raw data, 3 MB in all, would
    // fit in the kernel's socket buffers).
    for transport in ["stream", "sse&envelope=1"] {
        let mut stream = connect(server.addr).await;
        let target = format!("/sub/big?transport={transport}&since=earliest");
        stream.write_all(&head("GET", &target, &[])).await.expect("write");
        let mut got = 0usize;
        let mut chunk = vec![0u8; 64 * 1024];
        while got < 100 * 180_000 {
            let n = tokio::time::timeout(SOON, stream.read(&mut chunk))
                .await
                .unwrap_or_else(|_| panic!("{transport}: the replay stopped after {got} bytes"))
                .expect("read");
            assert!(n > 0, "{transport}: the replay ended after {got} bytes");
            got += n;
        }
    }
    let settled = rss();

    let mut stalled = Vec::new();
    let transports = std::iter::repeat_n("stream", 8)
        .chain(std::iter::repeat_n("sse&envelope=1", 6))
        .chain(std::iter::repeat_n("iframe", 2));
    for transport in transports {
        let mut stream = connect_small(server.addr).await;
        let target = format!("/sub/big?transport={transport}&since=earliest");
        stream.write_all(&head("GET", &target, &[])).await.expect("write");
        stalled.push(stream);
    }
    for _ in 0..3 {
        let mut stream = connect_small(server.addr).await;
        stream
            .write_all(&head("GET", "/sub/big?transport=poll&since=earliest", &[]))
            .await
            .expect("write");
        stalled.push(stream);
    }
    // The iframes' documents (their first batch, 1.6 MB) fit in the kernel's socket buffers:
    // they end by themselves. The streams and SSE wait with 16 MB still to send.
    wait_subscribers(&server, "big", 14, "the streaming never-readers subscribe").await;
    let crowd = Bystanders::start(&server, "calm", STEADY, None).await;
    let mut peak = settled;
    let held = Instant::now();
    while held.elapsed() < Duration::from_millis(1500) {
        peak = peak.max(rss());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let growth = peak.saturating_sub(settled);
    eprintln!(
        "stalled replays: RSS {} MiB with the encodings made, peak {} MiB while 19 never-readers were held (+{} KiB)",
        settled / MIB,
        peak / MIB,
        growth / 1024
    );
    assert!(
        growth < 8 * MIB,
        "RSS grew by {} MiB while 19 clients held a replay of 18 MB they never read",
        growth / MIB
    );

    // The write-stall timeout closes them: the streaming ones leave the channel, and every
    // socket reaches its end once read (what the kernel had buffered, then EOF), short of the
    // whole replay.
    crowd.wait_acked(MIN_PUBLISHED).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = subscribers(&server, "big").await;
        if now == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{now} subscribers 20 s after the never-readers stalled"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (i, mut stream) in stalled.into_iter().enumerate() {
        let answer = read_until_closed(&mut stream, Duration::from_secs(10)).await;
        assert!(answer.closed, "never-reader {i} is still open");
        assert!(
            answer.bytes.len() < 100 * 180_000,
            "never-reader {i} was sent the whole replay ({} bytes) although it read nothing",
            answer.bytes.len()
        );
    }
    crowd.finish().await;
}

/// A WebSocket client floods pings and never reads the pongs. The server answers each ping with a
/// pong (RFC 6455 §5.5.2); once it cannot send them it must stop reading more pings rather than
/// queue pongs without end. The flood is then held up by TCP, the server's memory stays bounded,
/// and the bystanders (a WebSocket among them) still receive everything.
///
/// The bound: the flood is 64 MiB; a server that kept reading would queue a pong (and keep the
/// ping's bytes) for each ping, about as much memory as the flood. One that stops reading holds
/// at most its read and write buffers; 16 MiB leaves room for allocator slack and the bystanders.
#[test]
fn a_ping_flood_that_never_reads_the_pongs_is_held_up_by_tcp() {
    run_alone("never_read::alone_ping_flood");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run in a process of its own by a_ping_flood_that_never_reads_the_pongs_is_held_up_by_tcp"]
async fn alone_ping_flood() {
    const FLOOD: usize = 64 * 1024 * 1024;
    let server = start_server_with(unlimited()).await;
    let crowd = Bystanders::start(&server, "calm", STEADY, None).await;
    let mut flooder = raw_ws(server.addr, "/ws").await;
    let before = rss();
    let flood = tokio::spawn(async move {
        let sent = ping_flood(&mut flooder, FLOOD).await;
        (flooder, sent)
    });
    let mut peak = before;
    while !flood.is_finished() {
        peak = peak.max(rss());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (flooder, sent) = join("the ping flood", SOON, flood).await;
    peak = peak.max(rss());
    let growth = peak.saturating_sub(before);
    eprintln!(
        "ping flood: {} MiB sent; RSS {} MiB before, peak {} MiB (+{} MiB)",
        sent / (1024 * 1024),
        before / MIB,
        peak / MIB,
        growth / MIB
    );
    assert!(
        sent < FLOOD,
        "the server kept reading pings whose pongs it could not send ({} MiB)",
        sent / (1024 * 1024)
    );
    assert!(
        growth < 16 * MIB,
        "RSS grew by {} MiB during a ping flood",
        growth / MIB
    );
    crowd.finish().await;
    drop(flooder);
}

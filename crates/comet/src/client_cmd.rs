//! `comet publish` and `comet subscribe`: the command line over `comet-client`.

use std::io::{self, Write};

use anyhow::{Context, Result};
use clap::Args;
use comet_client::{Client, Event, Transport};
use tokio::io::AsyncReadExt;

/// The server the commands talk to unless told otherwise.
const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// Publish one message to a channel and print the server's answer, `{"channel","id"}`.
#[derive(Debug, Args)]
pub(crate) struct PublishArgs {
    /// Channel to publish to, e.g. `chat:lobby`.
    pub(crate) channel: String,
    /// Message text (UTF-8). `-` reads it from standard input, byte for byte up to EOF
    /// (a trailing newline is kept).
    pub(crate) data: String,
    /// Event name; the default is `message`.
    #[arg(long)]
    pub(crate) event: Option<String>,
    /// Base URL of the Comet server.
    #[arg(long, env = "COMET_SERVER", default_value = DEFAULT_SERVER)]
    pub(crate) server: String,
    /// Idempotency key sent with the publish and with every retry of it, so the message is
    /// published once whatever fails in between. Default: a random one.
    #[arg(long)]
    pub(crate) idempotency_key: Option<String>,
    /// How many times to retry after a failure that may pass (no answer, 5xx, 429), with
    /// backoff from 100 ms up to 2 s. `0`: no retry.
    #[arg(long, default_value_t = 5)]
    pub(crate) retries: u32,
}

/// Subscribe to channels and print one JSON envelope per line
/// (`{"channel","id","event","data","time"}`); gap notices print as
/// `{"type":"gap","channel":…}`.
#[derive(Debug, Args)]
pub(crate) struct SubscribeArgs {
    /// Channels, comma-separated (`chat:a,chat:b`) or as several arguments.
    #[arg(required = true, value_delimiter = ',')]
    pub(crate) channels: Vec<String>,
    /// Transport: poll, longpoll, stream, iframe, sse, sse-raw or ws.
    #[arg(long, short, default_value = "sse")]
    pub(crate) transport: Transport,
    /// Resume after this cursor or position, or `earliest` to replay the retained history;
    /// without it, only messages published from now on are printed.
    #[arg(long)]
    pub(crate) since: Option<String>,
    /// Base URL of the Comet server.
    #[arg(long, env = "COMET_SERVER", default_value = DEFAULT_SERVER)]
    pub(crate) server: String,
    /// Exit after this many messages (gap notices do not count).
    #[arg(long, short = 'n')]
    pub(crate) count: Option<u64>,
}

/// Runs `comet publish`.
///
/// # Errors
/// When standard input cannot be read or is not UTF-8, or the publish fails (the server's
/// error code and message are in the error).
pub(crate) async fn publish(args: PublishArgs) -> Result<()> {
    let data = if args.data == "-" {
        let mut bytes = Vec::new();
        tokio::io::stdin()
            .read_to_end(&mut bytes)
            .await
            .context("reading the message from standard input")?;
        String::from_utf8(bytes).context("the message on standard input is not UTF-8")?
    } else {
        args.data
    };
    let client = Client::new(&args.server).context("bad --server")?;
    let key = args
        .idempotency_key
        .clone()
        .unwrap_or_else(|| format!("cli.{:032x}", rand::random::<u128>()));
    let mut delay = std::time::Duration::from_millis(100);
    let mut attempt = 0;
    let published = loop {
        match client
            .publish_once(&args.channel, &data, args.event.as_deref(), Some(&key))
            .await
        {
            Err(e) if e.is_transient() && attempt < args.retries => {
                attempt += 1;
                eprintln!(
                    "comet publish: {e}; retrying with the same idempotency key ({attempt}/{})",
                    args.retries
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(2));
            }
            result => break result,
        }
    }
    .with_context(|| format!("publishing to {:?} on {}", args.channel, args.server))?;
    let line = serde_json::to_string(&published)?;
    match print_line(&line) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// Runs `comet subscribe` until `--count` messages were printed, the subscription ends, or
/// standard output is closed. Errors the server reports without ending the subscription are
/// printed to standard error as warnings.
///
/// # Errors
/// When the subscription cannot be opened or ends with an error (after its reconnection
/// attempts), or standard output fails.
pub(crate) async fn subscribe(args: SubscribeArgs) -> Result<()> {
    let client = Client::new(&args.server).context("bad --server")?;
    let channels: Vec<&str> = args.channels.iter().map(String::as_str).collect();
    let mut sub = client
        .subscribe(&channels, args.transport, args.since.as_deref())
        .await
        .with_context(|| {
            format!(
                "subscribing to {} over {} on {}",
                args.channels.join(","),
                args.transport,
                args.server
            )
        })?;
    if args.count == Some(0) {
        return Ok(());
    }
    let mut printed = 0u64;
    // An error is only known to be the last one when the stream ends right after it.
    let mut last_error = None;
    while let Some(item) = sub.next().await {
        if let Some(e) = last_error.take() {
            eprintln!("comet: warning: {e}");
        }
        let (line, is_message) = match item {
            Ok(Event::Message(envelope)) => (serde_json::to_string(&envelope)?, true),
            // Written by hand to keep the protocol's key order (`json!` sorts keys).
            Ok(Event::Gap { channel }) => (
                format!(r#"{{"type":"gap","channel":{}}}"#, serde_json::to_string(&channel)?),
                false,
            ),
            Ok(_) => continue,
            Err(e) => {
                last_error = Some(e);
                continue;
            }
        };
        match print_line(&line) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        if is_message {
            printed += 1;
            if args.count == Some(printed) {
                return Ok(());
            }
        }
    }
    match last_error {
        Some(e) => Err(anyhow::Error::new(e).context(format!(
            "subscription ended (resume with --since {})",
            sub.position().unwrap_or_else(|| "<none>".into())
        ))),
        None => Ok(()),
    }
}

/// Writes `line` and a newline to standard output and flushes it, so a pipe sees each line as
/// soon as it is known.
fn print_line(line: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(line.as_bytes())?;
    out.write_all(b"\n")?;
    out.flush()
}

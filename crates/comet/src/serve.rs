//! `comet serve`: load the configuration, start the broker and the server, stop on a signal;
//! with TLS, reload the certificate on SIGHUP.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use comet_core::{Broker, MemoryBroker};
use comet_redis::{RedisBroker, RedisConfig};
use comet_server::{AppState, Config, Tls};
use comet_store::{DiskBroker, Fsync, StoreConfig};
use tracing_subscriber::EnvFilter;

/// Options of `comet serve`. Flags win over `COMET_*` variables, which win over the file.
#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8080; env COMET_LISTEN].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// `memory` or a Redis URL such as redis://127.0.0.1:6379 [default: memory; env COMET_BROKER].
    #[arg(long)]
    broker: Option<String>,
    /// Keep the embedded broker's history on disk in this directory [env COMET_DATA_DIR].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// A TOML configuration file (see deploy/comet.toml for every setting).
    #[arg(long, env = "COMET_CONFIG")]
    config: Option<PathBuf>,
    /// Start the built-in demo publishers (demo:stock, demo:progress).
    #[arg(long)]
    demo: bool,
    /// Serve a WebSocket echo at this path (e.g. /echo) for conformance suites such as the
    /// Autobahn fuzzing client [env COMET_WS_ECHO].
    #[arg(long, value_name = "PATH")]
    ws_echo: Option<String>,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
}

pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    if args.log_json {
        tracing_subscriber::fmt().with_env_filter(filter).json().init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).init();
    }

    let mut config = match Config::load(args.config.as_deref(), std::env::vars()) {
        Ok(config) => config,
        Err(e) => {
            // The file's problems, each with its line (as `comet config check` prints them).
            if let Some(file) = &args.config
                && let Ok(text) = std::fs::read_to_string(file)
            {
                let problems = comet_server::config::check_text(&text);
                if !problems.is_empty() {
                    let lines: Vec<String> = problems.iter().map(|p| crate::config_cmd::located(file, p)).collect();
                    anyhow::bail!("invalid configuration:\n{}", lines.join("\n"));
                }
            }
            return Err(e.into());
        }
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    config.demo |= args.demo;
    if let Some(path) = args.ws_echo {
        config.ws_echo = path;
    }
    if let Some(broker) = args.broker {
        config.broker = broker;
    }
    if let Some(dir) = args.data_dir {
        config.data_dir = dir.to_string_lossy().into_owned();
    }
    // The demo's chats show who is online: its namespace tracks presence, with join and leave
    // events, unless the configuration has a table for it.
    if config.demo {
        config
            .namespace
            .entry("demo".to_owned())
            .or_insert_with(|| comet_server::auth::NamespaceRules {
                presence: Some(true),
                join_leave: Some(true),
                ..Default::default()
            });
    }
    config.validate()?;

    match comet_server::raise_fd_limit() {
        Ok((soft, hard)) => tracing::info!(soft, hard, "open-file limit raised"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
    }

    // Loaded (and so checked) before binding: a bad certificate fails the start, not a handshake.
    let tls = Tls::from_config(&config).context("cannot set up TLS")?;
    let listener = comet_server::bind(config.listen).with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let demo = config.demo;
    if !config.data_dir.is_empty() {
        // A file-size limit (ulimit -f) must refuse the write (EFBIG: 507 to the publisher), not
        // end the process: SIGXFSZ (25 on Linux) is handled, which stops its default action.
        let mut xfsz = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(25))
            .context("cannot install the SIGXFSZ handler")?;
        tokio::spawn(async move { while xfsz.recv().await.is_some() {} });
    }
    let (broker, local) = open_broker(&config).await?;
    let state = AppState::new(broker, config);

    // History expires by age even on channels nobody publishes to any more.
    let sweeper = local.clone().map(|local| {
        let shutdown = state.shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    _ = tick.tick() => { local.sweep(); }
                }
            }
        })
    });
    if demo {
        comet_server::demo::start_publishers(&state);
    }
    tokio::spawn(stop_on_signal(state.shutdown.clone()));
    if let Some(tls) = &tls {
        // Installed before the "listening" line, so a SIGHUP after it never hits the default
        // action (terminate).
        let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("cannot install the SIGHUP handler")?;
        tokio::spawn(reload_on_sighup(tls.clone(), hup, state.shutdown.clone()));
    }

    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(%addr, demo, tls = tls.is_some(), "comet listening on {scheme}://{addr}/");
    comet_server::serve_with_tls(listener, state, tls).await?;
    if let Some(sweeper) = sweeper {
        sweeper.await.ok();
    }
    if let Some(Local::Disk(disk)) = &local {
        // Commits what the writer holds and marks the file closed cleanly.
        let disk = Arc::clone(disk);
        tokio::task::spawn_blocking(move || disk.close()).await.ok();
    }
    tracing::info!("comet stopped");
    Ok(())
}

/// The broker of this node alone, which the server sweeps every few seconds.
#[derive(Clone)]
enum Local {
    Memory(Arc<MemoryBroker>),
    Disk(Arc<DiskBroker>),
}

impl Local {
    fn sweep(&self) {
        match self {
            Self::Memory(m) => m.sweep(),
            Self::Disk(d) => d.sweep(),
        };
    }
}

/// The broker `config` names: the embedded one (with its history on disk when `data_dir` is
/// set), or Redis.
async fn open_broker(config: &Config) -> anyhow::Result<(Arc<dyn Broker>, Option<Local>)> {
    if config.broker == "memory" && !config.data_dir.is_empty() {
        let fsync = Fsync::parse(&config.fsync).map_err(anyhow::Error::msg)?;
        let store = StoreConfig {
            fsync,
            fsync_window: Duration::from_millis(config.fsync_window_ms),
            ..StoreConfig::new(&config.data_dir)
        };
        let hub = config.hub_config();
        let disk = tokio::task::spawn_blocking(move || DiskBroker::open(store, hub)).await??;
        let disk = Arc::new(disk);
        return Ok((Arc::clone(&disk) as Arc<dyn Broker>, Some(Local::Disk(disk))));
    }
    if config.broker == "memory" {
        let memory = Arc::new(MemoryBroker::new(config.hub_config()));
        return Ok((Arc::clone(&memory) as Arc<dyn Broker>, Some(Local::Memory(memory))));
    }
    let redis = RedisBroker::connect(RedisConfig {
        presence_ttl: Duration::from_secs(config.presence_ttl_secs),
        ..RedisConfig::new(config.broker.clone(), config.hub_config())
    })
    .await
    .with_context(|| format!("cannot use the broker {}", comet_redis::redacted_url(&config.broker)))?;
    tracing::info!(url = %comet_redis::redacted_url(&config.broker), "using the Redis broker");
    Ok((Arc::new(redis), None))
}

/// Re-reads the TLS certificate and key on each SIGHUP (`hup`) until `shutdown`: new connections
/// get the new certificate; if the files do not load, the old one stays and an error is logged.
async fn reload_on_sighup(
    tls: Tls,
    mut hup: tokio::signal::unix::Signal,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            received = hup.recv() => if received.is_none() { return },
        }
        match tls.reload() {
            Ok(()) => tracing::info!(
                cert = %tls.cert_file().display(),
                key = %tls.key_file().display(),
                "SIGHUP: TLS certificate reloaded; new connections get it"
            ),
            Err(e) => {
                tracing::error!(error = %e, "SIGHUP: TLS certificate not reloaded; still serving the previous one")
            }
        }
    }
}

/// Cancels `shutdown` on SIGINT or SIGTERM (then the drain of `shutdown_grace_secs`).
async fn stop_on_signal(shutdown: tokio_util::sync::CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
    shutdown.cancel();
}

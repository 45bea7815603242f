//! `comet`: the server and its command-line tools.
//!
//! - `comet serve [--listen ADDR] [--config FILE] [--demo]`: run the server.
//! - `comet publish CHANNEL DATA`: publish one message.
//! - `comet subscribe CHANNELS [--transport T] [--since CURSOR]`: print messages as JSON lines.
//! - `comet bench [--server S] [--transport T] [-n N] [--rate R|max]`: the load generator.
//! - `comet config default` / `comet config check FILE`: the commented default configuration;
//!   a file's problems, each with its line.

mod bench_cmd;
mod client_cmd;
mod config_cmd;
mod serve;

use clap::{Parser, Subcommand};

/// Comet: real-time server push over every classic transport.
#[derive(Debug, Parser)]
#[command(name = "comet", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server.
    Serve(serve::ServeArgs),
    /// Publish one message to a channel.
    Publish(client_cmd::PublishArgs),
    /// Subscribe to channels and print each message as a JSON line.
    Subscribe(client_cmd::SubscribeArgs),
    /// Load-test a server (Comet, Nchan, Pushpin) and report throughput, latency and resources.
    Bench(bench_cmd::BenchArgs),
    /// The configuration: print the commented defaults, or check a file.
    #[command(subcommand)]
    Config(config_cmd::ConfigCommand),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::Config(command) = cli.command {
        return config_cmd::run(command);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Publish(args) => client_cmd::publish(args).await,
            Command::Subscribe(args) => client_cmd::subscribe(args).await,
            Command::Bench(args) => bench_cmd::run(args).await,
            Command::Config(_) => unreachable!("handled before the runtime starts"),
        }
    })
}

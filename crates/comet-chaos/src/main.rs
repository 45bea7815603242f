//! `comet-chaos`: the long form of the chaos suite (docs/chaos.md).
//!
//! ```text
//! cargo build --release -p comet -p comet-chaos
//! target/release/comet-chaos --seconds 600 --seed 7
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use comet_chaos::{Options, Scenario};

/// Runs Comet under faults on a seeded schedule and checks the delivery promise.
#[derive(Debug, Parser)]
struct Args {
    /// Length of the whole run, shared by the scenarios.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Seed of the fault schedule and of every client's choices [default: random, printed].
    #[arg(long)]
    seed: Option<u64>,
    /// The `comet` binary [default: `comet` beside this program].
    #[arg(long)]
    comet: Option<PathBuf>,
    /// Scenarios to run, in order.
    #[arg(long, value_delimiter = ',', default_value = "redis,sentinel,memory,durable")]
    scenarios: Vec<Scenario>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let seed = args.seed.unwrap_or_else(rand::random);
    let comet = args.comet.unwrap_or_else(|| {
        let me = std::env::current_exe().expect("the path of this program");
        me.with_file_name("comet")
    });
    if !comet.exists() {
        eprintln!(
            "comet-chaos: no comet binary at {}; build it (cargo build --release -p comet) or pass --comet",
            comet.display()
        );
        return ExitCode::from(2);
    }
    eprintln!("comet-chaos: {} s, seed {seed}, {}", args.seconds, comet.display());
    let opts = Options {
        seconds: args.seconds,
        seed,
        comet,
        scenarios: args.scenarios,
    };
    match comet_chaos::run(&opts).await {
        Ok(outcomes) => {
            println!("seed {seed}, {} s\n", args.seconds);
            print!("{}", comet_chaos::table(&outcomes));
            for o in &outcomes {
                for r in &o.refused {
                    println!("refused ({}): {r}", o.scenario.name());
                }
                for e in &o.examples {
                    println!("{}: {e}", o.scenario.name());
                }
            }
            if outcomes.iter().all(comet_chaos::Outcome::holds) {
                ExitCode::SUCCESS
            } else {
                println!("\nthe delivery promise did not hold");
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("comet-chaos: {e:#}");
            ExitCode::from(2)
        }
    }
}

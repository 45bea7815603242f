//! `comet config`: the commented default configuration, and checking a configuration file.

use std::path::PathBuf;

use anyhow::bail;
use clap::Subcommand;

/// The commented default configuration: deploy/comet.toml, embedded. Its values are the
/// settings' defaults and it shows every setting (comet-server's config tests prove both), so
/// it cannot drift from the types.
pub(crate) const DEFAULT: &str = include_str!("../../../deploy/comet.toml");

#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCommand {
    /// Print the commented default configuration (every setting, its unit and its default).
    Default,
    /// Check a configuration file: each problem with its line, and for an unknown key the
    /// nearest valid one. Exits 1 if there is any.
    Check {
        /// The TOML file.
        file: PathBuf,
    },
}

pub(crate) fn run(command: ConfigCommand) -> anyhow::Result<()> {
    match command {
        ConfigCommand::Default => {
            print!("{DEFAULT}");
            Ok(())
        }
        ConfigCommand::Check { file } => {
            let text =
                std::fs::read_to_string(&file).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
            let problems = comet_server::config::check_text(&text);
            if problems.is_empty() {
                println!("{}: ok", file.display());
                return Ok(());
            }
            for problem in &problems {
                eprintln!("{}", located(&file, problem));
            }
            bail!("{} has {} problem(s)", file.display(), problems.len())
        }
    }
}

/// `FILE:LINE: message`, as compilers print them.
pub(crate) fn located(file: &std::path::Path, problem: &comet_server::config::Problem) -> String {
    match problem.line {
        Some(line) => format!("{}:{line}: {}", file.display(), problem.message),
        None => format!("{}: {}", file.display(), problem.message),
    }
}

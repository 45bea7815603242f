//! Durable history for Comet's embedded broker (`data_dir`, docs/protocol.md "Durability"):
//! [`DiskBroker`] is the [`MemoryBroker`](comet_core::MemoryBroker) with every channel's
//! history, epoch and offset, the empty epochs and the idempotency keys also kept in one redb
//! file, `<data_dir>/comet.redb`.
//!
//! - **Publishing.** One writer thread owns the file. A publish is handed to it; it assigns the
//!   cursor ([`Hub::reserve`](comet_core::Hub::reserve)), writes the message, commits, and only
//!   then puts it in history for subscribers ([`Hub::append`](comet_core::Hub::append)) and
//!   acknowledges it. So no subscriber ever sees a message a crash could take back, and no
//!   cursor is handed out twice.
//! - **fsync.** [`Fsync::Batch`] (the default) commits what arrived together with one fsync
//!   (group commit, gathered for at most `fsync_window_ms`); [`Fsync::Always`] one commit and
//!   fsync per publish; under both a publish is acknowledged once it is on disk. [`Fsync::Never`] acknowledges before the data
//!   is on disk and makes it durable once a second: a crash, even of the process alone, may lose
//!   that last second, so after one every channel starts a new epoch (subscribers get an honest
//!   gap notice, never a cursor reused).
//! - **Restart.** Opening the file puts every channel back as it was: same epochs, offsets
//!   going on, history within `history_size` and `history_ttl_secs`.
//! - **Bounds.** History on disk is trimmed as in memory (by size at each publish, by age every
//!   few seconds), and redb reuses the freed pages. A full disk refuses publishes
//!   ([`BrokerError::Full`](comet_core::BrokerError::Full), `507`) and keeps serving
//!   subscribers.

mod broker;
mod format;
mod load;
mod writer;

use std::path::PathBuf;
use std::time::Duration;

pub use broker::DiskBroker;

/// When the writer makes a commit durable (`fsync`, docs/protocol.md "Durability").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fsync {
    /// Group commit: the publishes that arrive together are committed together, with one fsync;
    /// each is acknowledged once its commit is on disk. The default.
    #[default]
    Batch,
    /// One commit and one fsync per publish, acknowledged once on disk.
    Always,
    /// Acknowledged before reaching disk; made durable once a second. A crash may lose the last
    /// second of publishes; every channel then starts a new epoch at the restart.
    Never,
}

impl Fsync {
    /// The setting's name: `batch`, `always` or `never`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Batch => "batch",
            Self::Always => "always",
            Self::Never => "never",
        }
    }

    /// Parses `batch`, `always` or `never`.
    ///
    /// # Errors
    /// The unknown name, in a sentence listing the valid ones.
    pub fn parse(name: &str) -> Result<Self, String> {
        match name {
            "batch" => Ok(Self::Batch),
            "always" => Ok(Self::Always),
            "never" => Ok(Self::Never),
            other => Err(format!(
                "fsync must be \"batch\", \"always\" or \"never\", not {other:?}"
            )),
        }
    }
}

/// Where and how [`DiskBroker`] keeps history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// The directory (`data_dir`); created if missing. The file is `comet.redb` in it.
    pub dir: PathBuf,
    /// When commits are made durable.
    pub fsync: Fsync,
    /// Under [`Fsync::Batch`], the most time a commit waits to gather more publishes
    /// (`fsync_window_ms`): as long as the last commit took, at most this. Defaults to 5 ms.
    pub fsync_window: Duration,
}

impl StoreConfig {
    /// `dir` with the defaults: [`Fsync::Batch`], a 5 ms window.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            fsync: Fsync::Batch,
            fsync_window: Duration::from_millis(5),
        }
    }

    /// The store's file.
    pub fn file(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }
}

/// The name of the store's file in `data_dir`.
pub const FILE_NAME: &str = "comet.redb";

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The directory cannot be created or used.
    #[error("cannot use the data directory {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The file cannot be opened: corrupt, another process has it open, or an I/O error.
    #[error(
        "cannot open {path}: {reason}. If the file is damaged, move it aside to start with empty \
         history (every client then gets a gap notice)"
    )]
    Open {
        /// The file.
        path: PathBuf,
        /// What redb said.
        reason: String,
    },
}

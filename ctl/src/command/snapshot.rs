//! `snapshot save`: a member's snapshot streamed into a file, as etcdctl 3.5 saves one.

use std::io::Write;
use std::path::PathBuf;

use clap::Subcommand;
use rkv_proto::etcdserverpb::SnapshotRequest;
use sha2::{Digest, Sha256};

use crate::client::Client;
use crate::error::{status_message, CtlError, EXIT_INTERRUPTED};
use crate::print::{Format, Out};

#[derive(Subcommand, Debug)]
pub enum SnapshotCommand {
    /// Stores an etcd node backend snapshot to a given file.
    Save {
        /// The file to write.
        filename: Option<PathBuf>,
    },
    /// Restores a member's data directory from a snapshot, for a new cluster.
    Restore(RestoreArgs),
    /// Gets backend snapshot status of a given file.
    Status {
        /// The snapshot file.
        filename: Option<PathBuf>,
    },
}

#[derive(clap::Args, Debug, Clone)]
pub struct RestoreArgs {
    /// The snapshot file.
    pub filename: Option<PathBuf>,
    /// Path to the data directory (default: <name>.rkv).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Human-readable name for this member.
    #[arg(long, default_value = "default")]
    pub name: String,
    /// Initial cluster configuration for restore bootstrap.
    #[arg(long, default_value = "default=http://localhost:2380")]
    pub initial_cluster: String,
    /// Initial cluster token for the etcd cluster during restore bootstrap.
    #[arg(long, default_value = "etcd-cluster")]
    pub initial_cluster_token: String,
    /// List of this member's peer URLs to advertise to the rest of the cluster.
    #[arg(long, default_value = "http://localhost:2380")]
    pub initial_advertise_peer_urls: String,
    /// Ignore snapshot integrity hash value (required if copied from data directory).
    #[arg(long)]
    pub skip_hash_check: bool,
    /// How much to increase the latest revision after restore (etcdutl 3.6).
    #[arg(long, default_value_t = 0)]
    pub bump_revision: u64,
    /// Mark the latest revision after restore as the point of scheduled compaction (requires
    /// --bump-revision > 0, etcdutl 3.6).
    #[arg(long)]
    pub mark_compacted: bool,
    /// Accepted for etcdutl's command lines; rkv keeps its raft log inside its store, so there is
    /// no separate WAL directory.
    #[arg(long)]
    pub wal_dir: Option<PathBuf>,
    /// Accepted for etcdutl 3.6's command lines; rkv's store does not map a file (bbolt's
    /// initial mmap size has no counterpart).
    #[arg(long)]
    pub initial_memory_map_size: Option<u64>,
}

/// What reading and restoring snapshot files needs from the storage layer, which this crate
/// does not depend on: the `rctl` binary supplies it.
/// Builds the data dir, telling the progress callback (bytes done, total) as it goes.
pub type RestoreFn = fn(&RestoreArgs, &mut dyn FnMut(u64, u64)) -> Result<String, String>;

#[derive(Clone, Copy)]
pub struct SnapshotTools {
    /// Builds a data dir; returns the line to print.
    pub restore: RestoreFn,
    pub status: fn(&std::path::Path) -> Result<FileStatus, String>,
}

/// etcdutl 3.6's refusal of --bump-revision without --mark-compacted or the other way round.
const MARK_COMPACTED_ALONE: &str = "--mark-compacted required if --revision-bump > 0";

/// What `snapshot status` prints of a file.
#[derive(Clone, Copy, Debug)]
pub struct FileStatus {
    pub hash: u32,
    pub revision: i64,
    pub total_keys: u64,
    pub total_size: u64,
}

static TOOLS: std::sync::OnceLock<SnapshotTools> = std::sync::OnceLock::new();

pub fn set_tools(tools: SnapshotTools) {
    let _ = TOOLS.set(tools);
}

fn tools() -> Result<SnapshotTools, CtlError> {
    TOOLS.get().copied().ok_or_else(|| fail("snapshot files are not readable by this build of rctl"))
}

/// etcdctl 3.5 exits with its "interrupted" code when a snapshot save fails.
fn fail(e: impl std::fmt::Display) -> CtlError {
    CtlError::new(EXIT_INTERRUPTED, e.to_string())
}

/// Bytes received and the rate, redrawn on stderr at most every 200 ms, only when stderr is a
/// terminal (scripts and cron see nothing).
struct Progress {
    on: bool,
    shown: bool,
    bytes: u64,
    start: std::time::Instant,
    drawn: std::time::Instant,
}

impl Progress {
    fn new() -> Self {
        use std::io::IsTerminal;
        let now = std::time::Instant::now();
        Self { on: std::io::stderr().is_terminal(), shown: false, bytes: 0, start: now, drawn: now }
    }

    fn advance(&mut self, n: u64, remaining: u64) {
        self.show(self.bytes + n, self.bytes + n + remaining);
    }

    fn show(&mut self, done: u64, total: u64) {
        self.bytes = done;
        let remaining = total.saturating_sub(done);
        if !self.on || self.drawn.elapsed() < std::time::Duration::from_millis(200) {
            return;
        }
        self.drawn = std::time::Instant::now();
        let secs = self.start.elapsed().as_secs_f64().max(0.001);
        let rate = crate::print::human_bytes((self.bytes as f64 / secs) as u64);
        let total = crate::print::human_bytes(self.bytes + remaining);
        eprint!("\r{} / {total} ({rate}/s)   ", crate::print::human_bytes(self.bytes));
        self.shown = true;
    }

    fn finish(&self) {
        if self.shown {
            eprintln!();
        }
    }
}

/// etcd ends the stream with the SHA-256 of everything before it; check it before the file
/// takes its name, so that a partial or damaged download never looks like a snapshot.
pub fn check_trailer(bytes_hash: Sha256, trailer: &[u8]) -> Result<(), CtlError> {
    if bytes_hash.finalize().as_slice() != trailer {
        return Err(fail("snapshot file integrity check failed (sha256 mismatch)"));
    }
    Ok(())
}

/// The snapshot commands that need no server.
pub fn run_offline(command: SnapshotCommand, format: Format, out: &mut Out) -> Result<(), CtlError> {
    match command {
        SnapshotCommand::Save { .. } => Ok(()),
        SnapshotCommand::Restore(args) => {
            if args.filename.is_none() {
                return Err(CtlError::bad_args("snapshot restore requires exactly one argument"));
            }
            // etcdutl 3.6 takes the two only together.
            if (args.bump_revision > 0) != args.mark_compacted {
                return Err(CtlError::bad_args(MARK_COMPACTED_ALONE));
            }
            if let Some(dir) = &args.wal_dir {
                eprintln!("--wal-dir {} ignored: rkv keeps its raft log in its data dir", dir.display());
            }
            let mut progress = Progress::new();
            let restored = (tools()?.restore)(&args, &mut |done, total| progress.show(done, total));
            progress.finish();
            let message = restored.map_err(|e| CtlError::new(crate::error::EXIT_ERROR, e))?;
            out.line(&message);
            Ok(())
        }
        SnapshotCommand::Status { filename } => {
            let path = filename
                .ok_or_else(|| CtlError::bad_args("snapshot status requires exactly one argument"))?;
            let FileStatus { hash, revision, total_keys: keys, total_size: size } =
                (tools()?.status)(&path).map_err(|e| CtlError::new(crate::error::EXIT_ERROR, e))?;
            let human = crate::print::human_bytes(size);
            match format {
                Format::Json => out.line(&format!(
                    "{{\"hash\":{hash},\"revision\":{revision},\"totalKey\":{keys},\"totalSize\":{size}}}"
                )),
                Format::Table => crate::print::table(
                    out,
                    &["HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE"],
                    &[vec![format!("{hash:x}"), revision.to_string(), keys.to_string(), human]],
                ),
                _ => out.line(&format!("{hash:x}, {revision}, {keys}, {human}")),
            }
            Ok(())
        }
    }
}

pub async fn run(
    command: SnapshotCommand,
    endpoints: &[String],
    c: &Client,
    out: &mut Out,
) -> Result<(), CtlError> {
    match command {
        SnapshotCommand::Save { filename } => {
            let path = filename.ok_or_else(|| CtlError::bad_args("snapshot save expects one argument"))?;
            if endpoints.len() != 1 {
                return Err(fail(format!(
                    "snapshot must be requested to one selected node, not multiple [{}]",
                    endpoints.join(" ")
                )));
            }
            let part = PathBuf::from(format!("{}.part", path.display()));
            let mut file = std::fs::File::create(&part).map_err(fail)?;
            let mut stream = c.call(|| async { c.maintenance().snapshot(SnapshotRequest {}).await }).await?;
            let mut hash = Sha256::new();
            let mut last: Vec<u8> = Vec::new();
            let mut progress = Progress::new();
            loop {
                match stream.message().await {
                    Ok(Some(chunk)) => {
                        // The trailer is the last message; everything before it is hashed.
                        if !last.is_empty() {
                            hash.update(&last);
                        }
                        file.write_all(&chunk.blob).map_err(fail)?;
                        progress.advance(chunk.blob.len() as u64, chunk.remaining_bytes);
                        last = chunk.blob;
                    }
                    Ok(None) => break,
                    Err(status) => {
                        let _ = std::fs::remove_file(&part);
                        return Err(fail(status_message(&status)));
                    }
                }
            }
            if let Err(e) = check_trailer(hash, &last) {
                let _ = std::fs::remove_file(&part);
                return Err(e);
            }
            progress.finish();
            file.sync_all().map_err(fail)?;
            drop(file);
            std::fs::rename(&part, &path).map_err(fail)?;
            out.line(&format!("Snapshot saved at {}", path.display()));
        }
        offline => run_offline(offline, Format::Simple, out)?,
    }
    Ok(())
}

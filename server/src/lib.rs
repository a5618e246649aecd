//! The rkv member: etcd's flags, the gRPC services of the etcd v3 API, the apply layer that
//! turns requests into storage changes, and the embed API to run a member in-process.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let config = rkv_server::Config::new("m1", "/tmp/m1.rkv", "127.0.0.1:0".parse()?);
//! let member = rkv_server::Member::start(config).await?;
//! println!("serving on {:?}", member.client_addrs());
//! member.stop().await;
//! # Ok(()) }
//! ```

pub mod apply;
pub mod auth;
pub mod config;
pub mod error;
pub mod etcd_files;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub(crate) mod grpc;
mod http;
pub mod identity;
pub mod lease;
mod listen;
mod member;
pub mod metrics;
pub mod raft;
pub mod restore;
pub mod state;
mod status;
pub mod tls;
pub mod version;
pub mod watch;

pub use config::Config;
pub use member::{run, Member, StartError};
pub use state::MemberState;

/// Installs the tracing subscriber for a `--log-level` (etcd's levels; panic/fatal log errors).
pub fn init_logging(level: &str) {
    let level = match level {
        "debug" => "debug",
        "warn" => "warn",
        "error" | "panic" | "fatal" => "error",
        _ => "info",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("RKV_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    // Colour codes only for a terminal: logs written to files stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
}

//! The member's configuration from etcd's command-line flags and `ETCD_*` environment variables.
//!
//! etcd parses flags with Go's `flag` package: `-name` and `--name` are the same flag, and a
//! boolean flag takes its value only as `--flag=false`. `normalize_args` turns that into what
//! clap expects. Flags of etcd 3.5/3.6 that rkv does not use (yet) are accepted and reported by
//! `Config::ignored` so that etcd's own command lines (kubeadm's manifest, systemd units) start
//! rkv unchanged; a flag etcd does not know is an error, as in etcd.

mod auth_token;
mod flags;
mod from_flags;
mod parse;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::tls::{TlsFiles, TlsVersions};
pub use auth_token::{AuthToken, AuthTokenError, JwtOptions, JwtOptionsError};
pub use flags::Flags;
use flags::{etcd_flag_error, ignored_env_vars, normalize_args};
pub use parse::parse_go_duration;
pub(crate) use parse::{parse_initial_cluster, same_urls};

/// etcd's default client URL.
pub const DEFAULT_CLIENT_URL: &str = "http://localhost:2379";
/// etcd's default peer URL.
pub const DEFAULT_PEER_URL: &str = "http://localhost:2380";
/// etcd's default `--max-request-bytes` (1.5 MiB).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1024 * 1024 + 512 * 1024;
/// gRPC messages may exceed `--max-request-bytes` by this much before gRPC itself refuses them
/// (etcd's `grpcOverheadBytes`); in between etcd answers "request is too large".
pub const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;
/// etcd's default backend quota when `--quota-backend-bytes` is 0.
pub const DEFAULT_QUOTA_BYTES: u64 = 2 * 1024 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoCompaction {
    Disabled,
    /// Keep the history of the last `retention`.
    Periodic(Duration),
    /// Keep the last N revisions.
    Revision(i64),
}

/// A validated member configuration (what the embed API takes).
#[derive(Debug, Clone)]
pub struct Config {
    pub name: String,
    pub data_dir: PathBuf,
    pub listen_client_addrs: Vec<SocketAddr>,
    pub listen_client_urls: Vec<String>,
    pub advertise_client_urls: Vec<String>,
    pub initial_advertise_peer_urls: Vec<String>,
    pub listen_peer_addrs: Vec<SocketAddr>,
    /// The members to bootstrap a new cluster with: (name, peer URLs), in flag order.
    pub initial_cluster: Vec<(String, Vec<String>)>,
    pub initial_cluster_state: ClusterState,
    pub heartbeat_interval: Duration,
    pub election_timeout: Duration,
    pub snapshot_count: u64,
    /// Log entries kept behind a snapshot for slow followers (etcd's snapshot catch-up entries).
    pub snapshot_catchup_entries: u64,
    pub max_request_bytes: usize,
    pub max_txn_ops: usize,
    /// HTTP/2 streams one client connection may have open (etcd's --max-concurrent-streams).
    pub max_concurrent_streams: u32,
    pub quota_backend_bytes: u64,
    pub auto_compaction: AutoCompaction,
    pub initial_cluster_token: String,
    pub log_level: String,
    pub watch_progress_notify_interval: Duration,
    pub metrics: MetricsLevel,
    /// Listen client URLs with the https scheme.
    pub listen_client_tls_addrs: Vec<SocketAddr>,
    /// Listen peer URLs with the https scheme.
    pub listen_peer_tls_addrs: Vec<SocketAddr>,
    pub client_tls: TlsFiles,
    pub peer_tls: TlsFiles,
    pub tls_versions: TlsVersions,
    /// `--cipher-suites` (Go's names): the TLS 1.2 suites offered; empty for rustls' defaults.
    pub tls_cipher_suites: Vec<String>,
    /// `--auth-token`: simple (with --auth-token-ttl) or jwt with its options.
    pub auth_token: AuthToken,
    pub auth_token_ttl: Duration,
    pub bcrypt_cost: u32,
    /// `--listen-metrics-urls`: extra listeners serving only `/metrics` and `/health`.
    pub listen_metrics_addrs: Vec<SocketAddr>,
    /// etcd flags given that rkv accepts but does not use yet (logged at start).
    pub ignored: Vec<String>,
}

/// `--metrics`: etcd's `extensive` adds gRPC handling-time histograms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsLevel {
    Basic,
    Extensive,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterState {
    /// Bootstrap a new cluster from `initial_cluster`.
    New,
    /// Join a running cluster that already added this member.
    Existing,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// A single-member configuration with etcd's defaults, serving on `client_addr`.
    pub fn new(name: &str, data_dir: impl Into<PathBuf>, client_addr: SocketAddr) -> Self {
        let url = format!("http://{client_addr}");
        Config {
            name: name.to_string(),
            data_dir: data_dir.into(),
            listen_client_addrs: vec![client_addr],
            listen_client_urls: vec![url.clone()],
            advertise_client_urls: vec![url],
            initial_advertise_peer_urls: vec![DEFAULT_PEER_URL.into()],
            // A lone embedded member needs no peer listener; set one to form a cluster.
            listen_peer_addrs: Vec::new(),
            initial_cluster: vec![(name.to_string(), vec![DEFAULT_PEER_URL.into()])],
            initial_cluster_state: ClusterState::New,
            heartbeat_interval: Duration::from_millis(100),
            election_timeout: Duration::from_millis(1000),
            snapshot_count: 100_000,
            snapshot_catchup_entries: 5000,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_txn_ops: 128,
            max_concurrent_streams: u32::MAX,
            quota_backend_bytes: DEFAULT_QUOTA_BYTES,
            auto_compaction: AutoCompaction::Disabled,
            initial_cluster_token: "etcd-cluster".into(),
            log_level: "info".into(),
            watch_progress_notify_interval: Duration::from_secs(600),
            metrics: MetricsLevel::Basic,
            listen_metrics_addrs: Vec::new(),
            listen_client_tls_addrs: Vec::new(),
            listen_peer_tls_addrs: Vec::new(),
            client_tls: TlsFiles::default(),
            peer_tls: TlsFiles::default(),
            tls_versions: TlsVersions { allow_12: true, allow_13: true },
            tls_cipher_suites: Vec::new(),
            auth_token: AuthToken::Simple,
            auth_token_ttl: Duration::from_secs(300),
            bcrypt_cost: 10,
            ignored: Vec::new(),
        }
    }

    /// Parses etcd's command line (and `ETCD_*` variables). Returns None for `--version`.
    pub fn from_args(args: impl IntoIterator<Item = String>) -> Result<Option<Config>, clap::Error> {
        let (args, ignored) = normalize_args(args.into_iter().collect());
        let flags = Flags::try_parse_from(args).map_err(etcd_flag_error)?;
        if flags.version == Some(true) {
            return Ok(None);
        }
        let mut ignored = ignored;
        ignored.extend(ignored_env_vars());
        Config::from_flags(flags, ignored)
            .map(Some)
            .map_err(|e| clap::Error::raw(clap::error::ErrorKind::ValueValidation, format!("{e}\n")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Option<Config>, clap::Error> {
        Config::from_args(std::iter::once("rkv").chain(args.iter().copied()).map(String::from))
    }

    #[test]
    fn defaults_are_etcds() {
        let c = parse(&[]).ok().flatten().unwrap_or_else(|| panic!("defaults must parse"));
        assert_eq!(c.name, "default");
        assert_eq!(c.data_dir, PathBuf::from("default.rkv"));
        assert_eq!(c.listen_client_addrs, vec!["127.0.0.1:2379".parse().unwrap_or_else(|_| panic!())]);
        assert_eq!(c.max_request_bytes, 1_572_864);
        assert_eq!(c.max_txn_ops, 128);
        assert_eq!(c.quota_backend_bytes, DEFAULT_QUOTA_BYTES);
        assert_eq!(c.auto_compaction, AutoCompaction::Disabled);
    }

    #[test]
    fn progress_notify_interval_is_read_as_etcd_reads_it() {
        let interval = |v: &str| {
            parse(&[&format!("--experimental-watch-progress-notify-interval={v}")])
                .ok()
                .flatten()
                .map(|c| c.watch_progress_notify_interval)
        };
        assert_eq!(interval("5s"), Some(Duration::from_secs(5)));
        assert_eq!(interval("0s"), Some(Duration::from_secs(600)));
        assert_eq!(interval("10ms"), Some(Duration::from_millis(100)));
    }

    #[test]
    fn go_style_flags_and_ignored_flags() {
        let c = parse(&[
            "-name",
            "infra0",
            "--data-dir=/tmp/x",
            "--max-snapshots",
            "10",
            "--client-cert-auth",
            "--peer-client-cert-auth=true",
            "--experimental-initial-corrupt-check=true",
            "--auto-compaction-mode=revision",
            "--auto-compaction-retention=1000",
        ])
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("kubeadm-style flags must parse"));
        assert_eq!(c.name, "infra0");
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.auto_compaction, AutoCompaction::Revision(1000));
        assert!(c.ignored.contains(&"--max-snapshots=10".to_string()));
        // Go's bool flag syntax for flags rkv uses (TLS is off: the URLs are http).
        assert!(c.client_tls.client_cert_auth && c.peer_tls.client_cert_auth);
        assert!(c.listen_client_tls_addrs.is_empty());
    }

    #[test]
    fn unknown_flags_and_bad_values_are_errors() {
        assert!(parse(&["--no-such-flag"]).is_err());
        assert!(parse(&["--max-txn-ops=abc"]).is_err());
        assert!(parse(&["--auto-compaction-mode=weekly"]).is_err());
        assert!(parse(&["--listen-client-urls=ftp://x:1"]).is_err());
    }

    #[test]
    fn version_flag() {
        assert!(matches!(parse(&["--version"]), Ok(None)));
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_go_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_go_duration("x"), None);
    }
}

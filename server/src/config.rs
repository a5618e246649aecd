//! The member's configuration from etcd's command-line flags and `ETCD_*` environment variables.
//!
//! etcd parses flags with Go's `flag` package: `-name` and `--name` are the same flag, and a
//! boolean flag takes its value only as `--flag=false`. `normalize_args` turns that into what
//! clap expects. Flags of etcd 3.5/3.6 that rkv does not use (yet) are accepted and reported by
//! `Config::ignored` so that etcd's own command lines (kubeadm's manifest, systemd units) start
//! rkv unchanged; a flag etcd does not know is an error, as in etcd.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::tls::{TlsFiles, TlsVersions};

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

/// etcd flags rkv accepts without using them yet, and whether each is a boolean.
const IGNORED_FLAGS: &[(&str, bool)] = &[
    ("wal-dir", false),
    ("initial-election-tick-advance", false),
    ("listen-client-http-urls", false),
    ("max-snapshots", false),
    ("max-wals", false),
    ("backend-bbolt-freelist-type", false),
    ("backend-batch-interval", false),
    ("backend-batch-limit", false),
    ("grpc-keepalive-min-time", false),
    ("grpc-keepalive-interval", false),
    ("grpc-keepalive-timeout", false),
    ("socket-reuse-port", true),
    ("socket-reuse-address", true),
    ("unsafe-no-fsync", true),
    ("discovery", false),
    ("discovery-fallback", false),
    ("discovery-proxy", false),
    ("discovery-srv", false),
    ("discovery-srv-name", false),
    ("discovery-token", false),
    ("discovery-endpoints", false),
    ("strict-reconfig-check", true),
    ("pre-vote", true),
    ("enable-v2", true),
    ("v2-deprecation", false),
    ("enable-grpc-gateway", true),
    ("client-crl-file", false),
    ("client-cert-allowed-hostname", false),
    ("peer-cert-allowed-cn", false),
    ("peer-cert-allowed-hostname", false),
    ("peer-crl-file", false),
    ("cipher-suites", false),
    ("cors", false),
    ("host-whitelist", false),
    ("self-signed-cert-validity", false),
    ("logger", false),
    ("log-outputs", false),
    ("log-format", false),
    ("enable-log-rotation", true),
    ("log-rotation-config-json", false),
    ("proxy", false),
    ("proxy-failure-wait", false),
    ("proxy-refresh-interval", false),
    ("proxy-dial-timeout", false),
    ("proxy-write-timeout", false),
    ("proxy-read-timeout", false),
    ("enable-pprof", true),
    ("force-new-cluster", true),
    ("config-file", false),
    ("feature-gates", false),
    ("experimental-initial-corrupt-check", true),
    ("experimental-corrupt-check-time", false),
    ("experimental-compact-hash-check-enabled", true),
    ("experimental-compact-hash-check-time", false),
    ("experimental-enable-v2v3", false),
    ("experimental-enable-lease-checkpoint", true),
    ("experimental-enable-lease-checkpoint-persist", true),
    ("experimental-compaction-batch-limit", false),
    ("experimental-compaction-sleep-interval", false),
    ("experimental-peer-skip-client-san-verification", true),
    ("experimental-warning-apply-duration", false),
    ("experimental-warning-unary-request-duration", false),
    ("experimental-txn-mode-write-with-shared-buffer", true),
    ("experimental-bootstrap-defrag-threshold-megabytes", false),
    ("experimental-enable-distributed-tracing", true),
    ("experimental-distributed-tracing-address", false),
    ("experimental-distributed-tracing-service-name", false),
    ("experimental-distributed-tracing-instance-id", false),
    ("experimental-distributed-tracing-sampling-rate", false),
    ("experimental-downgrade-check-time", false),
    ("experimental-memory-mlock", true),
    ("experimental-max-learners", false),
    ("experimental-stop-grpc-service-on-defrag", true),
    ("experimental-wait-cluster-ready-timeout", false),
];

#[derive(Debug, Clone, Parser)]
#[command(
    name = "rkv",
    about = "rkv: a key-value store that speaks the etcd v3 API",
    disable_version_flag = true
)]
pub struct Flags {
    /// Print the version and exit.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub version: Option<bool>,

    /// Human-readable name for this member.
    #[arg(long, env = "ETCD_NAME", default_value = "default")]
    pub name: String,

    /// Path to the data directory (default: <name>.rkv).
    #[arg(long, env = "ETCD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// List of URLs to listen on for client traffic.
    #[arg(long, env = "ETCD_LISTEN_CLIENT_URLS", default_value = DEFAULT_CLIENT_URL)]
    pub listen_client_urls: String,

    /// List of this member's client URLs to advertise to the public.
    #[arg(long, env = "ETCD_ADVERTISE_CLIENT_URLS", default_value = DEFAULT_CLIENT_URL)]
    pub advertise_client_urls: String,

    /// Maximum client request size in bytes the server will accept.
    #[arg(long, env = "ETCD_MAX_REQUEST_BYTES", default_value_t = DEFAULT_MAX_REQUEST_BYTES)]
    pub max_request_bytes: usize,

    /// Maximum concurrent streams that each client can open at a time.
    #[arg(long, env = "ETCD_MAX_CONCURRENT_STREAMS", default_value_t = u32::MAX)]
    pub max_concurrent_streams: u32,

    /// Maximum number of operations permitted in a transaction.
    #[arg(long, env = "ETCD_MAX_TXN_OPS", default_value_t = 128)]
    pub max_txn_ops: usize,

    /// Raise alarms when backend size exceeds the given quota (0 defaults to 2 GiB).
    #[arg(long, env = "ETCD_QUOTA_BACKEND_BYTES", default_value_t = 0)]
    pub quota_backend_bytes: i64,

    /// Interpret 'auto-compaction-retention' as 'periodic' (duration) or 'revision' (count).
    #[arg(long, env = "ETCD_AUTO_COMPACTION_MODE", default_value = "periodic")]
    pub auto_compaction_mode: String,

    /// Auto compaction retention (0 disables it); a bare number in periodic mode is hours.
    #[arg(long, env = "ETCD_AUTO_COMPACTION_RETENTION", default_value = "0")]
    pub auto_compaction_retention: String,

    /// This member's peer URLs to advertise to the rest of the cluster (part of its ID).
    #[arg(long, env = "ETCD_INITIAL_ADVERTISE_PEER_URLS", default_value = "http://localhost:2380")]
    pub initial_advertise_peer_urls: String,

    /// List of URLs to listen on for peer traffic.
    #[arg(long, env = "ETCD_LISTEN_PEER_URLS", default_value = DEFAULT_PEER_URL)]
    pub listen_peer_urls: String,

    /// Initial cluster configuration for bootstrapping: name=peer-url,... (default: this
    /// member alone, under its name and advertised peer URLs).
    #[arg(long, env = "ETCD_INITIAL_CLUSTER")]
    pub initial_cluster: Option<String>,

    /// Initial cluster state ('new' or 'existing').
    #[arg(long, env = "ETCD_INITIAL_CLUSTER_STATE", default_value = "new")]
    pub initial_cluster_state: String,

    /// Time (in milliseconds) of a heartbeat interval.
    #[arg(long, env = "ETCD_HEARTBEAT_INTERVAL", default_value_t = 100)]
    pub heartbeat_interval: u64,

    /// Time (in milliseconds) for an election to timeout.
    #[arg(long, env = "ETCD_ELECTION_TIMEOUT", default_value_t = 1000)]
    pub election_timeout: u64,

    /// Number of committed transactions to trigger a snapshot to disk.
    #[arg(long, env = "ETCD_SNAPSHOT_COUNT", default_value_t = 100_000)]
    pub snapshot_count: u64,

    /// Number of entries for a slow follower to catch up after compacting the raft log.
    #[arg(long, env = "ETCD_EXPERIMENTAL_SNAPSHOT_CATCHUP_ENTRIES", default_value_t = 5000)]
    pub experimental_snapshot_catchup_entries: u64,

    /// Initial cluster token: part of the cluster and member IDs, as in etcd.
    #[arg(long, env = "ETCD_INITIAL_CLUSTER_TOKEN", default_value = "etcd-cluster")]
    pub initial_cluster_token: String,

    /// Interval between progress notifications to watchers that asked for them.
    #[arg(long, env = "ETCD_EXPERIMENTAL_WATCH_PROGRESS_NOTIFY_INTERVAL", default_value = "10m")]
    pub experimental_watch_progress_notify_interval: String,

    /// Log level: debug, info, warn, error, panic or fatal.
    /// Path to the client server TLS cert file.
    #[arg(long, env = "ETCD_CERT_FILE")]
    pub cert_file: Option<PathBuf>,

    /// Path to the client server TLS key file.
    #[arg(long, env = "ETCD_KEY_FILE")]
    pub key_file: Option<PathBuf>,

    /// Path to the client server TLS trusted CA cert file.
    #[arg(long, env = "ETCD_TRUSTED_CA_FILE")]
    pub trusted_ca_file: Option<PathBuf>,

    /// Enable client cert authentication.
    #[arg(long, env = "ETCD_CLIENT_CERT_AUTH", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub client_cert_auth: Option<bool>,

    /// Client TLS using generated certificates.
    #[arg(long, env = "ETCD_AUTO_TLS", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub auto_tls: Option<bool>,

    /// Path to the peer server TLS cert file.
    #[arg(long, env = "ETCD_PEER_CERT_FILE")]
    pub peer_cert_file: Option<PathBuf>,

    /// Path to the peer server TLS key file.
    #[arg(long, env = "ETCD_PEER_KEY_FILE")]
    pub peer_key_file: Option<PathBuf>,

    /// Path to the peer server TLS trusted CA file.
    #[arg(long, env = "ETCD_PEER_TRUSTED_CA_FILE")]
    pub peer_trusted_ca_file: Option<PathBuf>,

    /// Enable peer client cert authentication.
    #[arg(long, env = "ETCD_PEER_CLIENT_CERT_AUTH", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub peer_client_cert_auth: Option<bool>,

    /// Peer TLS using self-generated certificates if --peer-key-file and --peer-cert-file are not provided.
    #[arg(long, env = "ETCD_PEER_AUTO_TLS", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub peer_auto_tls: Option<bool>,

    /// Minimum TLS version supported by etcd (TLS1.2 or TLS1.3; rustls has no older ones).
    #[arg(long, env = "ETCD_TLS_MIN_VERSION", default_value = "TLS1.2")]
    pub tls_min_version: String,

    /// Maximum TLS version supported by etcd (empty: no maximum).
    #[arg(long, env = "ETCD_TLS_MAX_VERSION", default_value = "")]
    pub tls_max_version: String,

    /// Specify auth token type and its options (simple; jwt is not supported yet).
    #[arg(long, env = "ETCD_AUTH_TOKEN", default_value = "simple")]
    pub auth_token: String,

    /// The time in seconds that an auth token is valid for.
    #[arg(long, env = "ETCD_AUTH_TOKEN_TTL", default_value_t = 300)]
    pub auth_token_ttl: u64,

    /// Specify bcrypt algorithm cost factor for auth password hashing.
    #[arg(long, env = "ETCD_BCRYPT_COST", default_value_t = 10)]
    pub bcrypt_cost: u32,

    /// Set level of detail for exported metrics, specify 'extensive' to include server side grpc histogram metrics.
    #[arg(long, env = "ETCD_METRICS", default_value = "basic")]
    pub metrics: String,

    /// List of URLs to listen on for the metrics and health endpoints.
    #[arg(long, env = "ETCD_LISTEN_METRICS_URLS", default_value = "")]
    pub listen_metrics_urls: String,

    #[arg(long, env = "ETCD_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

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
    pub metrics: crate::metrics::MetricsLevel,
    /// Listen client URLs with the https scheme.
    pub listen_client_tls_addrs: Vec<SocketAddr>,
    /// Listen peer URLs with the https scheme.
    pub listen_peer_tls_addrs: Vec<SocketAddr>,
    pub client_tls: TlsFiles,
    pub peer_tls: TlsFiles,
    pub tls_versions: TlsVersions,
    pub auth_token_ttl: Duration,
    pub bcrypt_cost: u32,
    /// `--listen-metrics-urls`: extra listeners serving only `/metrics` and `/health`.
    pub listen_metrics_addrs: Vec<SocketAddr>,
    /// etcd flags given that rkv accepts but does not use yet (logged at start).
    pub ignored: Vec<String>,
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
            metrics: crate::metrics::MetricsLevel::Basic,
            listen_metrics_addrs: Vec::new(),
            listen_client_tls_addrs: Vec::new(),
            listen_peer_tls_addrs: Vec::new(),
            client_tls: TlsFiles::default(),
            peer_tls: TlsFiles::default(),
            tls_versions: TlsVersions { allow_12: true, allow_13: true },
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

    fn from_flags(flags: Flags, ignored: Vec<String>) -> Result<Config, ConfigError> {
        let data_dir = flags.data_dir.unwrap_or_else(|| PathBuf::from(format!("{}.rkv", flags.name)));
        let client_tls = TlsFiles {
            cert: flags.cert_file.clone(),
            key: flags.key_file.clone(),
            trusted_ca: flags.trusted_ca_file.clone(),
            client_cert_auth: flags.client_cert_auth.unwrap_or(false),
            auto_tls: flags.auto_tls.unwrap_or(false),
        };
        let peer_tls = TlsFiles {
            cert: flags.peer_cert_file.clone(),
            key: flags.peer_key_file.clone(),
            trusted_ca: flags.peer_trusted_ca_file.clone(),
            client_cert_auth: flags.peer_client_cert_auth.unwrap_or(false),
            auto_tls: flags.peer_auto_tls.unwrap_or(false),
        };
        let tls_versions = parse_tls_versions(&flags.tls_min_version, &flags.tls_max_version)?;
        // etcd: bcrypt's minimum and maximum costs.
        if !(4..=31).contains(&flags.bcrypt_cost) {
            return Err(ConfigError::Invalid(format!(
                "invalid bcrypt-cost {} (must be between 4 and 31)",
                flags.bcrypt_cost
            )));
        }
        if flags.auth_token.split(',').next() != Some("simple") {
            return Err(ConfigError::Invalid(format!(
                "--auth-token {:?}: only simple tokens are supported (see docs/compatibility.md)",
                flags.auth_token
            )));
        }
        let listen_client_urls = split_urls(&flags.listen_client_urls);
        let mut listen_client_addrs = Vec::new();
        let mut listen_client_tls_addrs = Vec::new();
        for url in &listen_client_urls {
            match parse_listen_url(url)? {
                (addr, false) => listen_client_addrs.push(addr),
                (_, true) if !client_tls.configured() => {
                    return Err(ConfigError::Invalid(format!(
                        "TLS key/cert (--cert-file, --key-file) must be provided for client url {url} with HTTPS scheme"
                    )))
                }
                (addr, true) => listen_client_tls_addrs.push(addr),
            }
        }
        let mut listen_metrics_addrs = Vec::new();
        for url in split_urls(&flags.listen_metrics_urls) {
            match parse_listen_url(&url)? {
                (addr, false) => listen_metrics_addrs.push(addr),
                (_, true) => {
                    return Err(ConfigError::Invalid(format!(
                        "listen metrics URL {url}: https metrics URLs are not supported (see docs/compatibility.md)"
                    )))
                }
            }
        }
        // etcd takes any other value as basic.
        let metrics = match flags.metrics.as_str() {
            "extensive" => crate::metrics::MetricsLevel::Extensive,
            _ => crate::metrics::MetricsLevel::Basic,
        };
        let auto_compaction =
            parse_auto_compaction(&flags.auto_compaction_mode, &flags.auto_compaction_retention)?;
        if !["debug", "info", "warn", "error", "panic", "fatal"].contains(&flags.log_level.as_str()) {
            return Err(ConfigError::Invalid(format!(
                "unknown log level {:?} (debug, info, warn, error, panic or fatal)",
                flags.log_level
            )));
        }
        let watch_progress_notify_interval =
            parse_go_duration(&flags.experimental_watch_progress_notify_interval)
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    ConfigError::Invalid(format!(
                        "invalid --experimental-watch-progress-notify-interval {:?}",
                        flags.experimental_watch_progress_notify_interval
                    ))
                })?;
        let quota_backend_bytes = match flags.quota_backend_bytes {
            q if q < 0 => {
                return Err(ConfigError::Invalid("--quota-backend-bytes must not be negative".into()))
            }
            0 => DEFAULT_QUOTA_BYTES,
            q => q as u64,
        };
        let initial_advertise_peer_urls = split_urls(&flags.initial_advertise_peer_urls);
        let mut listen_peer_addrs = Vec::new();
        let mut listen_peer_tls_addrs = Vec::new();
        for url in split_urls(&flags.listen_peer_urls) {
            match parse_listen_url(&url)? {
                (addr, false) => listen_peer_addrs.push(addr),
                (_, true) if !peer_tls.configured() => {
                    return Err(ConfigError::Invalid(format!(
                        "TLS key/cert (--peer-cert-file, --peer-key-file) must be provided for peer url {url} with HTTPS scheme"
                    )))
                }
                (addr, true) => listen_peer_tls_addrs.push(addr),
            }
        }
        // Client certificate auth matters only where TLS is served (etcd ignores it on http).
        for (files, flag, used) in [
            (&client_tls, "--client-cert-auth", !listen_client_tls_addrs.is_empty()),
            (&peer_tls, "--peer-client-cert-auth", !listen_peer_tls_addrs.is_empty()),
        ] {
            if used && files.client_cert_auth && files.trusted_ca.is_none() {
                return Err(ConfigError::Invalid(format!(
                    "{flag} needs a trusted CA file to verify certificates with"
                )));
            }
        }
        let initial_cluster = match &flags.initial_cluster {
            Some(spec) => parse_initial_cluster(spec)?,
            None => vec![(flags.name.clone(), initial_advertise_peer_urls.clone())],
        };
        match initial_cluster.iter().find(|(name, _)| *name == flags.name) {
            None => {
                return Err(ConfigError::Invalid(format!(
                    "couldn't find local name {:?} in the initial cluster configuration",
                    flags.name
                )))
            }
            Some((_, urls)) if !same_urls(urls, &initial_advertise_peer_urls) => {
                return Err(ConfigError::Invalid(format!(
                    "--initial-cluster has {}={} but missing from --initial-advertise-peer-urls={}",
                    flags.name,
                    urls.join(","),
                    initial_advertise_peer_urls.join(",")
                )))
            }
            Some(_) => {}
        }
        let initial_cluster_state = match flags.initial_cluster_state.as_str() {
            "new" => ClusterState::New,
            "existing" => ClusterState::Existing,
            other => {
                return Err(ConfigError::Invalid(format!(
                    "invalid value {other:?} for flag -initial-cluster-state: valid values are \"new\", \"existing\""
                )))
            }
        };
        if flags.heartbeat_interval == 0 || flags.election_timeout < 5 * flags.heartbeat_interval {
            return Err(ConfigError::Invalid(format!(
                "--election-timeout[{}ms] should be at least as 5 times as --heartbeat-interval[{}ms]",
                flags.election_timeout, flags.heartbeat_interval
            )));
        }
        Ok(Config {
            name: flags.name,
            data_dir,
            listen_client_addrs,
            listen_client_urls,
            advertise_client_urls: split_urls(&flags.advertise_client_urls),
            initial_advertise_peer_urls,
            listen_peer_addrs,
            initial_cluster,
            initial_cluster_state,
            heartbeat_interval: Duration::from_millis(flags.heartbeat_interval),
            election_timeout: Duration::from_millis(flags.election_timeout),
            snapshot_count: flags.snapshot_count.max(1),
            snapshot_catchup_entries: flags.experimental_snapshot_catchup_entries,
            max_request_bytes: flags.max_request_bytes,
            max_txn_ops: flags.max_txn_ops,
            max_concurrent_streams: flags.max_concurrent_streams,
            quota_backend_bytes,
            auto_compaction,
            initial_cluster_token: flags.initial_cluster_token,
            log_level: flags.log_level,
            watch_progress_notify_interval,
            metrics,
            listen_metrics_addrs,
            listen_client_tls_addrs,
            listen_peer_tls_addrs,
            client_tls,
            peer_tls,
            tls_versions,
            auth_token_ttl: Duration::from_secs(flags.auth_token_ttl),
            bcrypt_cost: flags.bcrypt_cost,
            ignored,
        })
    }
}

/// etcd (Go's flag package) reports an unknown flag as "flag provided but not defined: -name".
fn etcd_flag_error(e: clap::Error) -> clap::Error {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if e.kind() != ErrorKind::UnknownArgument {
        return e;
    }
    let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) else {
        return e;
    };
    let name = arg.trim_start_matches('-').split('=').next().unwrap_or_default();
    clap::Error::raw(ErrorKind::UnknownArgument, format!("flag provided but not defined: -{name}\n"))
}

fn split_urls(s: &str) -> Vec<String> {
    s.split(',').map(str::trim).filter(|u| !u.is_empty()).map(String::from).collect()
}

/// `name=url,name=url,...`; a name given several times has several peer URLs.
pub(crate) fn parse_initial_cluster(spec: &str) -> Result<Vec<(String, Vec<String>)>, ConfigError> {
    let mut members: Vec<(String, Vec<String>)> = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((name, url)) = part.split_once('=') else {
            return Err(ConfigError::Invalid(format!("--initial-cluster: {part:?} is not name=url")));
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ConfigError::Invalid(format!(
                "--initial-cluster: URL scheme must be http or https in {url:?}"
            )));
        }
        match members.iter_mut().find(|(n, _)| n == name) {
            Some((_, urls)) => urls.push(url.to_string()),
            None => members.push((name.to_string(), vec![url.to_string()])),
        }
    }
    if members.is_empty() {
        return Err(ConfigError::Invalid("--initial-cluster is empty".into()));
    }
    Ok(members)
}

/// Whether two lists name the same URLs (order and trailing slashes aside).
pub(crate) fn same_urls(a: &[String], b: &[String]) -> bool {
    let norm = |v: &[String]| {
        let mut v: Vec<String> = v.iter().map(|u| u.trim_end_matches('/').to_string()).collect();
        v.sort();
        v
    };
    norm(a) == norm(b)
}

/// `http://host:port` to the addresses to listen on ("localhost" is the loopback, as Go's
/// listener resolves it).
/// `--tls-min-version` and `--tls-max-version`, etcd's names for TLS versions.
fn parse_tls_versions(min: &str, max: &str) -> Result<TlsVersions, ConfigError> {
    let rank = |v: &str, flag: &str| match v {
        "TLS1.0" => Ok(10),
        "TLS1.1" => Ok(11),
        "TLS1.2" => Ok(12),
        "TLS1.3" => Ok(13),
        "" if flag == "--tls-max-version" => Ok(13),
        other => Err(ConfigError::Invalid(format!(
            "unexpected TLS version {other:?} (must be one of: TLS1.0, TLS1.1, TLS1.2, TLS1.3) for {flag}"
        ))),
    };
    let (lo, hi) = (rank(min, "--tls-min-version")?, rank(max, "--tls-max-version")?);
    if lo > hi {
        return Err(ConfigError::Invalid(format!("min version ({min}) is greater than max version ({max})")));
    }
    // rustls speaks TLS 1.2 and 1.3 only: an older minimum still gets 1.2.
    let versions = TlsVersions { allow_12: hi >= 12 && lo <= 12, allow_13: hi >= 13 };
    if !versions.allow_12 && !versions.allow_13 {
        return Err(ConfigError::Invalid(format!(
            "TLS versions {min}..{max}: rkv supports TLS1.2 and TLS1.3 only"
        )));
    }
    Ok(versions)
}

/// A listen URL's address and whether it is https.
fn parse_listen_url(url: &str) -> Result<(SocketAddr, bool), ConfigError> {
    let (rest, tls) = if let Some(rest) = url.strip_prefix("http://") {
        (rest, false)
    } else if let Some(rest) = url.strip_prefix("https://") {
        (rest, true)
    } else if url.starts_with("unix://") || url.starts_with("unixs://") {
        return Err(ConfigError::Invalid(format!(
            "listen URL {url}: unix socket URLs are not supported (see docs/compatibility.md)"
        )));
    } else {
        return Err(ConfigError::Invalid(format!(
            "listen URL {url}: URL scheme must be http, https, unix, or unixs"
        )));
    };
    let hostport = rest.trim_end_matches('/');
    if hostport.contains('/') {
        return Err(ConfigError::Invalid(format!("listen URL {url}: URL must not contain a path")));
    }
    let hostport = hostport.replacen("localhost:", "127.0.0.1:", 1);
    let addrs: Vec<SocketAddr> = hostport
        .to_socket_addrs()
        .map_err(|e| ConfigError::Invalid(format!("listen URL {url}: {e}")))?
        .collect();
    match addrs.first() {
        Some(first) => Ok((*first, tls)),
        None => Err(ConfigError::Invalid(format!("listen URL {url}: no address"))),
    }
}

fn parse_auto_compaction(mode: &str, retention: &str) -> Result<AutoCompaction, ConfigError> {
    let bad =
        || ConfigError::Invalid(format!("invalid auto compaction retention {retention:?} for mode {mode:?}"));
    match mode {
        "periodic" => {
            if let Ok(hours) = retention.parse::<i64>() {
                if hours < 0 {
                    return Err(bad());
                }
                return Ok(if hours == 0 {
                    AutoCompaction::Disabled
                } else {
                    AutoCompaction::Periodic(Duration::from_secs(hours as u64 * 3600))
                });
            }
            let d = parse_go_duration(retention).ok_or_else(bad)?;
            Ok(if d.is_zero() { AutoCompaction::Disabled } else { AutoCompaction::Periodic(d) })
        }
        "revision" => {
            let n = retention.parse::<i64>().map_err(|_| bad())?;
            Ok(match n {
                0 => AutoCompaction::Disabled,
                n if n > 0 => AutoCompaction::Revision(n),
                _ => return Err(bad()),
            })
        }
        other => Err(ConfigError::Invalid(format!("unknown auto-compaction-mode {other:?}"))),
    }
}

/// Go's `time.ParseDuration` for the units etcd users write (h, m, s, ms), e.g. "1h30m", "5m".
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let value: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let secs = match &rest[..unit_len] {
            "h" => value * 3600.0,
            "m" => value * 60.0,
            "s" => value,
            "ms" => value / 1000.0,
            "us" | "µs" => value / 1e6,
            "ns" => value / 1e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += Duration::from_secs_f64(secs);
    }
    Some(total)
}

/// Go-style arguments to clap's: `-flag` becomes `--flag`; flags in `IGNORED_FLAGS` are taken
/// out (with their value) and returned for the log.
fn normalize_args(args: Vec<String>) -> (Vec<String>, Vec<String>) {
    let mut out = Vec::with_capacity(args.len());
    let mut ignored = Vec::new();
    let mut iter = args.into_iter();
    if let Some(program) = iter.next() {
        out.push(program);
    }
    while let Some(arg) = iter.next() {
        let long = match arg.strip_prefix("--") {
            Some(_) => arg.clone(),
            None if arg.starts_with('-') && arg.len() > 2 => format!("-{arg}"),
            None => arg.clone(),
        };
        let Some(body) = long.strip_prefix("--") else {
            out.push(long);
            continue;
        };
        let name = body.split('=').next().unwrap_or(body);
        match IGNORED_FLAGS.iter().find(|(n, _)| *n == name) {
            Some((_, is_bool)) => {
                if !body.contains('=') && !is_bool {
                    if let Some(value) = iter.next() {
                        ignored.push(format!("--{name}={value}"));
                        continue;
                    }
                }
                ignored.push(long.clone());
            }
            None => out.push(long),
        }
    }
    (out, ignored)
}

fn ignored_env_vars() -> Vec<String> {
    IGNORED_FLAGS
        .iter()
        .map(|(name, _)| format!("ETCD_{}", name.to_uppercase().replace('-', "_")))
        .filter_map(|var| std::env::var(&var).ok().map(|v| format!("{var}={v}")))
        .collect()
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

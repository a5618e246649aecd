//! etcd's command line as clap sees it: every flag rkv uses, with its `ETCD_*` variable, and
//! the flags it accepts without using them (Go's `-flag` syntax normalised on the way in).

use std::path::PathBuf;

use clap::Parser;

use super::{DEFAULT_CLIENT_URL, DEFAULT_MAX_REQUEST_BYTES, DEFAULT_PEER_URL};

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

    /// Path to the client certificate revocation list file.
    #[arg(long, env = "ETCD_CLIENT_CRL_FILE")]
    pub client_crl_file: Option<PathBuf>,

    /// Allowed TLS hostname for client cert authentication.
    #[arg(long, env = "ETCD_CLIENT_CERT_ALLOWED_HOSTNAME", default_value = "")]
    pub client_cert_allowed_hostname: String,

    /// Path to the peer certificate revocation list file.
    #[arg(long, env = "ETCD_PEER_CRL_FILE")]
    pub peer_crl_file: Option<PathBuf>,

    /// Allowed CN for inter peer authentication.
    #[arg(long, env = "ETCD_PEER_CERT_ALLOWED_CN", default_value = "")]
    pub peer_cert_allowed_cn: String,

    /// Allowed TLS hostname for inter peer authentication.
    #[arg(long, env = "ETCD_PEER_CERT_ALLOWED_HOSTNAME", default_value = "")]
    pub peer_cert_allowed_hostname: String,

    /// Comma-separated list of supported TLS cipher suites between client/server and peers (empty will be auto-populated by Go).
    #[arg(long, env = "ETCD_CIPHER_SUITES", default_value = "")]
    pub cipher_suites: String,

    /// Maximum TLS version supported by etcd (empty: no maximum).
    #[arg(long, env = "ETCD_TLS_MAX_VERSION", default_value = "")]
    pub tls_max_version: String,

    /// Specify auth token type and its options: simple, or jwt,pub-key=...,priv-key=...,sign-method=RS256,ttl=5m.
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

    /// Log level: debug, info, warn, error, panic or fatal.
    #[arg(long, env = "ETCD_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

/// etcd (Go's flag package) reports an unknown flag as "flag provided but not defined: -name".
pub(super) fn etcd_flag_error(e: clap::Error) -> clap::Error {
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

/// Go-style arguments to clap's: `-flag` becomes `--flag`; flags in `IGNORED_FLAGS` are taken
/// out (with their value) and returned for the log.
pub(super) fn normalize_args(args: Vec<String>) -> (Vec<String>, Vec<String>) {
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

pub(super) fn ignored_env_vars() -> Vec<String> {
    IGNORED_FLAGS
        .iter()
        .map(|(name, _)| format!("ETCD_{}", name.to_uppercase().replace('-', "_")))
        .filter_map(|var| std::env::var(&var).ok().map(|v| format!("{var}={v}")))
        .collect()
}

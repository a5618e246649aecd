//! `Config::from_flags`: etcd's flags validated and turned into a `Config`, each group of flags
//! with etcd's checks and messages, in the order etcd reports them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::parse::{
    parse_auto_compaction, parse_go_duration, parse_initial_cluster, parse_listen_url, parse_tls_versions,
    progress_notify_interval, same_urls, split_urls,
};
use super::{AuthToken, ClusterState, Config, ConfigError, Flags, MetricsLevel, DEFAULT_QUOTA_BYTES};
use crate::tls::{check_cipher_suites, AllowedIdentity, TlsFiles, TlsVersions};

fn invalid(message: String) -> ConfigError {
    ConfigError::Invalid(message)
}

/// The TLS files and identity checks of the client and the peer side.
fn tls_files(flags: &Flags) -> Result<(TlsFiles, TlsFiles), ConfigError> {
    let client = TlsFiles {
        cert: flags.cert_file.clone(),
        key: flags.key_file.clone(),
        trusted_ca: flags.trusted_ca_file.clone(),
        client_cert_auth: flags.client_cert_auth.unwrap_or(false),
        auto_tls: flags.auto_tls.unwrap_or(false),
        crl: flags.client_crl_file.clone(),
        allowed: AllowedIdentity {
            common_name: None,
            hostname: Some(flags.client_cert_allowed_hostname.clone()).filter(|h| !h.is_empty()),
        },
    };
    let peer = TlsFiles {
        cert: flags.peer_cert_file.clone(),
        key: flags.peer_key_file.clone(),
        trusted_ca: flags.peer_trusted_ca_file.clone(),
        client_cert_auth: flags.peer_client_cert_auth.unwrap_or(false),
        auto_tls: flags.peer_auto_tls.unwrap_or(false),
        crl: flags.peer_crl_file.clone(),
        allowed: AllowedIdentity {
            common_name: Some(flags.peer_cert_allowed_cn.clone()).filter(|c| !c.is_empty()),
            hostname: Some(flags.peer_cert_allowed_hostname.clone()).filter(|h| !h.is_empty()),
        },
    };
    if let (Some(cn), Some(hostname)) = (&peer.allowed.common_name, &peer.allowed.hostname) {
        // etcd's embed config check, with its wording.
        return Err(invalid(format!(
            "AllowedCN and AllowedHostname are mutually exclusive (cn={cn:?}, hostname={hostname:?})"
        )));
    }
    Ok((client, peer))
}

/// `--tls-min-version`, `--tls-max-version` and `--cipher-suites`.
fn tls_protocols(flags: &Flags) -> Result<(TlsVersions, Vec<String>), ConfigError> {
    let versions = parse_tls_versions(&flags.tls_min_version, &flags.tls_max_version)?;
    let suites: Vec<String> =
        flags.cipher_suites.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect();
    let skipped = check_cipher_suites(&suites, !versions.allow_12).map_err(invalid)?;
    if !skipped.is_empty() {
        tracing::warn!(?skipped, "cipher suites rustls does not implement are not offered");
    }
    Ok((versions, suites))
}

/// One side's listen URLs as plain and TLS addresses; an https URL needs that side's
/// certificate (`cert_flags` names its flags in etcd's message).
fn listen_addrs(
    urls: &[String],
    tls: &TlsFiles,
    side: &str,
    cert_flags: &str,
) -> Result<(Vec<SocketAddr>, Vec<SocketAddr>), ConfigError> {
    let (mut plain, mut with_tls) = (Vec::new(), Vec::new());
    for url in urls {
        match parse_listen_url(url)? {
            (addr, false) => plain.push(addr),
            (_, true) if !tls.configured() => {
                return Err(invalid(format!(
                    "TLS key/cert ({cert_flags}) must be provided for {side} url {url} with HTTPS scheme"
                )))
            }
            (addr, true) => with_tls.push(addr),
        }
    }
    Ok((plain, with_tls))
}

fn metrics_addrs(flags: &Flags) -> Result<Vec<SocketAddr>, ConfigError> {
    let mut addrs = Vec::new();
    for url in split_urls(&flags.listen_metrics_urls) {
        match parse_listen_url(&url)? {
            (addr, false) => addrs.push(addr),
            (_, true) => {
                return Err(invalid(format!(
                "listen metrics URL {url}: https metrics URLs are not supported (see docs/compatibility.md)"
            )))
            }
        }
    }
    Ok(addrs)
}

/// `--initial-cluster` (this member alone by default), which must name this member with its
/// advertised peer URLs.
fn initial_cluster(flags: &Flags, advertised: &[String]) -> Result<Vec<(String, Vec<String>)>, ConfigError> {
    let cluster = match &flags.initial_cluster {
        Some(spec) => parse_initial_cluster(spec)?,
        None => vec![(flags.name.clone(), advertised.to_vec())],
    };
    match cluster.iter().find(|(name, _)| *name == flags.name) {
        None => Err(invalid(format!(
            "couldn't find local name {:?} in the initial cluster configuration",
            flags.name
        ))),
        Some((_, urls)) if !same_urls(urls, advertised) => Err(invalid(format!(
            "--initial-cluster has {}={} but missing from --initial-advertise-peer-urls={}",
            flags.name,
            urls.join(","),
            advertised.join(",")
        ))),
        Some(_) => Ok(cluster),
    }
}

/// Single-valued flags etcd checks on their own.
struct Values {
    quota_backend_bytes: u64,
    watch_progress_notify_interval: Duration,
    metrics: MetricsLevel,
}

fn values(flags: &Flags) -> Result<Values, ConfigError> {
    if !["debug", "info", "warn", "error", "panic", "fatal"].contains(&flags.log_level.as_str()) {
        return Err(invalid(format!(
            "unknown log level {:?} (debug, info, warn, error, panic or fatal)",
            flags.log_level
        )));
    }
    let watch_progress_notify_interval =
        parse_go_duration(&flags.experimental_watch_progress_notify_interval)
            .map(progress_notify_interval)
            .ok_or_else(|| {
            invalid(format!(
                "invalid --experimental-watch-progress-notify-interval {:?}",
                flags.experimental_watch_progress_notify_interval
            ))
        })?;
    let quota_backend_bytes = match flags.quota_backend_bytes {
        q if q < 0 => return Err(invalid("--quota-backend-bytes must not be negative".into())),
        0 => DEFAULT_QUOTA_BYTES,
        q => q as u64,
    };
    // etcd takes any other value as basic.
    let metrics = if flags.metrics == "extensive" { MetricsLevel::Extensive } else { MetricsLevel::Basic };
    Ok(Values { quota_backend_bytes, watch_progress_notify_interval, metrics })
}

/// `--initial-cluster-state`, and raft's timing (an election timeout of at least five
/// heartbeats).
fn cluster_state_and_timing(flags: &Flags) -> Result<ClusterState, ConfigError> {
    let state = match flags.initial_cluster_state.as_str() {
        "new" => ClusterState::New,
        "existing" => ClusterState::Existing,
        other => {
            return Err(invalid(format!(
            "invalid value {other:?} for flag -initial-cluster-state: valid values are \"new\", \"existing\""
        )))
        }
    };
    if flags.heartbeat_interval == 0 || flags.election_timeout < 5 * flags.heartbeat_interval {
        return Err(invalid(format!(
            "--election-timeout[{}ms] should be at least as 5 times as --heartbeat-interval[{}ms]",
            flags.election_timeout, flags.heartbeat_interval
        )));
    }
    Ok(state)
}

impl Config {
    pub(super) fn from_flags(flags: Flags, ignored: Vec<String>) -> Result<Config, ConfigError> {
        let data_dir = flags.data_dir.clone().unwrap_or_else(|| PathBuf::from(format!("{}.rkv", flags.name)));
        let (client_tls, peer_tls) = tls_files(&flags)?;
        let (tls_versions, tls_cipher_suites) = tls_protocols(&flags)?;
        // etcd: bcrypt's minimum and maximum costs.
        if !(4..=31).contains(&flags.bcrypt_cost) {
            return Err(invalid(format!(
                "invalid bcrypt-cost {} (must be between 4 and 31)",
                flags.bcrypt_cost
            )));
        }
        let auth_token = AuthToken::parse(&flags.auth_token).map_err(|e| invalid(e.to_string()))?;
        let listen_client_urls = split_urls(&flags.listen_client_urls);
        let cert_flags = "--cert-file, --key-file";
        let (listen_client_addrs, listen_client_tls_addrs) =
            listen_addrs(&listen_client_urls, &client_tls, "client", cert_flags)?;
        let listen_metrics_addrs = metrics_addrs(&flags)?;
        let auto_compaction =
            parse_auto_compaction(&flags.auto_compaction_mode, &flags.auto_compaction_retention)?;
        let values = values(&flags)?;
        let initial_advertise_peer_urls = split_urls(&flags.initial_advertise_peer_urls);
        let peer_cert_flags = "--peer-cert-file, --peer-key-file";
        let (listen_peer_addrs, listen_peer_tls_addrs) =
            listen_addrs(&split_urls(&flags.listen_peer_urls), &peer_tls, "peer", peer_cert_flags)?;
        // Client certificate auth matters only where TLS is served (etcd ignores it on http).
        for (files, flag, used) in [
            (&client_tls, "--client-cert-auth", !listen_client_tls_addrs.is_empty()),
            (&peer_tls, "--peer-client-cert-auth", !listen_peer_tls_addrs.is_empty()),
        ] {
            if used && files.client_cert_auth && files.trusted_ca.is_none() {
                return Err(invalid(format!("{flag} needs a trusted CA file to verify certificates with")));
            }
        }
        let initial_cluster = initial_cluster(&flags, &initial_advertise_peer_urls)?;
        let initial_cluster_state = cluster_state_and_timing(&flags)?;
        Ok(Config {
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
            quota_backend_bytes: values.quota_backend_bytes,
            auto_compaction,
            watch_progress_notify_interval: values.watch_progress_notify_interval,
            metrics: values.metrics,
            listen_metrics_addrs,
            listen_client_tls_addrs,
            listen_peer_tls_addrs,
            client_tls,
            peer_tls,
            tls_versions,
            tls_cipher_suites,
            auth_token,
            auth_token_ttl: Duration::from_secs(flags.auth_token_ttl),
            bcrypt_cost: flags.bcrypt_cost,
            ignored,
            name: flags.name,
            initial_cluster_token: flags.initial_cluster_token,
            log_level: flags.log_level,
        })
    }
}

//! Parsers of flag values: URL lists, --initial-cluster, listen URLs, TLS versions,
//! auto-compaction settings and Go durations, with etcd's messages.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use super::{AutoCompaction, ConfigError};
use crate::tls::TlsVersions;

pub(super) fn split_urls(s: &str) -> Vec<String> {
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
pub(super) fn parse_tls_versions(min: &str, max: &str) -> Result<TlsVersions, ConfigError> {
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
pub(super) fn parse_listen_url(url: &str) -> Result<(SocketAddr, bool), ConfigError> {
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

pub(super) fn parse_auto_compaction(mode: &str, retention: &str) -> Result<AutoCompaction, ConfigError> {
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

/// etcd's reading of `--experimental-watch-progress-notify-interval`: 0 keeps the 10-minute
/// default and anything shorter than 100 ms is raised to 100 ms (v3rpc `NewWatchServer`).
pub fn progress_notify_interval(d: Duration) -> Duration {
    const DEFAULT: Duration = Duration::from_secs(600);
    const MIN: Duration = Duration::from_millis(100);
    match d {
        Duration::ZERO => DEFAULT,
        d => d.max(MIN),
    }
}

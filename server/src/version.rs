//! Versions: rkv's own, and the etcd version rkv reports to clients.

/// The etcd version in `Maintenance.Status` and `/version`. Clients gate features on it:
/// kube-apiserver needs >= 3.5.13 for RequestWatchProgress.
pub const ETCD_API_VERSION: &str = "3.5.21";
/// The cluster version in `/version` (major.minor.0, as etcd reports it).
pub const ETCD_CLUSTER_VERSION: &str = "3.5.0";
pub const RKV_VERSION: &str = env!("CARGO_PKG_VERSION");

/// What `rkv --version` prints.
pub fn version_text() -> String {
    format!(
        "rkv Version: {RKV_VERSION}\netcd API Version: {ETCD_API_VERSION}\nOS/Arch: {}/{}\n",
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}

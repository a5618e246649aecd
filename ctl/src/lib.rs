//! rctl: etcdctl's commands, flags, output formats and exit codes, as a library so that tests
//! can drive it. It speaks only the etcd v3 API, so it works against rkv and etcd alike.

mod client;
pub mod command;
mod error;
mod goquote;
mod json;
mod k8s;
mod print;
mod tls;

use std::io::Read;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use command::kv::{CompactionArgs, DelArgs, GetArgs, PutArgs};
use command::snapshot::SnapshotCommand;
use error::{CtlError, EXIT_BAD_ARGS, EXIT_ERROR};
use print::{Format, Out, Printer};

#[derive(Parser, Debug)]
#[command(name = "rctl", about = "A simple command line client for etcd3 and rkv.", version)]
struct Cli {
    /// gRPC endpoints.
    #[arg(
        long,
        global = true,
        env = "ETCDCTL_ENDPOINTS",
        value_delimiter = ',',
        default_value = "127.0.0.1:2379"
    )]
    endpoints: Vec<String>,
    /// Dial timeout for client connections.
    #[arg(long = "dial-timeout", global = true, env = "ETCDCTL_DIAL_TIMEOUT", default_value = "2s")]
    dial_timeout: String,
    /// Timeout for short running command (excluding dial timeout).
    #[arg(long = "command-timeout", global = true, env = "ETCDCTL_COMMAND_TIMEOUT", default_value = "5s")]
    command_timeout: String,
    /// Set the output format (fields, json, simple, table; k8s: decode Kubernetes objects).
    #[arg(
        short = 'w',
        long = "write-out",
        global = true,
        env = "ETCDCTL_WRITE_OUT",
        default_value = "simple"
    )]
    write_out: String,
    /// Verify certificates of TLS-enabled secure servers using this CA bundle.
    #[arg(long, global = true, env = "ETCDCTL_CACERT")]
    cacert: Option<String>,
    /// Identify secure client using this TLS certificate file.
    #[arg(long, global = true, env = "ETCDCTL_CERT")]
    cert: Option<String>,
    /// Identify secure client using this TLS key file.
    #[arg(long, global = true, env = "ETCDCTL_KEY")]
    key: Option<String>,
    /// Skip server certificate verification (CAUTION: this option should be enabled only for testing purposes).
    #[arg(long = "insecure-skip-tls-verify", global = true, env = "ETCDCTL_INSECURE_SKIP_TLS_VERIFY", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    insecure_skip_tls_verify: bool,
    /// Disable transport security for client connections.
    #[arg(long = "insecure-transport", global = true, env = "ETCDCTL_INSECURE_TRANSPORT", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "true")]
    insecure_transport: bool,
    /// username[:password] for authentication (prompt if password is not supplied).
    #[arg(long, global = true, env = "ETCDCTL_USER")]
    user: Option<String>,
    /// password for authentication (if this option is used, --user option shouldn't include password).
    #[arg(long, global = true, env = "ETCDCTL_PASSWORD")]
    password: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Puts the given key into the store.
    Put(PutArgs),
    /// Gets the key or a range of keys.
    Get(GetArgs),
    /// Removes the specified key or range of keys [key, range_end).
    Del(DelArgs),
    /// Txn processes all the requests in one transaction.
    Txn {
        /// Input transaction in interactive mode.
        #[arg(short, long)]
        interactive: bool,
    },
    /// Compacts the event history in etcd.
    Compaction(CompactionArgs),
    /// Endpoint related commands.
    Endpoint {
        /// Use all endpoints from the cluster member list.
        #[arg(long, global = true)]
        cluster: bool,
        #[command(subcommand)]
        command: EndpointCommand,
    },
    /// Defragments the storage of the etcd members with given endpoints.
    Defrag {
        /// Use all endpoints from the cluster member list.
        #[arg(long)]
        cluster: bool,
    },
    /// Enable or disable authentication.
    Auth {
        #[command(subcommand)]
        command: command::auth::AuthCommand,
    },
    /// User related commands.
    User {
        #[command(subcommand)]
        command: command::auth::UserCommand,
    },
    /// Role related commands.
    Role {
        #[command(subcommand)]
        command: command::auth::RoleCommand,
    },
    /// Transfers leadership to another etcd cluster member.
    MoveLeader {
        /// The (hexadecimal) ID of the member to lead.
        transferee: Vec<String>,
    },
    /// Membership related commands.
    Member {
        #[command(subcommand)]
        command: command::member::MemberCommand,
    },
    /// Alarm related commands.
    Alarm {
        #[command(subcommand)]
        command: command::alarm::AlarmCommand,
    },
    /// Manages etcd node snapshots.
    Snapshot {
        #[command(subcommand)]
        command: command::snapshot::SnapshotCommand,
    },
    /// Watches events stream on keys or prefixes.
    Watch(command::watch::WatchArgs),
    /// Lease related commands.
    Lease {
        #[command(subcommand)]
        command: command::lease::LeaseCommand,
    },
    /// Prints the version of rctl.
    Version,
}

#[derive(Subcommand, Debug)]
enum EndpointCommand {
    /// Prints out the status of endpoints specified in `--endpoints` flag.
    Status,
    /// Checks the healthiness of endpoints specified in `--endpoints` flag.
    Health,
    /// Prints the KV history hash for each endpoint in --endpoints.
    Hashkv {
        /// Maximum revision to hash (default: all revisions).
        #[arg(long, default_value_t = 0)]
        rev: i64,
    },
}

/// Runs rctl with the process's arguments; the exit code follows etcdctl's.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_BAD_ARGS } else { 0 });
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(CtlError::new(EXIT_ERROR, e.to_string())),
    };
    match runtime.block_on(run(cli)) {
        Ok(out) => match out.flush() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(CtlError::new(EXIT_ERROR, e.to_string())),
        },
        Err((out, e)) => {
            let _ = out.flush();
            fail(e)
        }
    }
}

/// etcdctl's prompt for a --user without a password (read from stdin, echoed).
fn read_password() -> Result<String, CtlError> {
    eprint!("Password: ");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).map_err(|e| CtlError::new(EXIT_ERROR, e.to_string()))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

fn fail(e: CtlError) -> ExitCode {
    // An empty message: the command already reported on stderr (etcdctl's os.Exit cases).
    if !e.message.is_empty() {
        eprintln!("Error: {}", e.message);
    }
    ExitCode::from(e.code)
}

fn parse_duration(flag: &str, s: &str) -> Result<Duration, CtlError> {
    go_duration(s).ok_or_else(|| {
        CtlError::bad_args(format!(
            "invalid argument {s:?} for \"--{flag}\" flag: time: invalid duration {s:?}"
        ))
    })
}

/// Go's `time.ParseDuration` for the units a timeout uses.
fn go_duration(s: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let value: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let secs = match &rest[..u] {
            "h" => value * 3600.0,
            "m" => value * 60.0,
            "s" => value,
            "ms" => value / 1e3,
            "us" | "µs" => value / 1e6,
            "ns" => value / 1e9,
            "" if value == 0.0 => 0.0,
            _ => return None,
        };
        rest = &rest[u..];
        total += Duration::from_secs_f64(secs);
    }
    Some(total)
}

type RunResult = Result<Out, (Out, CtlError)>;

async fn run(cli: Cli) -> RunResult {
    let out = Out::default();
    match run_command(cli, out).await {
        Ok(out) => Ok(out),
        Err(e) => Err(e),
    }
}

async fn run_command(cli: Cli, mut out: Out) -> RunResult {
    macro_rules! tri {
        ($e:expr) => {
            match $e {
                Ok(v) => v,
                Err(e) => return Err((out, e)),
            }
        };
    }
    let format = tri!(Format::parse(&cli.write_out));
    let dial = tri!(parse_duration("dial-timeout", &cli.dial_timeout));
    let command_timeout = tri!(parse_duration("command-timeout", &cli.command_timeout));
    let endpoint = cli.endpoints.first().cloned().unwrap_or_else(|| "127.0.0.1:2379".into());
    let tls = tls::TlsFlags {
        cacert: cli.cacert.clone(),
        cert: cli.cert.clone(),
        key: cli.key.clone(),
        insecure_skip_tls_verify: cli.insecure_skip_tls_verify,
        insecure_transport: cli.insecure_transport,
    };
    let user = match (&cli.user, &cli.password) {
        (None, _) => None,
        (Some(u), Some(p)) => Some((u.clone(), p.clone())),
        (Some(u), None) => match u.split_once(':') {
            Some((name, password)) => Some((name.to_string(), password.to_string())),
            None => Some((u.clone(), tri!(read_password()))),
        },
    };
    let dialer = client::Dialer { dial_timeout: dial, command_timeout, tls, user };
    let client = || dialer.connect(&endpoint);
    let mut printer = Printer { format, value_only: false };
    match cli.command {
        Command::Put(args) => {
            let req = tri!(args.request(|| {
                let mut s = String::new();
                std::io::stdin().read_to_string(&mut s).ok().map(|_| s)
            }));
            let c = tri!(client().await);
            let resp = tri!(c.call(|| async { c.kv().put(req.clone()).await }).await);
            tri!(printer.put(&mut out, &resp));
        }
        Command::Get(args) => {
            let req = tri!(args.request());
            if args.print_value_only {
                if format != Format::Simple {
                    return Err((
                        out,
                        CtlError::bad_args("print-value-only is only for `--write-out=simple`"),
                    ));
                }
                printer.value_only = true;
            }
            if args.count_only && format != Format::Fields {
                return Err((out, CtlError::bad_args("--count-only is only for `--write-out=fields`")));
            }
            let c = tri!(client().await);
            let resp = tri!(c.call(|| async { c.kv().range(req.clone()).await }).await);
            tri!(printer.get(&mut out, &resp));
        }
        Command::Del(args) => {
            let req = tri!(args.request());
            let c = tri!(client().await);
            let resp = tri!(c.call(|| async { c.kv().delete_range(req.clone()).await }).await);
            tri!(printer.del(&mut out, &resp));
        }
        Command::Txn { interactive } => {
            let stdin = std::io::stdin();
            let req = tri!(command::txn::read_txn(&mut stdin.lock(), interactive));
            // etcdctl runs txn without the command timeout.
            let mut c = tri!(client().await);
            c.command_timeout = Duration::from_secs(u32::MAX as u64);
            let resp = tri!(c.call(|| async { c.kv().txn(req.clone()).await }).await);
            tri!(printer.txn(&mut out, &resp));
        }
        Command::Compaction(args) => {
            let req = tri!(args.request());
            let c = tri!(client().await);
            tri!(c.call(|| async { c.kv().compact(req).await }).await);
            out.line(&format!("compacted revision {}", req.revision));
        }
        Command::Endpoint { command, cluster } => {
            let endpoints = if cluster {
                let c = tri!(client().await);
                tri!(command::member::cluster_endpoints(&c).await)
            } else {
                cli.endpoints.clone()
            };
            let mut clients = Vec::new();
            for ep in &endpoints {
                clients.push((ep.clone(), tri!(dialer.connect(ep).await)));
            }
            match command {
                EndpointCommand::Status => {
                    let (list, failed) = command::endpoint::status(&clients).await;
                    printer.endpoint_status(&mut out, &list);
                    if failed {
                        return Err((out, CtlError::new(EXIT_ERROR, "endpoint status failed")));
                    }
                }
                EndpointCommand::Health => {
                    let list = command::endpoint::health(&clients).await;
                    printer.endpoint_health(&mut out, &list);
                    if list.iter().any(|h| !h.health) {
                        return Err((out, command::endpoint::unhealthy()));
                    }
                }
                EndpointCommand::Hashkv { rev } => {
                    let mut list = Vec::new();
                    let mut last_error = None;
                    for (ep, c) in &clients {
                        let req = rkv_proto::etcdserverpb::HashKvRequest { revision: rev };
                        match c.call(|| async { c.maintenance().hash_kv(req).await }).await {
                            Ok(r) => list.push((ep.clone(), r)),
                            Err(e) => {
                                eprintln!("Failed to get the hash of endpoint {ep} ({})", e.message);
                                last_error = Some(e);
                            }
                        }
                    }
                    match format {
                        Format::Json => {
                            let items: Vec<String> = list
                                .iter()
                                .map(|(ep, r)| {
                                    let hash = json::Obj::new()
                                        .obj("header", json::header(&r.header))
                                        .uint("hash", u64::from(r.hash))
                                        .int("compact_revision", r.compact_revision)
                                        .build();
                                    json::Obj::new()
                                        .raw("Endpoint", json::string(ep))
                                        .raw("HashKV", hash)
                                        .build()
                                })
                                .collect();
                            out.line(&format!("[{}]", items.join(",")));
                        }
                        _ => {
                            for (ep, r) in &list {
                                out.line(&format!("{ep}, {}", r.hash));
                            }
                        }
                    }
                    // etcdctl ends with the last endpoint's error.
                    if let Some(e) = last_error {
                        return Err((out, e));
                    }
                }
            }
        }
        Command::Snapshot {
            command: offline @ (SnapshotCommand::Restore(_) | SnapshotCommand::Status { .. }),
        } => {
            tri!(command::snapshot::run_offline(offline, format, &mut out));
        }
        Command::Snapshot { command } => {
            let mut c = tri!(client().await);
            c.command_timeout = Duration::from_secs(u32::MAX as u64);
            tri!(command::snapshot::run(command, &cli.endpoints, &c, &mut out).await);
        }
        Command::Alarm { command } => {
            let c = tri!(client().await);
            tri!(command::alarm::run(command, &c, &mut out).await);
        }
        Command::Auth { command } => {
            let c = tri!(client().await);
            tri!(command::auth::auth(command, &c, &mut out).await);
        }
        Command::User { command } => {
            let c = tri!(client().await);
            tri!(command::auth::user(command, &c, &mut out).await);
        }
        Command::Role { command } => {
            let c = tri!(client().await);
            tri!(command::auth::role(command, &c, &mut out).await);
        }
        Command::MoveLeader { transferee } => {
            let mut clients = Vec::new();
            for ep in &cli.endpoints {
                clients.push((ep.clone(), tri!(dialer.connect(ep).await)));
            }
            tri!(command::move_leader::run(&transferee, &clients, format, &mut out).await);
        }
        Command::Member { command } => {
            let c = tri!(client().await);
            tri!(command::member::run(command, &c, &printer, &mut out).await);
        }
        Command::Defrag { cluster } => {
            let endpoints = if cluster {
                let c = tri!(client().await);
                tri!(command::member::cluster_endpoints(&c).await)
            } else {
                cli.endpoints.clone()
            };
            let mut failed = false;
            for ep in &endpoints {
                let c = tri!(dialer.connect(ep).await);
                let req = rkv_proto::etcdserverpb::DefragmentRequest {};
                match c.call(|| async { c.maintenance().defragment(req).await }).await {
                    Ok(_) => out.line(&format!("Finished defragmenting etcd member[{ep}]")),
                    Err(e) => {
                        eprintln!("Failed to defragment etcd member[{ep}] ({})", e.message);
                        failed = true;
                    }
                }
            }
            if failed {
                return Err((out, CtlError::new(EXIT_ERROR, "")));
            }
        }
        Command::Watch(args) => {
            let mut c = tri!(client().await);
            c.command_timeout = Duration::from_secs(u32::MAX as u64);
            tri!(command::watch::run(args, &c, format).await);
        }
        Command::Lease { command } => {
            let c = tri!(client().await);
            tri!(command::lease::run(command, &c, format, &mut out).await);
        }
        Command::Version => {
            out.line(&format!("rctl version: {}", env!("CARGO_PKG_VERSION")));
            out.line("API version: 3.5");
        }
    }
    Ok(out)
}

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
        command: command::endpoint::EndpointCommand,
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

/// What a command printed before failing is still flushed, as etcdctl prints as it goes.
async fn run(cli: Cli) -> RunResult {
    let mut out = Out::default();
    match run_command(cli, &mut out).await {
        Ok(()) => Ok(out),
        Err(e) => Err((out, e)),
    }
}

/// Reads the global flags (all of them, before any command runs), then runs the command.
async fn run_command(cli: Cli, out: &mut Out) -> Result<(), CtlError> {
    let format = Format::parse(&cli.write_out)?;
    let eps = endpoints(&cli)?;
    let printer = Printer { format, value_only: false };
    match cli.command {
        Command::Put(args) => command::kv::put(args, &eps, &printer, out).await,
        Command::Get(args) => command::kv::get(args, &eps, format, out).await,
        Command::Del(args) => command::kv::del(args, &eps, &printer, out).await,
        Command::Txn { interactive } => command::txn::run(interactive, &eps, &printer, out).await,
        Command::Compaction(args) => command::kv::compaction(args, &eps, out).await,
        Command::Endpoint { command, cluster } => {
            command::endpoint::run(command, cluster, &eps, &printer, out).await
        }
        Command::Defrag { cluster } => command::defrag::run(cluster, &eps, out).await,
        Command::Snapshot {
            command: offline @ (SnapshotCommand::Restore(_) | SnapshotCommand::Status { .. }),
        } => command::snapshot::run_offline(offline, format, out),
        Command::Snapshot { command } => {
            command::snapshot::run(command, &eps.list, &eps.first_unbounded().await?, out).await
        }
        Command::Alarm { command } => command::alarm::run(command, &eps.first().await?, out).await,
        Command::Auth { command } => command::auth::auth(command, &eps.first().await?, out).await,
        Command::User { command } => command::auth::user(command, &eps.first().await?, out).await,
        Command::Role { command } => command::auth::role(command, &eps.first().await?, out).await,
        Command::MoveLeader { transferee } => {
            let clients = eps.each(&eps.list).await?;
            command::move_leader::run(&transferee, &clients, format, out).await
        }
        Command::Member { command } => {
            command::member::run(command, &eps.first().await?, &printer, out).await
        }
        Command::Watch(args) => command::watch::run(args, &eps.first_unbounded().await?, format).await,
        Command::Lease { command } => command::lease::run(command, &eps.first().await?, format, out).await,
        Command::Version => {
            out.line(&format!("rctl version: {}", env!("CARGO_PKG_VERSION")));
            out.line("API version: 3.5");
            Ok(())
        }
    }
}

/// The connection flags: timeouts, TLS, and --user (prompting for a password it lacks).
fn endpoints(cli: &Cli) -> Result<client::Endpoints, CtlError> {
    let dial_timeout = parse_duration("dial-timeout", &cli.dial_timeout)?;
    let command_timeout = parse_duration("command-timeout", &cli.command_timeout)?;
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
            None => Some((u.clone(), read_password()?)),
        },
    };
    let dialer = client::Dialer { dial_timeout, command_timeout, tls, user };
    Ok(client::Endpoints { list: cli.endpoints.clone(), dialer })
}

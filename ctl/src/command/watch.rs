//! `watch`: etcdctl's watch (non-interactive): prints each event as it arrives.

use clap::Args;
use rkv_proto::etcdserverpb::{
    watch_client::WatchClient, watch_request::RequestUnion, WatchCreateRequest, WatchRequest, WatchResponse,
};
use rkv_proto::mvccpb::{event::EventType, Event};
use tokio_stream::wrappers::ReceiverStream;

use super::kv::prefix_end;
use crate::client::Client;
use crate::error::{CtlError, EXIT_BAD_CONNECTION};
use crate::json;
use crate::print::{Format, Out};

/// etcdctl's ExitInterrupted.
const EXIT_INTERRUPTED: u8 = 5;

#[derive(Args, Debug)]
pub struct WatchArgs {
    /// Interactive mode.
    #[arg(short, long)]
    interactive: bool,
    /// Watch on a prefix if prefix is set.
    #[arg(long)]
    prefix: bool,
    /// Revision to start watching.
    #[arg(long, default_value_t = 0)]
    rev: i64,
    /// Get the previous key-value pair before the event happens.
    #[arg(long = "prev-kv")]
    prev_kv: bool,
    /// Get periodic watch progress notification from server.
    #[arg(long = "progress-notify")]
    progress_notify: bool,
    args: Vec<String>,
}

fn event_json(e: &Event) -> String {
    let kv = |kv: &Option<rkv_proto::mvccpb::KeyValue>| kv.as_ref().map(json::kv);
    json::Obj::new()
        .int("type", i64::from(e.r#type))
        .obj("kv", kv(&e.kv))
        .obj("prev_kv", kv(&e.prev_kv))
        .build()
}

/// clientv3's WatchResponse marshalled by Go's encoding/json (exported fields, no tags).
fn response_json(r: &WatchResponse) -> String {
    let header = json::header(&r.header).unwrap_or_else(|| "{}".into());
    let events: Vec<String> = r.events.iter().map(event_json).collect();
    let events = if events.is_empty() { "null".to_string() } else { format!("[{}]", events.join(",")) };
    json::Obj::new()
        .raw("Header", header)
        .raw("Events", events)
        .raw("CompactRevision", r.compact_revision.to_string())
        .raw("Canceled", r.canceled.to_string())
        .raw("Created", r.created.to_string())
        .build()
}

/// The create request of a `watch` command line.
fn create_request(a: &WatchArgs) -> Result<WatchCreateRequest, CtlError> {
    let Some(key) = a.args.first() else {
        return Err(CtlError::bad_args(
            "watch in non-interactive mode requires one or two arguments as key or prefix, with range end",
        ));
    };
    if a.args.len() > 2 || (a.prefix && a.args.len() > 1) {
        return Err(CtlError::bad_args("too many arguments"));
    }
    let mut key = key.as_bytes().to_vec();
    let mut range_end = a.args.get(1).map(|e| e.as_bytes().to_vec()).unwrap_or_default();
    if a.prefix {
        if key.is_empty() {
            key = vec![0];
            range_end = vec![0];
        } else {
            range_end = prefix_end(&key);
        }
    }
    Ok(WatchCreateRequest {
        key,
        range_end,
        start_revision: a.rev,
        progress_notify: a.progress_notify,
        prev_kv: a.prev_kv,
        ..Default::default()
    })
}

/// Prints one response as etcdctl does; false once the watch is over.
fn print_response(resp: &WatchResponse, format: Format, watchers: usize) -> Result<bool, CtlError> {
    if resp.created && !resp.canceled {
        return Ok(true);
    }
    let mut out = Out::default();
    if resp.canceled {
        let reason = if resp.compact_revision != 0 {
            "etcdserver: mvcc: required revision has been compacted".to_string()
        } else {
            resp.cancel_reason.clone()
        };
        eprintln!("watch was canceled ({reason})");
    }
    let progress = resp.events.is_empty() && !resp.canceled && resp.compact_revision == 0;
    // A requested progress response (watch ID -1) reaches every watch of the stream, as
    // clientv3 broadcasts it.
    let copies = if progress && resp.watch_id == -1 { watchers.max(1) } else { 1 };
    for _ in 0..copies {
        if progress {
            out.line(&format!("progress notify: {}", resp.header.map_or(0, |h| h.revision)));
        }
        match format {
            Format::Json => out.line(&response_json(resp)),
            _ => {
                for e in &resp.events {
                    out.line(if e.r#type == EventType::Delete as i32 { "DELETE" } else { "PUT" });
                    for kv in [&e.prev_kv, &e.kv].into_iter().flatten() {
                        if format == Format::K8s {
                            out.line(&crate::k8s::describe(&kv.key, &kv.value));
                        } else {
                            out.raw_line(&kv.key);
                            out.raw_line(&kv.value);
                        }
                    }
                }
            }
        }
    }
    out.flush().map_err(|e| CtlError::new(crate::error::EXIT_ERROR, e.to_string()))?;
    Ok(!resp.canceled)
}

/// `watch -i`: one watch stream; stdin lines `watch [options] key [range_end]` add watches,
/// `progress` asks for progress.
async fn interactive(c: &Client, format: Format) -> Result<(), CtlError> {
    use clap::Parser;
    #[derive(Parser, Debug)]
    #[command(no_binary_name = true)]
    struct Line {
        #[command(subcommand)]
        cmd: LineCmd,
    }
    #[derive(clap::Subcommand, Debug)]
    enum LineCmd {
        Watch(WatchArgs),
        Progress,
    }
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let mut stream = WatchClient::new(c.channel())
        .watch(ReceiverStream::new(rx))
        .await
        .map_err(|e| CtlError::new(EXIT_BAD_CONNECTION, crate::error::status_message(&e)))?
        .into_inner();
    let (line_tx, mut lines) = tokio::sync::mpsc::channel::<String>(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lines().map_while(Result::ok) {
            if line_tx.blocking_send(line).is_err() {
                return;
            }
        }
    });
    let mut watchers = 0usize;
    loop {
        tokio::select! {
            line = lines.recv() => {
                let Some(line) = line else {
                    return Err(CtlError::new(
                        crate::error::EXIT_INVALID_INPUT,
                        "error reading watch request line: EOF",
                    ));
                };
                let Some(args) = super::txn::argify(&line) else { continue };
                if args.is_empty() {
                    continue;
                }
                if args[0] != "watch" && args[0] != "progress" {
                    eprintln!("Invalid command {line} (only support watch)");
                    continue;
                }
                if args[0] == "watch" && args.len() < 2 {
                    eprintln!("Invalid command {line} (command type or key is not provided)");
                    continue;
                }
                let request = match Line::try_parse_from(&args) {
                    Ok(Line { cmd: LineCmd::Watch(a) }) => match create_request(&a) {
                        Ok(c) => RequestUnion::CreateRequest(c),
                        Err(e) => {
                            eprintln!("Invalid command {line} ({})", e.message);
                            continue;
                        }
                    },
                    Ok(Line { cmd: LineCmd::Progress }) => RequestUnion::ProgressRequest(Default::default()),
                    Err(e) => {
                        eprintln!("Invalid command {line} ({})", e.kind());
                        continue;
                    }
                };
                if matches!(request, RequestUnion::CreateRequest(_)) {
                    watchers += 1;
                }
                if tx.send(WatchRequest { request_union: Some(request) }).await.is_err() {
                    break;
                }
            }
            resp = stream.message() => {
                match resp {
                    Ok(Some(resp)) => {
                        if !print_response(&resp, format, watchers)? {
                            watchers = watchers.saturating_sub(1);
                        }
                    }
                    _ => break,
                }
            }
        }
    }
    Err(CtlError::new(EXIT_INTERRUPTED, "watch is canceled by the server"))
}

pub async fn run(a: WatchArgs, c: &Client, format: Format) -> Result<(), CtlError> {
    if a.interactive {
        return interactive(c, format).await;
    }
    let create = create_request(&a)?;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let _ = tx.send(WatchRequest { request_union: Some(RequestUnion::CreateRequest(create)) }).await;
    let mut stream = WatchClient::new(c.channel())
        .watch(ReceiverStream::new(rx))
        .await
        .map_err(|e| CtlError::new(EXIT_BAD_CONNECTION, crate::error::status_message(&e)))?
        .into_inner();
    while let Ok(Some(resp)) = stream.message().await {
        if !print_response(&resp, format, 1)? {
            break;
        }
    }
    Err(CtlError::new(EXIT_INTERRUPTED, "watch is canceled by the server"))
}

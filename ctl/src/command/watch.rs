//! `watch`: etcdctl's watch (non-interactive): prints each event as it arrives.

use clap::Args;
use rkv_proto::etcdserverpb::{
    watch_client::WatchClient, watch_request::RequestUnion, WatchCreateRequest, WatchRequest, WatchResponse,
};
use rkv_proto::mvccpb::{event::EventType, Event};
use tokio_stream::wrappers::ReceiverStream;

use super::kv::prefix_end;
use crate::client::Client;
use crate::error::{CtlError, EXIT_BAD_CONNECTION, EXIT_BAD_FEATURE};
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

pub async fn run(a: WatchArgs, c: &Client, format: Format) -> Result<(), CtlError> {
    if a.interactive {
        return Err(CtlError::new(EXIT_BAD_FEATURE, "rctl does not support interactive watch yet"));
    }
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
    let create = WatchCreateRequest {
        key,
        range_end,
        start_revision: a.rev,
        progress_notify: a.progress_notify,
        prev_kv: a.prev_kv,
        ..Default::default()
    };
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let _ = tx.send(WatchRequest { request_union: Some(RequestUnion::CreateRequest(create)) }).await;
    let mut stream = WatchClient::new(c.channel())
        .watch(ReceiverStream::new(rx))
        .await
        .map_err(|e| CtlError::new(EXIT_BAD_CONNECTION, crate::error::status_message(&e)))?
        .into_inner();
    while let Ok(Some(resp)) = stream.message().await {
        if resp.created && !resp.canceled {
            continue;
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
        if progress {
            out.line(&format!("progress notify: {}", resp.header.map_or(0, |h| h.revision)));
        }
        match format {
            Format::Json => out.line(&response_json(&resp)),
            _ => {
                for e in &resp.events {
                    out.line(if e.r#type == EventType::Delete as i32 { "DELETE" } else { "PUT" });
                    for kv in [&e.prev_kv, &e.kv].into_iter().flatten() {
                        out.raw_line(&kv.key);
                        out.raw_line(&kv.value);
                    }
                }
            }
        }
        out.flush().map_err(|e| CtlError::new(crate::error::EXIT_ERROR, e.to_string()))?;
        if resp.canceled {
            break;
        }
    }
    Err(CtlError::new(EXIT_INTERRUPTED, "watch is canceled by the server"))
}

//! `endpoint status | health | hashkv`, over every endpoint given (or, with --cluster, every
//! member's client URL).

use std::time::Instant;

use clap::Subcommand;
use rkv_proto::etcdserverpb::{
    AlarmRequest, HashKvRequest, HashKvResponse, RangeRequest, StatusRequest, StatusResponse,
};

use crate::client::{Client, Endpoints};
use crate::error::{CtlError, EXIT_ERROR};
use crate::json;
use crate::print::{go_duration, Format, Health, Out, Printer};

#[derive(Subcommand, Debug)]
pub enum EndpointCommand {
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

/// The endpoints a multi-endpoint command visits: the members' client URLs with --cluster
/// (asked of the first endpoint), else --endpoints.
pub async fn targets(eps: &Endpoints, cluster: bool) -> Result<Vec<String>, CtlError> {
    if cluster {
        let c = eps.first().await?;
        super::member::cluster_endpoints(&c).await
    } else {
        Ok(eps.list.clone())
    }
}

pub async fn run(
    command: EndpointCommand,
    cluster: bool,
    eps: &Endpoints,
    printer: &Printer,
    out: &mut Out,
) -> Result<(), CtlError> {
    let clients = eps.each(&targets(eps, cluster).await?).await?;
    match command {
        EndpointCommand::Status => {
            let (list, failed) = status(&clients).await;
            printer.endpoint_status(out, &list);
            if failed {
                return Err(CtlError::new(EXIT_ERROR, "endpoint status failed"));
            }
        }
        EndpointCommand::Health => {
            let list = health(&clients).await;
            printer.endpoint_health(out, &list);
            if list.iter().any(|h| !h.health) {
                return Err(unhealthy());
            }
        }
        EndpointCommand::Hashkv { rev } => hashkv(&clients, rev, printer.format, out).await?,
    }
    Ok(())
}

pub async fn status(clients: &[(String, Client)]) -> (Vec<(String, StatusResponse)>, bool) {
    let mut list = Vec::new();
    let mut failed = false;
    for (ep, client) in clients {
        match client.call(|| async { client.maintenance().status(StatusRequest {}).await }).await {
            Ok(resp) => list.push((ep.clone(), resp)),
            Err(e) => {
                eprintln!("Failed to get the status of endpoint {ep} ({e})");
                failed = true;
            }
        }
    }
    (list, failed)
}

/// etcdctl's check: a linearizable get of "health" commits through the cluster, then no alarm
/// may be active.
pub async fn health(clients: &[(String, Client)]) -> Vec<Health> {
    let mut list = Vec::new();
    for (ep, client) in clients {
        let start = Instant::now();
        let get = RangeRequest { key: b"health".to_vec(), ..Default::default() };
        let result = client.call(|| async { client.kv().range(get.clone()).await }).await;
        let mut h = Health {
            endpoint: ep.clone(),
            health: false,
            took: go_duration(start.elapsed()),
            error: String::new(),
        };
        match result {
            Ok(_) => h.health = true,
            Err(e) if e.message == "etcdserver: permission denied" => h.health = true,
            Err(e) => h.error = e.message,
        }
        if h.health {
            match client.call(|| async { client.maintenance().alarm(AlarmRequest::default()).await }).await {
                Ok(resp) if !resp.alarms.is_empty() => {
                    h.health = false;
                    h.error = "Active Alarm(s): ".to_string();
                    for a in &resp.alarms {
                        h.error.push_str(match a.alarm {
                            1 => "NOSPACE ",
                            2 => "CORRUPT ",
                            _ => "UNKNOWN ",
                        });
                    }
                }
                Ok(_) => {}
                Err(_) => {
                    h.health = false;
                    h.error = "Unable to fetch the alarm list".to_string();
                }
            }
        }
        list.push(h);
    }
    list
}

/// Prints the hash of every endpoint that answered; etcdctl ends with the last endpoint's error.
async fn hashkv(
    clients: &[(String, Client)],
    rev: i64,
    format: Format,
    out: &mut Out,
) -> Result<(), CtlError> {
    let mut list = Vec::new();
    let mut last_error = None;
    for (ep, c) in clients {
        let req = HashKvRequest { revision: rev };
        match c.call(|| async { c.maintenance().hash_kv(req).await }).await {
            Ok(r) => list.push((ep.clone(), r)),
            Err(e) => {
                eprintln!("Failed to get the hash of endpoint {ep} ({})", e.message);
                last_error = Some(e);
            }
        }
    }
    match format {
        Format::Json => out.line(&hashkv_json(&list)),
        _ => {
            for (ep, r) in &list {
                out.line(&format!("{ep}, {}", r.hash));
            }
        }
    }
    match last_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn hashkv_json(list: &[(String, HashKvResponse)]) -> String {
    let items: Vec<String> = list
        .iter()
        .map(|(ep, r)| {
            let hash = json::Obj::new()
                .obj("header", json::header(&r.header))
                .uint("hash", u64::from(r.hash))
                .int("compact_revision", r.compact_revision)
                .build();
            json::Obj::new().raw("Endpoint", json::string(ep)).raw("HashKV", hash).build()
        })
        .collect();
    format!("[{}]", items.join(","))
}

pub fn unhealthy() -> CtlError {
    CtlError::new(EXIT_ERROR, "unhealthy cluster")
}

//! `endpoint status` and `endpoint health`, over every endpoint given.

use std::time::Instant;

use rkv_proto::etcdserverpb::{AlarmRequest, RangeRequest, StatusRequest, StatusResponse};

use crate::client::Client;
use crate::error::{CtlError, EXIT_ERROR};
use crate::print::{go_duration, Health};

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

pub fn unhealthy() -> CtlError {
    CtlError::new(EXIT_ERROR, "unhealthy cluster")
}

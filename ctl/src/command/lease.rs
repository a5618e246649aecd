//! `lease grant | revoke | timetolive | list | keep-alive`: etcdctl's lease commands.

use clap::{Args, Subcommand};
use rkv_proto::etcdserverpb::{
    lease_client::LeaseClient, LeaseGrantRequest, LeaseKeepAliveRequest, LeaseLeasesRequest,
    LeaseRevokeRequest, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse, ResponseHeader,
};
use tokio_stream::wrappers::ReceiverStream;

use crate::client::{Client, Svc};
use crate::error::{CtlError, EXIT_BAD_CONNECTION, EXIT_ERROR};
use crate::goquote::quote;
use crate::json;
use crate::print::{Format, Out};

#[derive(Subcommand, Debug)]
pub enum LeaseCommand {
    /// Creates leases.
    Grant { args: Vec<String> },
    /// Revokes leases.
    Revoke { args: Vec<String> },
    /// Get lease information.
    Timetolive(TimeToLiveArgs),
    /// List all active leases.
    List,
    /// Keeps leases alive (renew).
    #[command(name = "keep-alive")]
    KeepAlive(KeepAliveArgs),
}

#[derive(Args, Debug)]
pub struct TimeToLiveArgs {
    /// Get keys attached to this lease.
    #[arg(long)]
    keys: bool,
    args: Vec<String>,
}

#[derive(Args, Debug)]
pub struct KeepAliveArgs {
    /// Resets the keep-alive time to its original value and exits immediately.
    #[arg(long)]
    once: bool,
    args: Vec<String>,
}

fn lease_id(arg: &str) -> Result<i64, CtlError> {
    i64::from_str_radix(arg, 16).map_err(|_| {
        CtlError::bad_args(format!(
            "bad lease ID arg (strconv.ParseInt: parsing {}: invalid syntax), expecting ID in Hex",
            quote(arg.as_bytes())
        ))
    })
}

/// The header fields clientv3's lease responses embed (flattened in JSON).
fn header_fields(h: &Option<ResponseHeader>) -> json::Obj {
    let h = h.unwrap_or_default();
    json::Obj::new()
        .uint("cluster_id", h.cluster_id)
        .uint("member_id", h.member_id)
        .int("revision", h.revision)
        .uint("raft_term", h.raft_term)
}

fn fields_header(out: &mut Out, h: &Option<ResponseHeader>) {
    crate::print::Printer::header_fields(out, h);
}

pub async fn run(cmd: LeaseCommand, c: &Client, format: Format, out: &mut Out) -> Result<(), CtlError> {
    match cmd {
        LeaseCommand::Grant { args } => grant(&args, c, format, out).await,
        LeaseCommand::Revoke { args } => revoke(&args, c, format, out).await,
        LeaseCommand::Timetolive(a) => time_to_live(a, c, format, out).await,
        LeaseCommand::List => list(c, format, out).await,
        LeaseCommand::KeepAlive(a) => keep_alive(a, c, out).await,
    }
}

fn lease_client(c: &Client) -> LeaseClient<Svc> {
    LeaseClient::new(c.channel())
}

async fn grant(args: &[String], c: &Client, format: Format, out: &mut Out) -> Result<(), CtlError> {
    let Some(ttl) = args.first() else {
        return Err(CtlError::bad_args("lease grant command needs TTL argument"));
    };
    let ttl: i64 = ttl.parse().map_err(|_| {
        CtlError::bad_args(format!(
            "bad TTL (strconv.ParseInt: parsing {}: invalid syntax)",
            quote(ttl.as_bytes())
        ))
    })?;
    let r = c
        .call(|| async { lease_client(c).lease_grant(LeaseGrantRequest { ttl, id: 0 }).await })
        .await
        .map_err(|e| CtlError::new(EXIT_ERROR, format!("failed to grant lease ({})", e.message)))?;
    match format {
        Format::Json => out.line(
            &header_fields(&r.header)
                .raw("ID", r.id.to_string())
                .raw("TTL", r.ttl.to_string())
                .raw("Error", json::string(&r.error))
                .build(),
        ),
        Format::Fields => {
            fields_header(out, &r.header);
            out.line(&format!("\"ID\" : {}", r.id));
            out.line(&format!("\"TTL\" : {}", r.ttl));
        }
        _ => out.line(&format!("lease {:016x} granted with TTL({}s)", r.id, r.ttl)),
    }
    Ok(())
}

async fn revoke(args: &[String], c: &Client, format: Format, out: &mut Out) -> Result<(), CtlError> {
    if args.len() != 1 {
        return Err(CtlError::bad_args("lease revoke command needs 1 argument"));
    }
    let id = lease_id(&args[0])?;
    let r = c
        .call(|| async { lease_client(c).lease_revoke(LeaseRevokeRequest { id }).await })
        .await
        .map_err(|e| CtlError::new(EXIT_ERROR, format!("failed to revoke lease ({})", e.message)))?;
    match format {
        Format::Json => out.line(&header_fields(&r.header).build()),
        Format::Fields => fields_header(out, &r.header),
        _ => out.line(&format!("lease {id:016x} revoked")),
    }
    Ok(())
}

async fn time_to_live(a: TimeToLiveArgs, c: &Client, format: Format, out: &mut Out) -> Result<(), CtlError> {
    let Some(arg) = a.args.first() else {
        return Err(CtlError::bad_args("lease timetolive command needs lease ID as argument"));
    };
    let id = lease_id(arg)?;
    let keys = a.keys;
    let r = c
        .call(|| async { lease_client(c).lease_time_to_live(LeaseTimeToLiveRequest { id, keys }).await })
        .await
        .map_err(|e| CtlError::new(EXIT_BAD_CONNECTION, e.message))?;
    match format {
        Format::Json => out.line(&time_to_live_json(&r, keys)),
        Format::Fields => {
            fields_header(out, &r.header);
            out.line(&format!("\"ID\" : {}", r.id));
            out.line(&format!("\"TTL\" : {}", r.ttl));
            out.line(&format!("\"GrantedTTL\" : {}", r.granted_ttl));
            for k in &r.keys {
                out.line(&format!("\"Key\" : {}", quote(k)));
            }
        }
        _ if r.granted_ttl == 0 && r.ttl == -1 => out.line(&format!("lease {id:016x} already expired")),
        _ => {
            let mut txt =
                format!("lease {:016x} granted with TTL({}s), remaining({}s)", r.id, r.granted_ttl, r.ttl);
            if keys {
                let ks: Vec<String> =
                    r.keys.iter().map(|k| String::from_utf8_lossy(k).into_owned()).collect();
                txt.push_str(&format!(", attached keys([{}])", ks.join(" ")));
            }
            out.line(&txt);
        }
    }
    Ok(())
}

/// etcdctl's JSON for timetolive: keys in base64, `null` unless --keys was given.
fn time_to_live_json(r: &LeaseTimeToLiveResponse, keys: bool) -> String {
    let ks = if keys {
        let items: Vec<String> = r
            .keys
            .iter()
            .map(|k| format!("\"{}\"", base64::Engine::encode(&base64::engine::general_purpose::STANDARD, k)))
            .collect();
        format!("[{}]", items.join(","))
    } else {
        "null".to_string()
    };
    header_fields(&r.header)
        .raw("id", r.id.to_string())
        .raw("ttl", r.ttl.to_string())
        .raw("granted-ttl", r.granted_ttl.to_string())
        .raw("keys", ks)
        .build()
}

async fn list(c: &Client, format: Format, out: &mut Out) -> Result<(), CtlError> {
    let r = c
        .call(|| async { lease_client(c).lease_leases(LeaseLeasesRequest {}).await })
        .await
        .map_err(|e| CtlError::new(EXIT_ERROR, format!("failed to list leases ({})", e.message)))?;
    match format {
        Format::Json => {
            let items: Vec<String> = r.leases.iter().map(|l| format!("{{\"id\":{}}}", l.id)).collect();
            out.line(&header_fields(&r.header).raw("leases", format!("[{}]", items.join(","))).build());
        }
        Format::Fields => {
            fields_header(out, &r.header);
            for l in &r.leases {
                out.line(&format!("\"ID\" : {}", l.id));
            }
        }
        _ => {
            out.line(&format!("found {} leases", r.leases.len()));
            for l in &r.leases {
                out.line(&format!("{:016x}", l.id));
            }
        }
    }
    Ok(())
}

/// Renews until the lease is gone (or once with --once); each line is flushed as it is printed.
async fn keep_alive(a: KeepAliveArgs, c: &Client, out: &mut Out) -> Result<(), CtlError> {
    let Some(arg) = a.args.first() else {
        return Err(CtlError::bad_args("lease keep-alive command needs lease ID as argument"));
    };
    let id = lease_id(arg)?;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut stream = lease_client(c)
        .lease_keep_alive(ReceiverStream::new(rx))
        .await
        .map_err(|e| CtlError::new(EXIT_BAD_CONNECTION, crate::error::status_message(&e)))?
        .into_inner();
    loop {
        if tx.send(LeaseKeepAliveRequest { id }).await.is_err() {
            break;
        }
        let resp = match stream.message().await {
            Ok(Some(r)) => r,
            _ => break,
        };
        if resp.ttl <= 0 {
            if a.once {
                return Err(CtlError::new(EXIT_BAD_CONNECTION, "etcdserver: requested lease not found"));
            }
            out.line(&format!("lease {id:016x} expired or revoked."));
            break;
        }
        out.line(&format!("lease {id:016x} keepalived with TTL({})", resp.ttl));
        if a.once {
            break;
        }
        // Flush each line as etcdctl does, then renew at a third of the TTL.
        std::mem::take(out).flush().map_err(|e| CtlError::new(EXIT_ERROR, e.to_string()))?;
        tokio::time::sleep(std::time::Duration::from_secs((resp.ttl / 3).max(1) as u64)).await;
    }
    Ok(())
}

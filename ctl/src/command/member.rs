//! `member list|add|remove|update|promote`, with etcdctl 3.5's arguments and output.

use clap::Subcommand;
use rkv_proto::etcdserverpb::{
    cluster_client::ClusterClient, Member, MemberAddRequest, MemberListRequest, MemberPromoteRequest,
    MemberRemoveRequest, MemberUpdateRequest, ResponseHeader,
};

use crate::client::Client;
use crate::error::{CtlError, EXIT_ERROR};
use crate::json;
use crate::print::{Format, Out, Printer};

#[derive(Subcommand, Debug)]
pub enum MemberCommand {
    /// Lists all members in the cluster.
    List,
    /// Adds a member into the cluster.
    Add {
        /// The new member's name.
        name: Option<String>,
        /// Comma separated peer URLs for the new member.
        #[arg(long = "peer-urls", default_value = "")]
        peer_urls: String,
        /// Indicates if the new member is raft learner.
        #[arg(long)]
        learner: bool,
    },
    /// Removes a member from the cluster.
    Remove {
        /// The member ID (hex).
        id: Option<String>,
    },
    /// Updates a member in the cluster.
    Update {
        /// The member ID (hex).
        id: Option<String>,
        /// Comma separated peer URLs for the updated member.
        #[arg(long = "peer-urls", default_value = "")]
        peer_urls: String,
    },
    /// Promotes a non-voting member in the cluster.
    Promote {
        /// The member ID (hex).
        id: Option<String>,
    },
}

/// etcdctl's hex member ID argument.
fn member_id(arg: Option<String>) -> Result<u64, CtlError> {
    let arg = arg.ok_or_else(|| CtlError::bad_args("member ID is not provided"))?;
    u64::from_str_radix(&arg, 16).map_err(|_| {
        CtlError::bad_args(format!(
            "bad member ID arg (strconv.ParseUint: parsing {arg:?}: invalid syntax), expecting ID in Hex"
        ))
    })
}

/// etcdctl checks peer URLs before sending them (etcd's `types.NewURLs`).
fn peer_urls(flag: &str) -> Result<Vec<String>, CtlError> {
    if flag.is_empty() {
        return Err(CtlError::bad_args("member peer urls not provided"));
    }
    let mut urls = Vec::new();
    for url in flag.split(',').map(str::trim) {
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(CtlError::new(
                EXIT_ERROR,
                format!("URL scheme must be http, https, unix, or unixs: {url}"),
            ));
        };
        if !["http", "https", "unix", "unixs"].contains(&scheme) {
            return Err(CtlError::new(
                EXIT_ERROR,
                format!("URL scheme must be http, https, unix, or unixs: {url}"),
            ));
        }
        let (host, path) = rest.split_once('/').map_or((rest, ""), |(h, p)| (h, p));
        if host.rsplit_once(':').is_none() {
            return Err(CtlError::new(
                EXIT_ERROR,
                format!("URL address does not have the form \"host:port\": {url}"),
            ));
        }
        if !path.is_empty() || rest.ends_with('/') {
            return Err(CtlError::new(EXIT_ERROR, format!("URL must not contain a path: {url}")));
        }
        urls.push(url.to_string());
    }
    urls.sort();
    Ok(urls)
}

fn cluster_id(h: &Option<ResponseHeader>) -> u64 {
    h.as_ref().map_or(0, |h| h.cluster_id)
}

/// The response of a membership change as etcdctl's json printer writes it.
fn change_json(header: &Option<ResponseHeader>, member: Option<&Member>, members: &[Member]) -> String {
    let mut o = json::Obj::new().obj("header", json::header(header));
    if let Some(m) = member {
        o = o.raw("member", json::member(m));
    }
    o.list("members", members.iter().map(json::member).collect()).build()
}

pub async fn run(
    command: MemberCommand,
    c: &Client,
    printer: &Printer,
    out: &mut Out,
) -> Result<(), CtlError> {
    let cluster = || ClusterClient::new(c.channel());
    let json = printer.format == Format::Json;
    match command {
        MemberCommand::List => {
            let req = MemberListRequest { linearizable: false };
            let resp = c.call(|| async { cluster().member_list(req).await }).await?;
            printer.member_list(out, &resp)?;
        }
        MemberCommand::Add { name, peer_urls: urls, learner } => {
            let name = name.ok_or_else(|| CtlError::bad_args("member name not provided"))?;
            let urls = peer_urls(&urls)?;
            let req = MemberAddRequest { peer_ur_ls: urls, is_learner: learner };
            let resp = c.call(|| async { cluster().member_add(req.clone()).await }).await?;
            let new = resp.member.clone().unwrap_or_default();
            if json {
                out.line(&change_json(&resp.header, Some(&new), &resp.members));
                return Ok(());
            }
            // etcdctl 3.5.1 says "added to cluster" for learners too.
            out.line(&format!("Member {:16x} added to cluster {:16x}", new.id, cluster_id(&resp.header)));
            let mut conf = Vec::new();
            for m in &resp.members {
                for u in &m.peer_ur_ls {
                    let n = if m.id == new.id { &name } else { &m.name };
                    conf.push(format!("{n}={u}"));
                }
            }
            out.line("");
            out.line(&format!("ETCD_NAME={name:?}"));
            out.line(&format!("ETCD_INITIAL_CLUSTER={:?}", conf.join(",")));
            out.line(&format!("ETCD_INITIAL_ADVERTISE_PEER_URLS={:?}", new.peer_ur_ls.join(",")));
            out.line("ETCD_INITIAL_CLUSTER_STATE=\"existing\"");
        }
        MemberCommand::Remove { id } => {
            let id = member_id(id)?;
            let resp = c.call(|| async { cluster().member_remove(MemberRemoveRequest { id }).await }).await?;
            if json {
                out.line(&change_json(&resp.header, None, &resp.members));
            } else {
                out.line(&format!("Member {id:16x} removed from cluster {:16x}", cluster_id(&resp.header)));
            }
        }
        MemberCommand::Update { id, peer_urls: urls } => {
            let id = member_id(id)?;
            let req = MemberUpdateRequest { id, peer_ur_ls: peer_urls(&urls)? };
            let resp = c.call(|| async { cluster().member_update(req.clone()).await }).await?;
            if json {
                out.line(&change_json(&resp.header, None, &resp.members));
            } else {
                out.line(&format!("Member {id:16x} updated in cluster {:16x}", cluster_id(&resp.header)));
            }
        }
        MemberCommand::Promote { id } => {
            let id = member_id(id)?;
            let resp =
                c.call(|| async { cluster().member_promote(MemberPromoteRequest { id }).await }).await?;
            if json {
                out.line(&change_json(&resp.header, None, &resp.members));
            } else {
                out.line(&format!("Member {id:16x} promoted in cluster {:16x}", cluster_id(&resp.header)));
            }
        }
    }
    Ok(())
}

/// The client URLs of every member (`--cluster`); etcdctl names endpoints by these URLs.
pub async fn cluster_endpoints(c: &Client) -> Result<Vec<String>, CtlError> {
    let req = MemberListRequest { linearizable: false };
    let resp = c.call(|| async { ClusterClient::new(c.channel()).member_list(req).await }).await?;
    let mut endpoints = Vec::new();
    for m in &resp.members {
        for u in &m.client_ur_ls {
            endpoints.push(u.clone());
        }
    }
    Ok(endpoints)
}

//! `move-leader <transferee-id>`: etcdctl finds the leader among the endpoints given and asks
//! it to hand leadership to the member with that (hex) ID.

use rkv_proto::etcdserverpb::{MoveLeaderRequest, StatusRequest};

use crate::client::Client;
use crate::error::{CtlError, EXIT_BAD_ARGS};
use crate::print::{Format, Out};

pub async fn run(
    args: &[String],
    clients: &[(String, Client)],
    format: Format,
    out: &mut Out,
) -> Result<(), CtlError> {
    let [transferee] = args else {
        return Err(CtlError::new(EXIT_BAD_ARGS, "move-leader command needs 1 argument"));
    };
    let target = u64::from_str_radix(transferee, 16).map_err(|_| {
        CtlError::new(EXIT_BAD_ARGS, format!("strconv.ParseUint: parsing {transferee:?}: invalid syntax"))
    })?;
    let mut leader = None;
    for (_, c) in clients {
        let status = c.call(|| async { c.maintenance().status(StatusRequest {}).await }).await?;
        if status.header.as_ref().is_some_and(|h| h.member_id == status.leader) {
            leader = Some((status.leader, c));
        }
    }
    let Some((leader_id, c)) = leader else {
        let eps: Vec<&str> = clients.iter().map(|(ep, _)| ep.as_str()).collect();
        return Err(CtlError::new(EXIT_BAD_ARGS, format!("no leader endpoint given at [{}]", eps.join(" "))));
    };
    let req = MoveLeaderRequest { target_id: target };
    let resp = c.call(|| async { c.maintenance().move_leader(req).await }).await?;
    match format {
        Format::Json => {
            let header = crate::json::header(&resp.header).unwrap_or_else(|| "null".into());
            out.line(&format!("{{\"header\":{header}}}"));
        }
        _ => out.line(&format!("Leadership transferred from {leader_id:x} to {target:x}")),
    }
    Ok(())
}

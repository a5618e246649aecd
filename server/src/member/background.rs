//! The member's own services, running beside the gRPC ones: following elections, publishing
//! this member's attributes, and expiring leases (on the leader). Auto compaction is in
//! `compactor`.

use std::time::Duration;

use rkv_proto::etcdserverpb::LeaseRevokeRequest;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::apply::Command;
use crate::error::ServerError;
use crate::state::{MemberState, Shared};

const LEASE_EXPIRY_CHECK: Duration = Duration::from_millis(250);

/// Follows elections: the term on watch responses, lease deadlines renewed when this member
/// becomes the leader (etcd's `Promote`), and the leader changes metric.
pub(super) async fn follow_leadership(state: Shared, mut stop: watch::Receiver<bool>) {
    let mut metrics = state.node.raft.metrics();
    let mut was_leader = false;
    let mut last_leader = None;
    loop {
        let (term, leader, current) = {
            let m = metrics.borrow_and_update();
            let leader = m.state == openraft::ServerState::Leader;
            (crate::raft::node::etcd_term(m.current_term), leader, m.current_leader)
        };
        // etcd counts a change each time a leader is known and differs from the last one.
        if current.is_some() && current != last_leader {
            state.metrics.server.leader_changes.inc();
            last_leader = current;
        }
        state.hub.set_term(term);
        if leader && !was_leader {
            info!(term, "became the leader; lease deadlines renewed");
            state.lessor.promote();
        }
        was_leader = leader;
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() { return },
            _ = stop.changed() => return,
        }
    }
}

/// Publishes this member's name and client URLs through the log (etcd's `publish`), retrying
/// until the cluster has a leader to take it.
pub(super) async fn publish(state: &MemberState) {
    let attrs = rkv_proto::rkvpb::MemberAttributes {
        member_id: state.identity.member_id,
        name: state.config.name.clone(),
        client_urls: state.config.advertise_client_urls.clone(),
    };
    let key = crate::apply::member_key(attrs.member_id);
    // Publishing again is harmless (the same attributes), so a read error only costs a write.
    match state.store.cluster_get(&key) {
        Ok(current) if current.as_deref() == Some(prost::Message::encode_to_vec(&attrs).as_slice()) => return,
        Ok(_) => {}
        Err(e) => warn!(error = %e, "cannot read this member's published attributes; publishing them"),
    }
    loop {
        match state.node.propose(Command::Publish(attrs.clone())).await {
            Ok(_) => {
                info!("published this member's name and client URLs");
                return;
            }
            Err(e) => warn!(error = %e, "cannot publish member attributes yet"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Revokes expired leases through the log, as etcd's leader does, checking four times a
/// second so that keys go within about 250 ms of their deadline (docs/compatibility.md).
pub(super) async fn expire_leases(shared: Shared, mut stop: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(LEASE_EXPIRY_CHECK);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => return,
        }
        if !shared.node.is_leader() {
            continue;
        }
        for id in shared.lessor.expired() {
            let revoke = Command::LeaseRevoke(LeaseRevokeRequest { id });
            match shared.node.propose(revoke).await {
                Ok(_) => {
                    shared.metrics.server.lease_expired.inc();
                    tracing::info!(lease = %format!("{id:016x}"), "lease expired and revoked")
                }
                Err(ServerError::LeaseNotFound) => {}
                Err(e) => tracing::warn!(lease = id, error = %e, "cannot revoke an expired lease"),
            }
        }
    }
}

//! Leadership transfer (etcd's MoveLeader). openraft 0.9 has no transfer API, so the leader
//! does what raft's TransferLeader does with the tools it has:
//!
//! 1. it holds new proposals back and stops its heartbeats, so nothing more renews the
//!    followers' leader lease;
//! 2. it waits until the transferee has every entry of its log;
//! 3. it asks the transferee to campaign now (`TimeoutNow` on the peer port), repeating the
//!    request until the transferee leads: a campaign wins once a quorum's leases have run out,
//!    and the transferee, being up to date and first to ask, gets their votes.
//!
//! Proposals held back during the transfer go to the new leader when it ends (they were in
//! no log yet), or into this member's log if the transfer fails.

use std::sync::atomic::Ordering;
use std::time::Duration;

use rkv_proto::rkvpb::RaftMessage;
use tokio::time::{sleep, timeout_at, Instant};
use tracing::{info, warn};

use super::node::RaftNode;
use crate::error::{Result, ServerError};

/// Ends a transfer however it ends: heartbeats back on, held proposals released.
struct TransferGuard<'a>(&'a RaftNode);

impl Drop for TransferGuard<'_> {
    fn drop(&mut self) {
        self.0.raft.runtime_config().heartbeat(true);
        self.0.transferring.send_replace(false);
    }
}

/// A proposal on its way into this leader's log; a transfer waits until none is.
pub struct InFlight<'a>(&'a RaftNode);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl RaftNode {
    /// Lets a proposal into this leader's log unless a leadership transfer is in progress, in
    /// which case it waits for the transfer to end. None: this member no longer leads (the
    /// caller sends the proposal to the new leader).
    pub async fn admit(&self, deadline: Instant) -> Result<Option<InFlight<'_>>> {
        loop {
            // Counted before the flag is read: a transfer that sets the flag then sees no
            // proposal in flight knows that every later one will see the flag.
            self.in_flight.fetch_add(1, Ordering::SeqCst);
            let guard = InFlight(self);
            if !*self.transferring.borrow() {
                return Ok(self.is_leader().then_some(guard));
            }
            drop(guard);
            let mut transferring = self.transferring.subscribe();
            let waited = timeout_at(deadline, async { transferring.wait_for(|t| !*t).await.is_ok() }).await;
            match waited {
                Err(_) => return Err(ServerError::Timeout),
                Ok(false) => return Err(ServerError::Stopped),
                Ok(true) => {}
            }
        }
    }

    /// Waits until every admitted proposal has reached the log (and returned).
    async fn drain_proposals(&self) {
        while self.in_flight.load(Ordering::SeqCst) > 0 {
            sleep(Duration::from_millis(2)).await;
        }
    }

    /// Hands leadership to `target`, a voter, returning once it leads.
    pub async fn transfer_leadership(&self, target: u64, deadline: Instant) -> Result<()> {
        let metrics = self.raft.metrics().borrow().clone();
        if metrics.state != openraft::ServerState::Leader {
            return Err(ServerError::NotLeader);
        }
        if !metrics.membership_config.membership().voter_ids().any(|id| id == target) {
            return Err(ServerError::BadLeaderTransferee);
        }
        if target == self.id {
            return Ok(());
        }
        if self.transferring.send_replace(true) {
            // Another transfer is running and owns the gate.
            return Err(ServerError::LeaderTransferTimeout);
        }
        let _guard = TransferGuard(self);
        self.raft.runtime_config().heartbeat(false);
        let started = std::time::Instant::now();
        info!(target = %format!("{target:x}"), "leadership transfer starting");
        let result = timeout_at(deadline, self.hand_over(target)).await;
        match result {
            Ok(Ok(())) => {
                info!(target = %format!("{target:x}"), took = ?started.elapsed(), "leadership transfer finished");
                Ok(())
            }
            Ok(Err(e)) => Err(e),
            Err(_) => {
                warn!(target = %format!("{target:x}"), "leadership transfer timed out");
                Err(ServerError::LeaderTransferTimeout)
            }
        }
    }

    async fn hand_over(&self, target: u64) -> Result<()> {
        self.drain_proposals().await;
        let mut metrics = self.raft.metrics();
        // The transferee must hold every entry this leader has, or it cannot win.
        loop {
            let (caught_up, leads) = {
                let m = metrics.borrow_and_update();
                let matched = m.replication.as_ref().and_then(|r| r.get(&target).cloned().flatten());
                (matched.map(|l| l.index) >= m.last_log_index, m.current_leader == Some(target))
            };
            if leads {
                return Ok(());
            }
            if caught_up {
                break;
            }
            if metrics.changed().await.is_err() {
                return Err(ServerError::Stopped);
            }
        }
        let config = self.raft.config();
        let retry = Duration::from_millis(config.election_timeout_min / 2).max(Duration::from_millis(50));
        let mut client = self.peer(target)?;
        loop {
            if let Err(e) = client.timeout_now(RaftMessage::default()).await {
                warn!(error = %e, "transferee did not take the campaign request");
            }
            let wait = timeout_at(Instant::now() + retry, async {
                loop {
                    if metrics.borrow_and_update().current_leader == Some(target) {
                        return true;
                    }
                    if metrics.changed().await.is_err() {
                        return false;
                    }
                }
            })
            .await;
            match wait {
                Ok(true) => return Ok(()),
                Ok(false) => return Err(ServerError::Stopped),
                Err(_) => sleep(Duration::ZERO).await,
            }
        }
    }

    /// `TimeoutNow` from a leader handing over: campaign at once (a no-op on a leader or a
    /// learner).
    pub async fn campaign(&self) -> Result<()> {
        self.raft.trigger().elect().await.map_err(|_| ServerError::Stopped)
    }
}

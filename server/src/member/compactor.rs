//! Auto compaction (`--auto-compaction-mode` / `--auto-compaction-retention`), after etcd's
//! `v3compactor`: periodic mode compacts to the revision that was current one retention period
//! ago; revision mode keeps the newest N revisions, checked every 5 minutes.

use std::collections::VecDeque;
use std::time::Duration;

use rkv_proto::etcdserverpb::CompactionRequest;
use tokio::sync::watch;
use tokio::time::{interval, Instant, MissedTickBehavior};
use tracing::{error, info, warn};

use crate::apply::Command;
use crate::config::AutoCompaction;
use crate::state::Shared;

const REVISION_MODE_INTERVAL: Duration = Duration::from_secs(300);

pub(super) async fn run(shared: Shared, mode: AutoCompaction, mut stop: watch::Receiver<bool>) {
    let (tick, retention) = match mode {
        AutoCompaction::Disabled => return,
        // etcd samples every retention/10 (at most 1h) and compacts to the sample that is one
        // retention old.
        AutoCompaction::Periodic(d) => {
            ((d / 10).clamp(Duration::from_secs(1), Duration::from_secs(3600)), Some(d))
        }
        AutoCompaction::Revision(_) => (REVISION_MODE_INTERVAL, None),
    };
    let mut ticker = interval(tick);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut samples: VecDeque<(Instant, i64)> = VecDeque::new();
    let mut last_compacted = 0;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => return,
        }
        let current = match shared.store.current_revision() {
            Ok(rev) => rev,
            Err(e) => {
                // Only a poisoned store fails this: nothing more will be written to compact.
                error!(error = %e, "auto compaction stops: cannot read the current revision");
                return;
            }
        };
        let target = match (mode, retention) {
            (AutoCompaction::Revision(keep), _) => current - keep,
            (_, Some(retention)) => {
                let now = Instant::now();
                samples.push_back((now, current));
                let mut target = 0;
                while let Some(&(t, rev)) = samples.front() {
                    if now.duration_since(t) >= retention {
                        target = rev;
                        samples.pop_front();
                    } else {
                        break;
                    }
                }
                target
            }
            _ => 0,
        };
        // Only the leader compacts (etcd's compactor pauses on followers).
        if target <= 0 || target <= last_compacted || !shared.node.is_leader() {
            continue;
        }
        let request = CompactionRequest { revision: target, physical: false };
        match shared.node.propose(Command::Compact(request)).await {
            Ok(_) => {
                info!(revision = target, "completed auto compaction");
                last_compacted = target;
            }
            Err(e) => warn!(revision = target, error = %e, "auto compaction failed"),
        }
    }
}

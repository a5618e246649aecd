//! openraft's storage conformance suite over rkv's log store and state machine.

use std::sync::Arc;

use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;
use rkv_proto::etcdserverpb::ResponseHeader;
use rkv_storage::Store;

use super::log_store::LogStore;
use super::state_machine::StateMachine;
use super::TypeConfig;
use crate::apply::Applier;
use crate::lease::Lessor;
use crate::metrics::{Metrics, MetricsLevel};
use crate::watch::WatchHub;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<u64>> {
        let fail = |e: String| super::serr::write(openraft::AnyError::error(e));
        let dir = tempfile::tempdir().map_err(|e| fail(e.to_string()))?;
        let store = Arc::new(Store::open(dir.path().join("db")).map_err(|e| fail(e.to_string()))?);
        let hub = WatchHub::new(store.clone(), ResponseHeader::default(), 1 << 20)
            .map_err(|e| fail(e.to_string()))?;
        let metrics = Arc::new(Metrics::new(MetricsLevel::Basic).map_err(|e| fail(e.to_string()))?);
        // bcrypt's lowest cost: the suite never authenticates.
        let auth = Arc::new(
            crate::auth::AuthStore::new(
                &store,
                4,
                crate::auth::Tokens::Simple(crate::auth::SimpleTokens::new(std::time::Duration::from_secs(
                    300,
                ))),
            )
            .map_err(|e| fail(e.to_string()))?,
        );
        let lessor = Arc::new(Lessor::default());
        let applier = Arc::new(
            Applier::new(store.clone(), hub, lessor, metrics.clone(), auth)
                .map_err(|e| fail(e.to_string()))?,
        );
        let sm = StateMachine::new(applier, dir.path().join("snap"), Arc::new(|| Ok(())))
            .map_err(|e| fail(e.to_string()))?;
        Ok((dir, LogStore::new(store, metrics), sm))
    }
}

#[test]
fn openraft_storage_suite() {
    if let Err(e) = Suite::test_all(Builder) {
        panic!("openraft storage suite: {e}");
    }
}

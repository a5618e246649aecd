//! The KV service (etcd `v3rpc/key.go` + the read path of `v3_server.go`).

use rkv_proto::etcdserverpb::{
    kv_server::Kv, CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse,
    PutRequest, PutResponse, RangeRequest, RangeResponse, ResponseHeader, TxnRequest, TxnResponse,
};
use tonic::{Request, Response, Status};

use super::Shared;
use crate::apply::{check, kv, Command};
use crate::auth::Access;
use crate::error::ServerError;
use rkv_proto::rkvpb::AuthInfo;

pub struct KvService {
    shared: Shared,
}

impl KvService {
    pub fn new(shared: Shared) -> Self {
        Self { shared }
    }

    /// Runs a read on the blocking pool: RocksDB reads block.
    async fn read<T, F>(&self, f: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&rkv_storage::Store) -> Result<T, ServerError> + Send + 'static,
    {
        let store = self.shared.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|_| Status::from(ServerError::Stopped))?
            .map_err(Status::from)
    }

    async fn check_quota(&self) -> Result<(), Status> {
        let quota = self.shared.config.quota_backend_bytes;
        let size = self.shared.db_size_for_quota().map_err(ServerError::from)?;
        // The cached size may predate a compaction or defrag: confirm before refusing.
        if size > quota && self.shared.store.db_size().map_err(ServerError::from)?.0 > quota {
            // etcd raises the NOSPACE alarm through raft, then refuses: from then on every
            // member refuses writes that add data until the alarm is disarmed.
            self.shared.raise_nospace().await;
            return Err(ServerError::NoSpace.into());
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(&self, request: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        let who = self.shared.who(&request)?;
        self.range_as(who, request.into_inner()).await.map(Response::new)
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let who = self.shared.who(&request)?;
        self.put_as(who, request.into_inner()).await.map(Response::new)
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let who = self.shared.who(&request)?;
        self.delete_range_as(who, request.into_inner()).await.map(Response::new)
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let who = self.shared.who(&request)?;
        self.txn_as(who, request.into_inner()).await.map(Response::new)
    }

    async fn compact(
        &self,
        request: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        let who = self.shared.who(&request)?;
        let r = request.into_inner();
        self.shared.check_message_size(&r)?;
        let (rev, physical) = (r.revision, r.physical);
        let resp = self.shared.propose_for(Command::Compact(r), Some(who)).await?;
        if physical {
            // etcd answers a physical compaction once this member has deleted the history.
            self.shared.applier.wait_compacted(rev).await?;
        }
        self.shared.reply(resp)
    }
}

impl KvService {
    /// A Range on behalf of `who`, as the RPC answers it (the lock and election services call
    /// this directly, as etcd's call its in-process client).
    pub async fn range_as(&self, who: AuthInfo, r: RangeRequest) -> Result<RangeResponse, Status> {
        self.shared.check_message_size(&r)?;
        check::check_range_request(&r)?;
        self.shared.applier.auth.check(&who, &r.key, &r.range_end, Access::Read)?;
        self.shared.metrics.mvcc.range_total.inc();
        if !r.serializable {
            self.shared.node.linearizable_barrier().await?;
        }
        // A single-key read is a memtable or block-cache lookup of microseconds: done inline it
        // saves the two thread switches of the blocking pool, the largest cost of a point read
        // (perf: 54% of a serializable-range load in kernel task switching). Ranges, which may
        // read thousands of keys, still go to the blocking pool.
        let resp = if r.range_end.is_empty() {
            kv::range(&self.shared.store.read_view().map_err(ServerError::from)?, &r).map_err(Status::from)?
        } else {
            self.read(move |store| kv::range(&store.read_view()?, &r)).await?
        };
        self.shared.headed(resp)
    }

    pub async fn put_as(&self, who: AuthInfo, r: PutRequest) -> Result<PutResponse, Status> {
        self.shared.check_message_size(&r)?;
        check::check_put_request(&r)?;
        self.check_quota().await?;
        self.shared.check_proposal_size(&r)?;
        let resp = self.shared.propose_for(Command::Put(r), Some(who)).await?;
        self.shared.headed(resp)
    }

    pub async fn delete_range_as(
        &self,
        who: AuthInfo,
        r: DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, Status> {
        self.shared.check_message_size(&r)?;
        check::check_delete_request(&r)?;
        self.shared.check_proposal_size(&r)?;
        let resp = self.shared.propose_for(Command::DeleteRange(r), Some(who)).await?;
        self.shared.headed(resp)
    }

    pub async fn txn_as(&self, who: AuthInfo, r: TxnRequest) -> Result<TxnResponse, Status> {
        self.shared.check_message_size(&r)?;
        check::check_txn(&r, self.shared.config.max_txn_ops)?;
        let resp = if kv::is_txn_read_only(&r) {
            self.shared.applier.auth.check_txn(&who, &r)?;
            crate::apply::count_txn_ops(&self.shared.metrics, &r);
            if !kv::is_txn_serializable(&r) {
                self.shared.node.linearizable_barrier().await?;
            }
            let lessor = self.shared.lessor.clone();
            self.read(move |store| {
                let mut view = store.read_view()?;
                let path = kv::compare_to_path(&view, &r)?;
                kv::check_txn_requests(&view, &r, &path, &*lessor, false)?;
                let mut resp = kv::execute_txn(&mut view, &r, &path)?;
                resp.header =
                    Some(ResponseHeader { revision: rkv_storage::KvRead::rev(&view), ..Default::default() });
                Ok(resp)
            })
            .await?
        } else {
            self.check_quota().await?;
            self.shared.check_proposal_size(&r)?;
            self.shared.propose_for(Command::Txn(r), Some(who)).await?
        };
        self.shared.headed(resp)
    }
}

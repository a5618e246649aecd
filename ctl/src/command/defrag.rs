//! `defrag [--cluster]`: one member at a time, each connected just before its turn.

use rkv_proto::etcdserverpb::DefragmentRequest;

use crate::client::Endpoints;
use crate::error::{CtlError, EXIT_ERROR};
use crate::print::Out;

/// Every member is tried even after a failure; the failures were reported on stderr, so the
/// error carries no message of its own.
pub async fn run(cluster: bool, eps: &Endpoints, out: &mut Out) -> Result<(), CtlError> {
    let mut failed = false;
    for ep in &super::endpoint::targets(eps, cluster).await? {
        let c = eps.dialer.connect(ep).await?;
        match c.call(|| async { c.maintenance().defragment(DefragmentRequest {}).await }).await {
            Ok(_) => out.line(&format!("Finished defragmenting etcd member[{ep}]")),
            Err(e) => {
                eprintln!("Failed to defragment etcd member[{ep}] ({})", e.message);
                failed = true;
            }
        }
    }
    if failed {
        return Err(CtlError::new(EXIT_ERROR, ""));
    }
    Ok(())
}

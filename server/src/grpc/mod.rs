//! The gRPC services of the etcd v3 API. Each handler validates like etcd's `v3rpc` layer,
//! then reads the store or proposes through raft, and fills the response header.

pub mod auth;
pub mod cluster;
pub mod election;
pub mod kv;
pub mod lease;
pub mod lock;
pub mod maintenance;
pub mod peer;
mod recipes;
mod response;
pub mod watch;

use prost::Message;
use rkv_proto::etcdserverpb::ResponseHeader;
use rkv_proto::rkvpb::AuthInfo;
use tonic::{Request, Response, Status};

use crate::apply::{Command, CommandResponse};
use crate::error::ServerError;
use crate::state::MemberState;
pub use crate::state::Shared;
use response::Headed;

/// gRPC metadata keys a client's auth token may come in (etcd's, and its gateway's).
const TOKEN_KEYS: [&str; 2] = ["token", "authorization"];

impl MemberState {
    /// Who sent a request (etcd's `AuthInfoFromCtx`): the user of its token, else with client
    /// certificate auth the common name of its verified certificate, else nobody (an empty
    /// name, which auth refuses while enabled). A token that is not live is an error.
    pub fn who<T>(&self, request: &Request<T>) -> Result<AuthInfo, Status> {
        let auth = &self.applier.auth;
        let md = request.metadata();
        if let Some(token) = TOKEN_KEYS.iter().find_map(|k| md.get(*k)) {
            let token = token.to_str().map_err(|_| ServerError::InvalidAuthToken)?;
            return Ok(auth.token_info(token)?);
        }
        if self.config.client_tls.client_cert_auth && auth.is_enabled() {
            let cn =
                request.peer_certs().and_then(|certs| certs.first().and_then(|c| common_name(c.as_ref())));
            if let Some(cn) = cn {
                return Ok(auth.cert_info(&cn));
            }
        }
        Ok(AuthInfo::default())
    }

    /// Operations only root may do while auth is enabled (etcd's `IsAdminPermitted`).
    pub fn check_admin<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let who = self.who(request)?;
        self.applier.auth.check_admin(&who).map_err(Status::from)
    }

    /// The header etcd puts on a response: ids, term, and the store revision unless the
    /// request set its own.
    pub fn fill_header(&self, header: &mut Option<ResponseHeader>) -> Result<(), Status> {
        let h = header.get_or_insert_with(ResponseHeader::default);
        h.cluster_id = self.identity.cluster_id;
        h.member_id = self.identity.member_id;
        h.raft_term = self.node.term();
        if h.revision == 0 {
            h.revision = self.store.current_revision().map_err(ServerError::from)?;
        }
        Ok(())
    }

    /// `resp` as the answer to a request, with the header `fill_header` puts on it.
    pub fn reply<T: Headed>(&self, resp: T) -> Result<Response<T>, Status> {
        self.headed(resp).map(Response::new)
    }

    /// `resp` with the header `fill_header` puts on it.
    pub fn headed<T: Headed>(&self, mut resp: T) -> Result<T, Status> {
        self.fill_header(resp.header_mut())?;
        Ok(resp)
    }

    /// Proposes a command on behalf of `who` (`None`: this member itself) and takes out the
    /// applier's answer as the kind `T` the command has. An answer of another kind is a broken
    /// contract of the applier, reported as etcd's unexpected-response error.
    pub async fn propose_for<T: TryFrom<CommandResponse>>(
        &self,
        command: Command,
        who: Option<AuthInfo>,
    ) -> Result<T, Status> {
        let answer = self.node.propose_as(command, who).await?;
        T::try_from(answer).map_err(|_| ServerError::UnexpectedResponse.into())
    }

    /// The gRPC receive limit etcd sets (`--max-request-bytes` + 512 KiB), with grpc-go's error.
    pub fn check_message_size(&self, msg: &impl Message) -> Result<(), Status> {
        let size = msg.encoded_len();
        let limit = self.config.max_request_bytes + crate::config::GRPC_OVERHEAD_BYTES;
        if size > limit {
            return Err(ServerError::MessageTooLarge { size, limit }.into());
        }
        Ok(())
    }

    /// etcd refuses a write whose raft entry would exceed `--max-request-bytes`.
    pub fn check_proposal_size(&self, msg: &impl Message) -> Result<(), Status> {
        // The raft entry wraps the request: a request header (~13 bytes) plus its own tag+len.
        let len = msg.encoded_len();
        let entry = len + prost::encoding::encoded_len_varint(len as u64) + 1 + 13;
        if entry > self.config.max_request_bytes {
            return Err(ServerError::RequestTooLarge.into());
        }
        Ok(())
    }
}

/// The subject common name of a DER certificate.
fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?.as_str().ok()?.to_string();
    Some(cn)
}

//! Connections to the endpoints, with etcdctl's dial and command timeouts.

use std::future::Future;
use std::time::Duration;

use rkv_proto::etcdserverpb::{kv_client::KvClient, maintenance_client::MaintenanceClient};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::error::{CtlError, EXIT_BAD_CONNECTION, EXIT_ERROR};
use crate::tls::TlsFlags;

#[derive(Clone)]
pub struct Client {
    channel: Channel,
    pub command_timeout: Duration,
}

impl Client {
    pub fn connect(
        endpoint: &str,
        dial_timeout: Duration,
        command_timeout: Duration,
        tls: &TlsFlags,
    ) -> Result<Self, CtlError> {
        let (uri, secure) = tls.endpoint(endpoint);
        let ep = Endpoint::from_shared(uri)
            .map_err(|e| CtlError::new(EXIT_BAD_CONNECTION, format!("invalid endpoint {endpoint}: {e}")))?
            .connect_timeout(dial_timeout)
            .tcp_nodelay(true);
        // The Go client connects lazily too: an unreachable endpoint shows up as the command
        // timing out, with etcdctl's "context deadline exceeded".
        let channel = if secure {
            ep.connect_with_connector_lazy(crate::tls::connector(tls.client_config()?, dial_timeout))
        } else {
            ep.connect_lazy()
        };
        Ok(Self { channel, command_timeout })
    }

    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    pub fn kv(&self) -> KvClient<Channel> {
        KvClient::new(self.channel.clone()).max_decoding_message_size(usize::MAX)
    }

    pub fn maintenance(&self) -> MaintenanceClient<Channel> {
        MaintenanceClient::new(self.channel.clone()).max_decoding_message_size(usize::MAX)
    }

    /// Runs one RPC within the command timeout, retrying while the endpoint is unreachable
    /// (as the Go client's balancer waits for a connection).
    pub async fn call<T, F, Fut>(&self, mut f: F) -> Result<T, CtlError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let attempt = async {
            loop {
                match f().await {
                    Ok(r) => return Ok(r.into_inner()),
                    Err(s) if is_unreachable(&s) => tokio::time::sleep(Duration::from_millis(100)).await,
                    Err(s) => return Err(CtlError::from(s)),
                }
            }
        };
        match tokio::time::timeout(self.command_timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(CtlError::new(EXIT_ERROR, "context deadline exceeded")),
        }
    }
}

fn is_unreachable(s: &Status) -> bool {
    s.code() == Code::Unavailable && !s.message().starts_with("etcdserver: ")
}

//! Connections to the endpoints, with etcdctl's dial and command timeouts.

use std::future::Future;
use std::time::Duration;

use rkv_proto::etcdserverpb::{
    auth_client::AuthClient, kv_client::KvClient, maintenance_client::MaintenanceClient, AuthenticateRequest,
};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::error::{CtlError, EXIT_BAD_CONNECTION, EXIT_ERROR};
use crate::tls::TlsFlags;

/// Adds the auth token (etcd's `token` metadata) to every request once logged in.
#[derive(Clone, Default)]
pub struct Token(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Token {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(token) = &self.0 {
            request.metadata_mut().insert("token", token.clone());
        }
        Ok(request)
    }
}

pub type Svc = tonic::service::interceptor::InterceptedService<Channel, Token>;

#[derive(Clone)]
pub struct Client {
    channel: Channel,
    token: Token,
    pub command_timeout: Duration,
}

/// How to reach endpoints: timeouts, TLS, and the user to log in as (etcdctl's --user).
pub struct Dialer {
    pub dial_timeout: Duration,
    pub command_timeout: Duration,
    pub tls: TlsFlags,
    pub user: Option<(String, String)>,
}

impl Dialer {
    pub async fn connect(&self, endpoint: &str) -> Result<Client, CtlError> {
        let mut c = Client::connect(endpoint, self.dial_timeout, self.command_timeout, &self.tls)?;
        if let Some((name, password)) = &self.user {
            let req = AuthenticateRequest { name: name.clone(), password: password.clone() };
            // etcdctl cannot make its client: a bad-connection exit, whatever the reason.
            let resp = c
                .call(|| async { AuthClient::new(c.channel.clone()).authenticate(req.clone()).await })
                .await
                .map_err(|e| CtlError::new(EXIT_BAD_CONNECTION, e.message))?;
            let token = resp
                .token
                .parse()
                .map_err(|_| CtlError::new(EXIT_ERROR, "the server returned an unusable token"))?;
            c.token = Token(Some(token));
        }
        Ok(c)
    }
}

/// The --endpoints and how to dial them: what every command reaches the cluster through.
pub struct Endpoints {
    pub list: Vec<String>,
    pub dialer: Dialer,
}

impl Endpoints {
    /// A client of the first endpoint, the one rctl's single-endpoint commands talk to.
    pub async fn first(&self) -> Result<Client, CtlError> {
        let endpoint = self.list.first().map_or("127.0.0.1:2379", String::as_str);
        self.dialer.connect(endpoint).await
    }

    /// `first` without the command timeout, as etcdctl runs txn, snapshot save and watch.
    pub async fn first_unbounded(&self) -> Result<Client, CtlError> {
        let mut c = self.first().await?;
        c.command_timeout = Duration::from_secs(u32::MAX as u64);
        Ok(c)
    }

    /// A client of each endpoint, all connected (and logged in) before any command runs.
    pub async fn each(&self, endpoints: &[String]) -> Result<Vec<(String, Client)>, CtlError> {
        let mut clients = Vec::new();
        for ep in endpoints {
            clients.push((ep.clone(), self.dialer.connect(ep).await?));
        }
        Ok(clients)
    }
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
        Ok(Self { channel, token: Token::default(), command_timeout })
    }

    /// The connection, sending the auth token when logged in.
    pub fn channel(&self) -> Svc {
        tonic::service::interceptor::InterceptedService::new(self.channel.clone(), self.token.clone())
    }

    pub fn kv(&self) -> KvClient<Svc> {
        KvClient::new(self.channel()).max_decoding_message_size(usize::MAX)
    }

    pub fn maintenance(&self) -> MaintenanceClient<Svc> {
        MaintenanceClient::new(self.channel()).max_decoding_message_size(usize::MAX)
    }

    pub fn auth(&self) -> AuthClient<Svc> {
        AuthClient::new(self.channel())
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

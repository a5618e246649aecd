//! The Auth service (etcd `v3rpc/auth.go` and `v3_server.go`): changes go through the log with
//! who asked (only root may change anything while auth is enabled); reads are linearizable.

use rkv_proto::etcdserverpb::*;
use rkv_proto::rkvpb::auth_command::Request as AuthRequest;
use rkv_proto::rkvpb::AuthenticateCommand;
use tonic::{Request, Response, Status};

use super::Shared;
use crate::apply::Command;
use crate::error::ServerError;

pub struct AuthService {
    shared: Shared,
}

impl AuthService {
    pub fn new(shared: Shared) -> Self {
        Self { shared }
    }

    /// Proposes an auth change on behalf of the request's sender; returns the response header.
    async fn change<T>(
        &self,
        request: &Request<T>,
        change: AuthRequest,
    ) -> Result<Option<ResponseHeader>, Status> {
        let who = self.shared.who(request)?;
        let _token: Option<String> = self.shared.propose_for(Command::Auth(change), Some(who)).await?;
        self.header()
    }

    /// A read of the auth state as of now (etcd serves these through the log).
    async fn settle(&self) -> Result<Option<ResponseHeader>, Status> {
        self.shared.node.linearizable_barrier().await?;
        self.header()
    }

    /// The header of a response built after it (its revision is the store's as of now).
    fn header(&self) -> Result<Option<ResponseHeader>, Status> {
        let mut header = None;
        self.shared.fill_header(&mut header)?;
        Ok(header)
    }

    fn hash(&self, password: &str) -> Result<String, Status> {
        Ok(self.shared.applier.auth.hash_password(password)?)
    }
}

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl rkv_proto::etcdserverpb::auth_server::Auth for AuthService {
    async fn auth_enable(&self, request: Request<AuthEnableRequest>) -> Reply<AuthEnableResponse> {
        let header = self.change(&request, AuthRequest::Enable(AuthEnableRequest {})).await?;
        Ok(Response::new(AuthEnableResponse { header }))
    }

    async fn auth_disable(&self, request: Request<AuthDisableRequest>) -> Reply<AuthDisableResponse> {
        let header = self.change(&request, AuthRequest::Disable(AuthDisableRequest {})).await?;
        Ok(Response::new(AuthDisableResponse { header }))
    }

    async fn auth_status(&self, request: Request<AuthStatusRequest>) -> Reply<AuthStatusResponse> {
        let header = self.settle().await?;
        self.shared.check_admin(&request)?;
        let auth = &self.shared.applier.auth;
        Ok(Response::new(AuthStatusResponse {
            header,
            enabled: auth.is_enabled(),
            auth_revision: auth.revision(),
        }))
    }

    async fn authenticate(&self, request: Request<AuthenticateRequest>) -> Reply<AuthenticateResponse> {
        let r = request.into_inner();
        let auth = &self.shared.applier.auth;
        loop {
            self.shared.node.linearizable_barrier().await?;
            let checked_at = {
                let (auth, name, password) = (auth.clone(), r.name.clone(), r.password.clone());
                tokio::task::spawn_blocking(move || auth.check_password(&name, &password))
                    .await
                    .map_err(|_| Status::from(ServerError::Stopped))??
            };
            let token = auth.tokens.generate();
            let issue = AuthRequest::Authenticate(AuthenticateCommand { name: r.name.clone(), token });
            let issued: Option<String> = self.shared.propose_for(Command::Auth(issue), None).await?;
            // The password was checked against the state the token's revision names.
            if checked_at != auth.revision() {
                continue;
            }
            let Some(token) = issued else {
                return Err(ServerError::UnexpectedResponse.into());
            };
            return Ok(Response::new(AuthenticateResponse { header: self.header()?, token }));
        }
    }

    async fn user_add(&self, request: Request<AuthUserAddRequest>) -> Reply<AuthUserAddResponse> {
        let mut r = request.get_ref().clone();
        if !r.options.is_some_and(|o| o.no_password) {
            r.hashed_password = self.hash(&r.password)?;
        }
        r.password.clear();
        let header = self.change(&request, AuthRequest::UserAdd(r)).await?;
        Ok(Response::new(AuthUserAddResponse { header }))
    }

    async fn user_get(&self, request: Request<AuthUserGetRequest>) -> Reply<AuthUserGetResponse> {
        let header = self.settle().await?;
        let who = self.shared.who(&request)?;
        let roles = self.shared.applier.auth.user(&who, &request.get_ref().name)?;
        Ok(Response::new(AuthUserGetResponse { header, roles }))
    }

    async fn user_list(&self, request: Request<AuthUserListRequest>) -> Reply<AuthUserListResponse> {
        let header = self.settle().await?;
        self.shared.check_admin(&request)?;
        Ok(Response::new(AuthUserListResponse { header, users: self.shared.applier.auth.users() }))
    }

    async fn user_delete(&self, request: Request<AuthUserDeleteRequest>) -> Reply<AuthUserDeleteResponse> {
        let r = request.get_ref().clone();
        let header = self.change(&request, AuthRequest::UserDelete(r)).await?;
        Ok(Response::new(AuthUserDeleteResponse { header }))
    }

    async fn user_change_password(
        &self,
        request: Request<AuthUserChangePasswordRequest>,
    ) -> Reply<AuthUserChangePasswordResponse> {
        let mut r = request.get_ref().clone();
        r.hashed_password = self.hash(&r.password)?;
        r.password.clear();
        let header = self.change(&request, AuthRequest::UserChangePassword(r)).await?;
        Ok(Response::new(AuthUserChangePasswordResponse { header }))
    }

    async fn user_grant_role(
        &self,
        request: Request<AuthUserGrantRoleRequest>,
    ) -> Reply<AuthUserGrantRoleResponse> {
        let r = request.get_ref().clone();
        let header = self.change(&request, AuthRequest::UserGrantRole(r)).await?;
        Ok(Response::new(AuthUserGrantRoleResponse { header }))
    }

    async fn user_revoke_role(
        &self,
        request: Request<AuthUserRevokeRoleRequest>,
    ) -> Reply<AuthUserRevokeRoleResponse> {
        let r = request.get_ref().clone();
        let header = self.change(&request, AuthRequest::UserRevokeRole(r)).await?;
        Ok(Response::new(AuthUserRevokeRoleResponse { header }))
    }

    async fn role_add(&self, request: Request<AuthRoleAddRequest>) -> Reply<AuthRoleAddResponse> {
        let r = request.get_ref().clone();
        let header = self.change(&request, AuthRequest::RoleAdd(r)).await?;
        Ok(Response::new(AuthRoleAddResponse { header }))
    }

    async fn role_get(&self, request: Request<AuthRoleGetRequest>) -> Reply<AuthRoleGetResponse> {
        let header = self.settle().await?;
        let who = self.shared.who(&request)?;
        let perm = self.shared.applier.auth.role(&who, &request.get_ref().role)?;
        Ok(Response::new(AuthRoleGetResponse { header, perm }))
    }

    async fn role_list(&self, request: Request<AuthRoleListRequest>) -> Reply<AuthRoleListResponse> {
        let header = self.settle().await?;
        self.shared.check_admin(&request)?;
        Ok(Response::new(AuthRoleListResponse { header, roles: self.shared.applier.auth.roles() }))
    }

    async fn role_delete(&self, request: Request<AuthRoleDeleteRequest>) -> Reply<AuthRoleDeleteResponse> {
        let r = request.get_ref().clone();
        let header = self.change(&request, AuthRequest::RoleDelete(r)).await?;
        Ok(Response::new(AuthRoleDeleteResponse { header }))
    }

    async fn role_grant_permission(
        &self,
        request: Request<AuthRoleGrantPermissionRequest>,
    ) -> Reply<AuthRoleGrantPermissionResponse> {
        let r = request.get_ref().clone();
        let header = self.change(&request, AuthRequest::RoleGrantPermission(r)).await?;
        Ok(Response::new(AuthRoleGrantPermissionResponse { header }))
    }

    async fn role_revoke_permission(
        &self,
        request: Request<AuthRoleRevokePermissionRequest>,
    ) -> Reply<AuthRoleRevokePermissionResponse> {
        let r = request.get_ref().clone();
        let header = self.change(&request, AuthRequest::RoleRevokePermission(r)).await?;
        Ok(Response::new(AuthRoleRevokePermissionResponse { header }))
    }
}

//! `auth`, `user` and `role`: etcdctl 3.5's syntax and output.

use clap::{Args, Subcommand};
use rkv_proto::authpb::{permission::Type as PermType, Permission, UserAddOptions};
use rkv_proto::etcdserverpb::*;

use super::kv::prefix_end;
use crate::client::Client;
use crate::error::{CtlError, EXIT_BAD_ARGS};
use crate::print::Out;

#[derive(Subcommand, Debug)]
pub enum AuthCommand {
    /// Enables authentication.
    Enable,
    /// Disables authentication.
    Disable,
    /// Returns authentication status.
    Status,
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Adds a new user.
    Add {
        /// user name or user:password
        #[arg(value_name = "USER")]
        name: String,
        /// Read password from stdin instead of interactive terminal.
        #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "true")]
        interactive: bool,
        /// Supply password from the command line flag.
        #[arg(long = "new-user-password")]
        new_user_password: Option<String>,
        /// Create a user without password (CN based auth only).
        #[arg(long = "no-password")]
        no_password: bool,
    },
    /// Gets detailed information of a user.
    Get {
        #[arg(value_name = "USER")]
        name: String,
        /// Show permissions of roles granted to the user.
        #[arg(long)]
        detail: bool,
    },
    /// Lists all users.
    List,
    /// Deletes a user.
    Delete {
        #[arg(value_name = "USER")]
        name: String,
    },
    /// Changes password of user.
    Passwd {
        #[arg(value_name = "USER")]
        name: String,
        /// If true, read password from stdin instead of interactive terminal.
        #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "true")]
        interactive: bool,
    },
    /// Grants a role to a user.
    GrantRole {
        #[arg(value_name = "USER")]
        name: String,
        role: String,
    },
    /// Revokes a role from a user.
    RevokeRole {
        #[arg(value_name = "USER")]
        name: String,
        role: String,
    },
}

#[derive(Args, Debug)]
pub struct RangeFlags {
    /// Grant a prefix permission.
    #[arg(long)]
    prefix: bool,
    /// Grant a permission of keys that are greater than or equal to the given key using byte compare.
    #[arg(long = "from-key")]
    from_key: bool,
}

#[derive(Subcommand, Debug)]
pub enum RoleCommand {
    /// Adds a new role.
    Add { role: String },
    /// Gets detailed information of a role.
    Get { role: String },
    /// Lists all roles.
    List,
    /// Deletes a role.
    Delete { role: String },
    /// Grants a key to a role.
    GrantPermission {
        role: String,
        perm_type: String,
        #[arg(value_name = "KEY")]
        perm_key: String,
        end: Option<String>,
        #[command(flatten)]
        range: RangeFlags,
    },
    /// Revokes a key from a role.
    RevokePermission {
        role: String,
        #[arg(value_name = "KEY")]
        perm_key: String,
        end: Option<String>,
        #[command(flatten)]
        range: RangeFlags,
    },
}

pub async fn auth(command: AuthCommand, c: &Client, out: &mut Out) -> Result<(), CtlError> {
    match command {
        AuthCommand::Enable => {
            // etcdctl creates the root role and grants it to root when enable says it is missing.
            loop {
                match c.call(|| async { c.auth().auth_enable(AuthEnableRequest {}).await }).await {
                    Ok(_) => break,
                    Err(e) if e.message == "etcdserver: root user does not have root role" => {
                        let add = AuthRoleAddRequest { name: "root".into() };
                        c.call(|| async { c.auth().role_add(add.clone()).await }).await?;
                        let grant = AuthUserGrantRoleRequest { user: "root".into(), role: "root".into() };
                        c.call(|| async { c.auth().user_grant_role(grant.clone()).await }).await?;
                    }
                    Err(e) => return Err(e),
                }
            }
            out.line("Authentication Enabled");
        }
        AuthCommand::Disable => {
            c.call(|| async { c.auth().auth_disable(AuthDisableRequest {}).await }).await?;
            out.line("Authentication Disabled");
        }
        AuthCommand::Status => {
            let r = c.call(|| async { c.auth().auth_status(AuthStatusRequest {}).await }).await?;
            out.line(&format!("Authentication Status: {}\nAuthRevision: {}", r.enabled, r.auth_revision));
        }
    }
    Ok(())
}

/// A password from stdin (etcdctl's --interactive=false reads a word; the prompt reads a line).
fn read_password(user: &str, interactive: bool) -> Result<String, CtlError> {
    if interactive {
        eprint!("Password of {user}: ");
    }
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| CtlError::new(crate::error::EXIT_ERROR, e.to_string()))?;
    let password = if interactive {
        line.trim_end_matches(['\r', '\n']).to_string()
    } else {
        line.split_whitespace().next().unwrap_or_default().to_string()
    };
    Ok(password)
}

pub async fn user(command: UserCommand, c: &Client, out: &mut Out) -> Result<(), CtlError> {
    let a = || c.auth();
    match command {
        UserCommand::Add { name: user, interactive, new_user_password, no_password } => {
            let (name, password) = if no_password {
                (user, String::new())
            } else if let Some(p) = new_user_password {
                (user, p)
            } else {
                match user.split_once(':') {
                    Some(("", _)) => {
                        return Err(CtlError::new(EXIT_BAD_ARGS, "empty user name is not allowed"))
                    }
                    Some((n, p)) => (n.to_string(), p.to_string()),
                    None => {
                        let p = read_password(&user, interactive)?;
                        (user, p)
                    }
                }
            };
            let req = AuthUserAddRequest {
                name: name.clone(),
                password,
                options: Some(UserAddOptions { no_password }),
                hashed_password: String::new(),
            };
            c.call(|| async { a().user_add(req.clone()).await }).await?;
            out.line(&format!("User {name} created"));
        }
        UserCommand::Get { name: user, detail } => {
            let req = AuthUserGetRequest { name: user.clone() };
            let r = c.call(|| async { a().user_get(req.clone()).await }).await?;
            if detail {
                out.line(&format!("User: {user}"));
                for role in &r.roles {
                    out.line("");
                    let req = AuthRoleGetRequest { role: role.clone() };
                    let perms = c.call(|| async { a().role_get(req.clone()).await }).await?;
                    print_role(out, role, &perms.perm);
                }
            } else {
                let roles: String = r.roles.iter().map(|role| format!(" {role}")).collect();
                out.line(&format!("User: {user}\nRoles:{roles}"));
            }
        }
        UserCommand::List => {
            let r = c.call(|| async { a().user_list(AuthUserListRequest {}).await }).await?;
            r.users.iter().for_each(|u| out.line(u));
        }
        UserCommand::Delete { name: user } => {
            let req = AuthUserDeleteRequest { name: user.clone() };
            c.call(|| async { a().user_delete(req.clone()).await }).await?;
            out.line(&format!("User {user} deleted"));
        }
        UserCommand::Passwd { name: user, interactive } => {
            let password = read_password(&user, interactive)?;
            let req = AuthUserChangePasswordRequest { name: user, password, hashed_password: String::new() };
            c.call(|| async { a().user_change_password(req.clone()).await }).await?;
            out.line("Password updated");
        }
        UserCommand::GrantRole { name: user, role } => {
            let req = AuthUserGrantRoleRequest { user: user.clone(), role: role.clone() };
            c.call(|| async { a().user_grant_role(req.clone()).await }).await?;
            out.line(&format!("Role {role} is granted to user {user}"));
        }
        UserCommand::RevokeRole { name: user, role } => {
            let req = AuthUserRevokeRoleRequest { name: user.clone(), role: role.clone() };
            c.call(|| async { a().user_revoke_role(req.clone()).await }).await?;
            out.line(&format!("Role {role} is revoked from user {user}"));
        }
    }
    Ok(())
}

fn range_end(key: &str, end: Option<String>, flags: &RangeFlags) -> Result<Vec<u8>, CtlError> {
    match (end, flags.prefix, flags.from_key) {
        (Some(_), true, _) => Err(CtlError::new(EXIT_BAD_ARGS, "unexpected endkey argument with --prefix")),
        (Some(_), _, true) => Err(CtlError::new(EXIT_BAD_ARGS, "unexpected endkey argument with --from-key")),
        (_, true, true) => {
            Err(CtlError::new(EXIT_BAD_ARGS, "--from-key and --prefix flags are mutually exclusive"))
        }
        (Some(e), false, false) => Ok(e.into_bytes()),
        (None, true, false) => Ok(prefix_end(key.as_bytes())),
        (None, false, true) => Ok(vec![0]),
        (None, false, false) => Ok(Vec::new()),
    }
}

/// etcdctl's `role get`: read then write permissions, ranges with their prefix noted.
fn print_role(out: &mut Out, role: &str, perms: &[Permission]) {
    out.line(&format!("Role {role}"));
    let line = |p: &Permission| -> String {
        let key = String::from_utf8_lossy(&p.key);
        if p.range_end.is_empty() {
            return format!("\t{key}");
        }
        let end = String::from_utf8_lossy(&p.range_end);
        let mut s =
            if p.range_end == [0] { format!("\t[{key}, <open ended>") } else { format!("\t[{key}, {end})") };
        if prefix_end(&p.key) == p.range_end {
            s.push_str(&format!(" (prefix {key})"));
        }
        s
    };
    for (title, wanted) in [("KV Read:", PermType::Read), ("KV Write:", PermType::Write)] {
        out.line(title);
        for p in perms {
            let t = p.perm_type();
            if t == wanted || t == PermType::Readwrite {
                out.line(&line(p));
            }
        }
    }
}

pub async fn role(command: RoleCommand, c: &Client, out: &mut Out) -> Result<(), CtlError> {
    let a = || c.auth();
    match command {
        RoleCommand::Add { role } => {
            let req = AuthRoleAddRequest { name: role.clone() };
            c.call(|| async { a().role_add(req.clone()).await }).await?;
            out.line(&format!("Role {role} created"));
        }
        RoleCommand::Get { role } => {
            let req = AuthRoleGetRequest { role: role.clone() };
            let r = c.call(|| async { a().role_get(req.clone()).await }).await?;
            print_role(out, &role, &r.perm);
        }
        RoleCommand::List => {
            let r = c.call(|| async { a().role_list(AuthRoleListRequest {}).await }).await?;
            r.roles.iter().for_each(|role| out.line(role));
        }
        RoleCommand::Delete { role } => {
            let req = AuthRoleDeleteRequest { role: role.clone() };
            c.call(|| async { a().role_delete(req.clone()).await }).await?;
            out.line(&format!("Role {role} deleted"));
        }
        RoleCommand::GrantPermission { role, perm_type, perm_key: key, end, range } => {
            let perm_type = match perm_type.to_uppercase().as_str() {
                "READ" => PermType::Read,
                "WRITE" => PermType::Write,
                "READWRITE" => PermType::Readwrite,
                _ => {
                    return Err(CtlError::new(EXIT_BAD_ARGS, format!("invalid permission type {perm_type}")))
                }
            };
            let range_end = range_end(&key, end, &range)?;
            let perm = Permission { perm_type: perm_type as i32, key: key.into_bytes(), range_end };
            let req = AuthRoleGrantPermissionRequest { name: role.clone(), perm: Some(perm) };
            c.call(|| async { a().role_grant_permission(req.clone()).await }).await?;
            out.line(&format!("Role {role} updated"));
        }
        RoleCommand::RevokePermission { role, perm_key: key, end, range } => {
            let range_end = range_end(&key, end, &range)?;
            let req = AuthRoleRevokePermissionRequest {
                role: role.clone(),
                key: key.clone().into_bytes(),
                range_end: range_end.clone(),
            };
            c.call(|| async { a().role_revoke_permission(req.clone()).await }).await?;
            if range_end.is_empty() {
                out.line(&format!("Permission of key {key} is revoked from role {role}"));
            } else {
                let end = String::from_utf8_lossy(&range_end);
                out.line(&format!("Permission of range [{key}, {end}) is revoked from role {role}"));
            }
        }
    }
    Ok(())
}

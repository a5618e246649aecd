//! `--auth-token jwt,...`: the same etcdctl session against etcd 3.5 and rkv given the same
//! keys, tokens each issues accepted by the other (same claims, same signature scheme), a
//! verify-only member, expiry, and bad options refused at start.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rkv_proto::etcdserverpb::{
    auth_client::AuthClient, kv_client::KvClient, AuthenticateRequest, RangeRequest,
};
use tonic::transport::Channel;

use common::{channel, etcdctl, tempdir, Etcd, Rkv};

/// (private key, public key) files for a sign method: RSA from openssl (PKCS#1 or PKCS#8 as
/// the local openssl writes it, as an etcd user would make them), ECDSA P-256 from rcgen, an
/// HMAC secret (no public key file).
fn keys(dir: &Path, method: &str) -> (PathBuf, PathBuf) {
    let (private, public) = (dir.join(format!("{method}.key")), dir.join(format!("{method}.pub")));
    if method.starts_with("HS") {
        // etcd uses the priv-key file's bytes as the HMAC secret.
        std::fs::write(&private, rand::random::<[u8; 32]>()).unwrap_or_else(|e| panic!("{e}"));
    } else if method.starts_with("ES") {
        let key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&private, key.serialize_pem()).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&public, key.public_key_pem()).unwrap_or_else(|e| panic!("{e}"));
    } else {
        let run = |args: &[&str]| {
            let out = Command::new("openssl").args(args).output().unwrap_or_else(|e| panic!("openssl: {e}"));
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        let (k, p) = (private.display().to_string(), public.display().to_string());
        run(&["genrsa", "-out", &k, "2048"]);
        run(&["rsa", "-in", &k, "-pubout", "-out", &p]);
    }
    (private, public)
}

/// A fresh directory under `dir` for one more server.
fn sub(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("{e}"));
    path
}

fn jwt_flag(private: Option<&Path>, public: Option<&Path>, method: &str, ttl: &str) -> String {
    let mut flag = format!("--auth-token=jwt,sign-method={method},ttl={ttl}");
    if let Some(p) = private {
        flag.push_str(&format!(",priv-key={}", p.display()));
    }
    if let Some(p) = public {
        flag.push_str(&format!(",pub-key={}", p.display()));
    }
    flag
}

async fn token(ch: Channel) -> Result<String, String> {
    let r = AuthClient::new(ch)
        .authenticate(AuthenticateRequest { name: "root".into(), password: "rootpw".into() })
        .await;
    r.map(|r| r.into_inner().token).map_err(|s| format!("{:?} {}", s.code(), s.message()))
}

async fn get_with(ch: Channel, token: &str) -> Result<i64, String> {
    let mut req = tonic::Request::new(RangeRequest { key: b"k".to_vec(), ..Default::default() });
    req.metadata_mut().insert("token", token.parse().unwrap_or_else(|e| panic!("{e:?}")));
    KvClient::new(ch)
        .range(req)
        .await
        .map(|r| r.into_inner().count)
        .map_err(|s| format!("{:?} {}", s.code(), s.message()))
}

/// The claims of a JWT, as JSON.
fn claims(token: &str) -> serde_json::Value {
    use base64::Engine;
    let part = token.split('.').nth(1).unwrap_or_else(|| panic!("not a JWT: {token}"));
    let json =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap_or_else(|e| panic!("{e}"));
    serde_json::from_slice(&json).unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_tokens_match_etcd_and_cross_verify() {
    for method in ["RS256", "ES256", "HS256"] {
        let dir = tempdir();
        let (private, public) = keys(dir.path(), method);
        let public = Some(public.as_path()).filter(|_| !method.starts_with("HS"));
        let flag = jwt_flag(Some(&private), public, method, "5m");
        let etcd = Etcd::start_with(dir.path(), &[&flag]);
        let rkv = Rkv::start_with(&sub(dir.path(), "rkv"), &[&flag]);
        let session: &[&[&str]] = &[
            &["user", "add", "root:rootpw"],
            &["auth", "enable"],
            &["--user=root:rootpw", "put", "k", "v"],
            &["--user=root:rootpw", "get", "k"],
            &["--user=root:wrong", "get", "k"],
            &["get", "k"],
            &["--user=root:rootpw", "user", "add", "u:upw"],
            &["--user=u:upw", "get", "k"],
            &["--user=root:rootpw", "auth", "status"],
        ];
        for args in session {
            let (want, got) = (etcdctl(&etcd, args, None), etcdctl(&rkv, args, None));
            assert_eq!(got, want, "{method}: etcdctl {args:?}");
        }
        let (e, r) = (channel(&etcd).await, channel(&rkv).await);
        let (from_etcd, from_rkv) = (token(e.clone()).await, token(r.clone()).await);
        let (from_etcd, from_rkv) =
            (from_etcd.unwrap_or_else(|e| panic!("{e}")), from_rkv.unwrap_or_else(|e| panic!("{e}")));
        let header = |t: &str| t.split('.').next().map(str::to_string);
        assert_eq!(header(&from_rkv), header(&from_etcd), "{method}: JWT headers");
        let (ce, cr) = (claims(&from_etcd), claims(&from_rkv));
        for field in ["username", "revision"] {
            assert_eq!(cr[field], ce[field], "{method}: claim {field}");
        }
        assert!(cr["exp"].as_u64().is_some_and(|exp| exp.abs_diff(ce["exp"].as_u64().unwrap_or(0)) < 30));
        // Same keys, same claims: each accepts the other's token.
        assert_eq!(get_with(r.clone(), &from_etcd).await, Ok(1), "{method}: rkv given etcd's token");
        assert_eq!(get_with(e.clone(), &from_rkv).await, Ok(1), "{method}: etcd given rkv's token");
        // A token signed with another key is refused by both alike.
        let forged = format!("{}.{}", &from_rkv[..from_rkv.rfind('.').unwrap_or(0)], "AAAA");
        assert_eq!(get_with(r, &forged).await, get_with(e, &forged).await, "{method}: forged signature");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_only_members_and_expiry() {
    let dir = tempdir();
    let (private, public) = keys(dir.path(), "ES256");
    // A member with the public key only verifies; etcd refuses to sign the same way.
    let verify_only = jwt_flag(None, Some(&public), "ES256", "5m");
    let etcd = Etcd::start_with(dir.path(), &[&verify_only]);
    let rkv = Rkv::start_with(&sub(dir.path(), "rkv"), &[&verify_only]);
    for args in [&["user", "add", "root:rootpw"][..], &["auth", "enable"]] {
        assert_eq!(etcdctl(&rkv, args, None), etcdctl(&etcd, args, None), "{args:?}");
    }
    let (e, r) = (channel(&etcd).await, channel(&rkv).await);
    assert_eq!(token(r).await, token(e).await, "Authenticate on a verify-only member");
    drop(rkv);

    // A 1 s lifetime: the token works, then expires.
    let short = jwt_flag(Some(&private), None, "ES256", "1s");
    let rkv = Rkv::start_with(&sub(dir.path(), "short"), &[&short]);
    for args in
        [&["user", "add", "root:rootpw"][..], &["auth", "enable"], &["--user=root:rootpw", "put", "k", "v"]]
    {
        let run = etcdctl(&rkv, args, None);
        assert_eq!(run.code, 0, "{args:?}: {run:?}");
    }
    let r = channel(&rkv).await;
    let t = token(r.clone()).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(get_with(r.clone(), &t).await, Ok(1));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match get_with(r.clone(), &t).await {
            Ok(_) => assert!(Instant::now() < deadline, "the token did not expire"),
            Err(e) => {
                assert_eq!(e, "Unauthenticated etcdserver: invalid auth token");
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn bad_jwt_options_are_refused_at_start() {
    let dir = tempdir();
    let (private, public) = keys(dir.path(), "ES256");
    let (_, rsa_public) = keys(dir.path(), "RS256");
    for (flag, message) in [
        ("--auth-token=jwt,pub-key=/nonexistent,sign-method=RS256".to_string(), "/nonexistent"),
        ("--auth-token=jwt,sign-method=ES256".to_string(), "auth: missing key data"),
        (jwt_flag(Some(&private), Some(&public), "", "5m"), "auth: invalid auth signature method"),
        (jwt_flag(Some(&private), Some(&public), "XX999", "5m"), "auth: invalid auth signature method"),
        (
            format!("{},color=blue", jwt_flag(Some(&private), None, "ES256", "5m")),
            "auth: invalid auth options",
        ),
        (jwt_flag(Some(&private), Some(&rsa_public), "ES256", "5m"), "auth:"),
        ("--auth-token=paper".to_string(), "auth: invalid auth options"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_rkv"))
            .arg(format!("--data-dir={}", dir.path().join("never").display()))
            .arg(&flag)
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag}: started");
        assert!(stderr.contains(message), "{flag}: {stderr}");
    }
}

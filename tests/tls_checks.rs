//! etcd's checks beyond a trusted chain: revocation lists (--client-crl-file,
//! --peer-crl-file), the peer's allowed common name (--peer-cert-allowed-cn) and the TLS 1.2
//! cipher suites (--cipher-suites), with etcdctl 3.5 and curl as the other side.

mod common;

use std::process::Command;

use common::tls::{client_cert_auth_member, curl, flag, peer_tls_cluster, tls_member, Ca, Pair};
use common::{etcdctl, tempdir};

#[test]
fn revoked_client_certificates_are_refused() {
    let dir = tempdir();
    let ca = Ca::new(dir.path(), "ca");
    let (alice, bob) = (ca.issue("alice"), ca.issue("bob"));
    let crl = ca.crl(&[&bob]);
    let (rkv, url) = client_cert_auth_member(dir.path(), &ca, &[&flag("client-crl-file", &crl)]);
    let cacert = flag("cacert", &ca.cert);
    let as_user = |pair: &Pair, args: &[&str]| {
        let (cert, key) = (flag("cert", &pair.cert), flag("key", &pair.key));
        let all: Vec<&str> = ["--command-timeout=3s", cacert.as_str(), cert.as_str(), key.as_str()]
            .into_iter()
            .chain(args.iter().copied())
            .collect();
        etcdctl(&url, &all, None)
    };
    let put = as_user(&alice, &["put", "k", "v"]);
    assert_eq!((put.code, put.stdout.as_str()), (0, "OK\n"), "{put:?}");
    let revoked = as_user(&bob, &["get", "k"]);
    assert_ne!(revoked.code, 0, "a revoked certificate was accepted: {revoked:?}");
    assert!(!revoked.stdout.contains('v'));
    let health = format!("https://127.0.0.1:{}/health", rkv.port);
    assert!(curl(&health, &alice, &["-k"]).status.success());
    assert!(!curl(&health, &bob, &["-k"]).status.success());
}

/// Members that must present CN "peer": the cluster forms and survives with such
/// certificates, while a certificate from the same CA with another name, or revoked by the
/// peer CRL, cannot reach the peer port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_must_present_the_allowed_common_name() {
    let dir = tempdir();
    let ca = Ca::new(dir.path(), "peer");
    let peer = ca.issue("peer");
    let intruder = ca.issue("intruder");
    let revoked = ca.issue_as("peer", "peer-revoked");
    let crl = ca.crl(&[&revoked]);
    let cluster = peer_tls_cluster(
        dir.path(),
        3,
        &ca,
        &peer,
        &["--peer-cert-allowed-cn=peer", &flag("peer-crl-file", &crl)],
    );
    let put = etcdctl(&cluster.members[0], &["put", "k", "v"], None);
    assert_eq!(put.code, 0, "{put:?}");
    let got = etcdctl(&cluster.members[2], &["get", "k", "--print-value-only"], None);
    assert_eq!(got.stdout, "v\n");
    let members = format!("{}/rkvpb.Peer/Members", cluster.peers[0].1);
    assert!(curl(&members, &peer, &["-k"]).status.success(), "the allowed name was refused");
    assert!(!curl(&members, &intruder, &["-k"]).status.success(), "another name was accepted");
    assert!(!curl(&members, &revoked, &["-k"]).status.success(), "a revoked certificate was accepted");
}

#[test]
fn cipher_suites_limit_tls12() {
    let dir = tempdir();
    let ca = Ca::new(dir.path(), "ca");
    let server = ca.issue("server");
    let files = [flag("cert-file", &server.cert), flag("key-file", &server.key)];
    let (rkv, url) = tls_member(
        dir.path(),
        &[
            &files[0],
            &files[1],
            "--cipher-suites=TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,TLS_RSA_WITH_AES_128_CBC_SHA",
        ],
    );
    let health = format!("https://127.0.0.1:{}/health", rkv.port);
    let tls12 = |cipher: &str| {
        curl(&health, &server, &["-k", "--tls-max", "1.2", "--ciphers", cipher]).status.success()
    };
    assert!(tls12("ECDHE-ECDSA-AES128-GCM-SHA256"), "the configured suite was refused");
    assert!(!tls12("ECDHE-ECDSA-AES256-GCM-SHA384"), "a suite not configured was accepted");
    // TLS 1.3 is not limited (Go does not let its suites be configured either).
    assert!(curl(&health, &server, &["-k", "--tlsv1.3"]).status.success());
    let run = etcdctl(&url, &[&flag("cacert", &ca.cert), "put", "a", "1"], None);
    assert_eq!(run.code, 0, "{run:?}");

    for (args, message) in [
        (&["--cipher-suites=TLS_NOPE"][..], "unexpected TLS cipher suite \"TLS_NOPE\""),
        (
            &["--cipher-suites=TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "--tls-min-version=TLS1.3"],
            "cipher suites cannot be configured when only TLS1.3 or greater is supported",
        ),
        (&["--peer-cert-allowed-cn=a", "--peer-cert-allowed-hostname=b"], "mutually exclusive"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_rkv"))
            .arg(format!("--data-dir={}", dir.path().join("never").display()))
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(message), "{args:?}: {stderr}");
    }
}

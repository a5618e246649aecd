//! `-w k8s`: what a Kubernetes object under `/registry/...` is, instead of its binary bytes.
//!
//! kube-apiserver stores built-in objects as the bytes `k8s\0` followed by a protobuf
//! `runtime.Unknown` (k8s.io/apimachinery/pkg/runtime/generated.proto) whose `raw` field is
//! the object's own protobuf; every built-in type has its `ObjectMeta` as field 1. Custom
//! resources, CRDs and APIServices are stored as JSON. Encrypted values
//! (`--encryption-provider-config`) start with `k8s:enc:<provider>:v1:<key>:`.

use prost::Message;

const PROTOBUF_PREFIX: &[u8] = b"k8s\x00";
const ENCRYPTED_PREFIX: &[u8] = b"k8s:enc:";
const CBOR_SELF_DESCRIBED: &[u8] = &[0xd9, 0xd9, 0xf7];

/// `runtime.Unknown`, the envelope of the protobuf encoding.
#[derive(Clone, PartialEq, Message)]
struct Unknown {
    #[prost(message, optional, tag = "1")]
    type_meta: Option<TypeMeta>,
    #[prost(bytes = "vec", optional, tag = "2")]
    raw: Option<Vec<u8>>,
    #[prost(string, optional, tag = "3")]
    content_encoding: Option<String>,
    #[prost(string, optional, tag = "4")]
    content_type: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct TypeMeta {
    #[prost(string, optional, tag = "1")]
    api_version: Option<String>,
    #[prost(string, optional, tag = "2")]
    kind: Option<String>,
}

/// The leading field of every built-in object: `metadata`, an `ObjectMeta`.
#[derive(Clone, PartialEq, Message)]
struct ObjectWithMeta {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
}

#[derive(Clone, PartialEq, Message)]
struct ObjectMeta {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
    #[prost(string, optional, tag = "3")]
    namespace: Option<String>,
}

/// What a stored value says about its object.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Object {
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

/// How a value under `/registry` is stored.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    Object(Object),
    /// Encrypted at rest by the apiserver: the provider and key name.
    Encrypted(String),
    /// Not a Kubernetes object (e.g. `compact_rev_key`, or bytes we cannot read).
    Opaque(&'static str),
}

pub fn decode(value: &[u8]) -> Decoded {
    if let Some(rest) = value.strip_prefix(PROTOBUF_PREFIX) {
        return decode_protobuf(rest).map_or(Decoded::Opaque("undecodable protobuf"), Decoded::Object);
    }
    if let Some(rest) = value.strip_prefix(ENCRYPTED_PREFIX) {
        // <provider>:v1:<key name>:<ciphertext>; the ciphertext may hold any byte.
        let mut parts = rest.splitn(4, |&b| b == b':');
        let provider = parts.next().unwrap_or_default();
        let _version = parts.next();
        let key = parts.next().unwrap_or_default();
        return Decoded::Encrypted(format!(
            "{}:{}",
            String::from_utf8_lossy(provider),
            String::from_utf8_lossy(key)
        ));
    }
    if value.starts_with(CBOR_SELF_DESCRIBED) {
        return Decoded::Opaque("CBOR");
    }
    if value.first() == Some(&b'{') {
        return decode_json(value)
            .map_or(Decoded::Opaque("JSON without apiVersion and kind"), Decoded::Object);
    }
    Decoded::Opaque("not a Kubernetes object")
}

fn decode_protobuf(envelope: &[u8]) -> Option<Object> {
    let unknown = Unknown::decode(envelope).ok()?;
    let type_meta = unknown.type_meta.unwrap_or_default();
    let meta = ObjectWithMeta::decode(unknown.raw.as_deref().unwrap_or_default())
        .ok()
        .and_then(|o| o.metadata)
        .unwrap_or_default();
    Some(Object {
        api_version: type_meta.api_version.unwrap_or_default(),
        kind: type_meta.kind.filter(|k| !k.is_empty())?,
        namespace: meta.namespace.unwrap_or_default(),
        name: meta.name.unwrap_or_default(),
    })
}

fn decode_json(value: &[u8]) -> Option<Object> {
    let v: serde_json::Value = serde_json::from_slice(value).ok()?;
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    let kind = text(&v["kind"]);
    if kind.is_empty() {
        return None;
    }
    Some(Object {
        api_version: text(&v["apiVersion"]),
        kind,
        namespace: text(&v["metadata"]["namespace"]),
        name: text(&v["metadata"]["name"]),
    })
}

/// One line per key: the key, then what is stored there.
pub fn describe(key: &[u8], value: &[u8]) -> String {
    let key = String::from_utf8_lossy(key);
    if value.is_empty() {
        // --keys-only, or a delete event's kv.
        return key.into_owned();
    }
    match decode(value) {
        Decoded::Object(o) if o.namespace.is_empty() => {
            format!("{key} {} {} {}", o.api_version, o.kind, o.name)
        }
        Decoded::Object(o) => format!("{key} {} {} {}/{}", o.api_version, o.kind, o.namespace, o.name),
        Decoded::Encrypted(how) => format!("{key} (encrypted: {how})"),
        Decoded::Opaque(what) => format!("{key} ({what}, {} bytes)", value.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn protobuf_configmap(namespace: Option<&str>) -> Vec<u8> {
        let raw = ObjectWithMeta {
            metadata: Some(ObjectMeta {
                name: Some("settings".into()),
                namespace: namespace.map(Into::into),
            }),
        }
        .encode_to_vec();
        let envelope = Unknown {
            type_meta: Some(TypeMeta { api_version: Some("v1".into()), kind: Some("ConfigMap".into()) }),
            raw: Some(raw),
            content_encoding: Some(String::new()),
            content_type: Some(String::new()),
        };
        [PROTOBUF_PREFIX, &envelope.encode_to_vec()].concat()
    }

    #[test]
    fn protobuf_objects_show_type_and_name() {
        assert_eq!(
            describe(b"/registry/configmaps/default/settings", &protobuf_configmap(Some("default"))),
            "/registry/configmaps/default/settings v1 ConfigMap default/settings"
        );
        assert_eq!(describe(b"/k", &protobuf_configmap(None)), "/k v1 ConfigMap settings");
    }

    #[test]
    fn json_objects_show_type_and_name() {
        let crd = br#"{"apiVersion":"apiextensions.k8s.io/v1","kind":"CustomResourceDefinition","metadata":{"name":"crontabs.stable.example.com"}}"#;
        assert_eq!(
            describe(b"/registry/apiextensions.k8s.io/customresourcedefinitions/x", crd),
            "/registry/apiextensions.k8s.io/customresourcedefinitions/x apiextensions.k8s.io/v1 CustomResourceDefinition crontabs.stable.example.com"
        );
    }

    #[test]
    fn other_values_are_named_not_printed() {
        assert_eq!(describe(b"compact_rev_key", b"12"), "compact_rev_key (not a Kubernetes object, 2 bytes)");
        assert_eq!(
            describe(b"/registry/secrets/a/b", b"k8s:enc:aescbc:v1:key1:\x00\xff:ciphertext"),
            "/registry/secrets/a/b (encrypted: aescbc:key1)"
        );
        assert_eq!(describe(b"/k", b"k8s\x00\xff\xff"), "/k (undecodable protobuf, 6 bytes)");
        assert_eq!(describe(b"/k", b"\xd9\xd9\xf7\xa0"), "/k (CBOR, 4 bytes)");
        assert_eq!(describe(b"/k", b"{}"), "/k (JSON without apiVersion and kind, 2 bytes)");
    }
}

//! `txn`: etcdctl's line grammar, read from stdin.
//!
//! ```text
//! <compare>*      e.g. mod("key1") > "0"      value("k") = "v"
//! <blank line>
//! <success op>*   e.g. put key1 "some value"  get --prefix k   del k
//! <blank line>
//! <failure op>*
//! <blank line>
//! ```

use std::io::BufRead;

use clap::{Parser, Subcommand};
use rkv_proto::etcdserverpb::{
    compare::{CompareResult, CompareTarget, TargetUnion},
    request_op::Request,
    Compare, RequestOp, TxnRequest,
};

use super::kv::{DelArgs, GetArgs, PutArgs};
use crate::client::Endpoints;
use crate::error::{CtlError, EXIT_INVALID_INPUT};
use crate::print::{Out, Printer};

/// Reads the three sections of a txn from `input`; prompts go to stdout when interactive.
pub fn read_txn(input: &mut impl BufRead, interactive: bool) -> Result<TxnRequest, CtlError> {
    prompt(interactive, "compares:");
    let compare = read_section(input)?.iter().map(|l| parse_compare(l)).collect::<Result<_, _>>()?;
    prompt(interactive, "success requests (get, put, del):");
    let success = read_section(input)?.iter().map(|l| parse_op(l)).collect::<Result<_, _>>()?;
    prompt(interactive, "failure requests (get, put, del):");
    let failure = read_section(input)?.iter().map(|l| parse_op(l)).collect::<Result<_, _>>()?;
    Ok(TxnRequest { compare, success, failure })
}

fn prompt(interactive: bool, text: &str) {
    if interactive {
        println!("{text}");
    }
}

/// Lines up to the next blank one. Like etcdctl, running out of input before it is an error.
fn read_section(input: &mut impl BufRead) -> Result<Vec<String>, CtlError> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        let n = input.read_line(&mut line).map_err(|e| CtlError::new(EXIT_INVALID_INPUT, e.to_string()))?;
        if n == 0 || !line.ends_with('\n') {
            return Err(CtlError::new(EXIT_INVALID_INPUT, "EOF"));
        }
        let line = line.trim();
        if line.is_empty() {
            return Ok(lines);
        }
        lines.push(line.to_string());
    }
}

/// etcdctl's `parseCompare`: `<target>("<key>") <op> "<value>"`.
pub fn parse_compare(line: &str) -> Result<Compare, CtlError> {
    let Some((target, rest)) = line.split_once('(') else {
        return Err(CtlError::new(EXIT_INVALID_INPUT, format!("malformed comparison: {line}")));
    };
    // fmt.Sscanf(rest, "%q) %s %q"): whatever was scanned before a failure shows in the error.
    let (mut key, mut op, mut value) = (String::new(), String::new(), String::new());
    let scanned = (|| {
        let (k, rest) = take_go_quoted(rest)?;
        key = k;
        let rest = rest.strip_prefix(')')?.trim_start();
        let op_end = rest.find(char::is_whitespace)?;
        op = rest[..op_end].to_string();
        let (v, _) = take_go_quoted(rest[op_end..].trim_start())?;
        value = v;
        Some(())
    })();
    if scanned.is_none() {
        return Err(CtlError::new(
            EXIT_INVALID_INPUT,
            format!(
                "malformed comparison: {line}; got {target}({}) {op} {}",
                crate::goquote::quote(key.as_bytes()),
                crate::goquote::quote(value.as_bytes())
            ),
        ));
    }
    let op = op.as_str();
    let result = match op {
        "=" => CompareResult::Equal,
        "!=" => CompareResult::NotEqual,
        "<" => CompareResult::Less,
        ">" => CompareResult::Greater,
        _ => {
            return Err(CtlError::new(
                EXIT_INVALID_INPUT,
                format!("malformed comparison: {line} (unknown op {op})"),
            ))
        }
    };
    let int = || {
        value
            .parse::<i64>()
            .map_err(|_| CtlError::new(EXIT_INVALID_INPUT, format!("invalid txn compare request: {line}")))
    };
    let (target, union) = match target {
        "ver" | "version" => (CompareTarget::Version, TargetUnion::Version(int()?)),
        "c" | "create" => (CompareTarget::Create, TargetUnion::CreateRevision(int()?)),
        "m" | "mod" => (CompareTarget::Mod, TargetUnion::ModRevision(int()?)),
        "val" | "value" => (CompareTarget::Value, TargetUnion::Value(value.clone().into_bytes())),
        "lease" => {
            let id = i64::from_str_radix(&value, 16).map_err(|_| {
                CtlError::new(EXIT_INVALID_INPUT, format!("invalid txn compare request: {line}"))
            })?;
            (CompareTarget::Lease, TargetUnion::Lease(id))
        }
        other => {
            return Err(CtlError::new(
                EXIT_INVALID_INPUT,
                format!("malformed comparison: {line} (unknown target {other})"),
            ))
        }
    };
    Ok(Compare {
        result: result as i32,
        target: target as i32,
        key: key.into_bytes(),
        target_union: Some(union),
        range_end: Vec::new(),
    })
}

/// A Go quoted string (`"..."` with escapes, or a raw backquoted one) at the start of `s`.
fn take_go_quoted(s: &str) -> Option<(String, &str)> {
    if let Some(rest) = s.strip_prefix('`') {
        let end = rest.find('`')?;
        return Some((rest[..end].to_string(), &rest[end + 1..]));
    }
    let rest = s.strip_prefix('"')?;
    let mut out = Vec::new();
    let mut chars = rest.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((String::from_utf8_lossy(&out).into_owned(), &rest[i + 1..])),
            '\\' => {
                let (_, e) = chars.next()?;
                match e {
                    'n' => out.push(b'\n'),
                    't' => out.push(b'\t'),
                    'r' => out.push(b'\r'),
                    'a' => out.push(7),
                    'b' => out.push(8),
                    'f' => out.push(12),
                    'v' => out.push(11),
                    '\\' => out.push(b'\\'),
                    '"' => out.push(b'"'),
                    '\'' => out.push(b'\''),
                    'x' => {
                        let h: String = [chars.next()?.1, chars.next()?.1].iter().collect();
                        out.push(u8::from_str_radix(&h, 16).ok()?);
                    }
                    _ => return None,
                }
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    None
}

/// etcdctl's `Argify`: double-quoted (Go escapes), single-quoted, or bare words.
pub fn argify(line: &str) -> Option<Vec<String>> {
    let mut args = Vec::new();
    let mut rest = line.trim_start();
    while !rest.is_empty() {
        if rest.starts_with('"') {
            let (s, after) = take_go_quoted(rest)?;
            args.push(s);
            rest = after;
        } else if let Some(r) = rest.strip_prefix('\'') {
            let end = r.find('\'')?;
            args.push(r[..end].to_string());
            rest = &r[end + 1..];
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            args.push(rest[..end].to_string());
            rest = &rest[end..];
        }
        rest = rest.trim_start();
    }
    Some(args)
}

#[derive(Parser, Debug)]
#[command(no_binary_name = true)]
struct OpLine {
    #[command(subcommand)]
    op: OpKind,
}

#[derive(Subcommand, Debug)]
enum OpKind {
    Put(PutArgs),
    Get(GetArgs),
    #[command(alias = "delete")]
    Del(DelArgs),
}

fn parse_op(line: &str) -> Result<RequestOp, CtlError> {
    let invalid = || CtlError::new(EXIT_INVALID_INPUT, format!("invalid txn request: {line}"));
    let args = argify(line).ok_or_else(invalid)?;
    if args.len() < 2 {
        return Err(CtlError::new(EXIT_INVALID_INPUT, format!("invalid txn compare request: {line}")));
    }
    let parsed = OpLine::try_parse_from(args).map_err(|_| invalid())?;
    let request = match parsed.op {
        OpKind::Put(p) => Request::RequestPut(p.request(|| None)?),
        OpKind::Get(g) => Request::RequestRange(g.request()?),
        OpKind::Del(d) => Request::RequestDeleteRange(d.request()?),
    };
    Ok(RequestOp { request: Some(request) })
}

/// `txn [--interactive]`: reads the whole transaction, then sends it without the command timeout.
pub async fn run(
    interactive: bool,
    eps: &Endpoints,
    printer: &Printer,
    out: &mut Out,
) -> Result<(), CtlError> {
    let req = read_txn(&mut std::io::stdin().lock(), interactive)?;
    let c = eps.first_unbounded().await?;
    let resp = c.call(|| async { c.kv().txn(req.clone()).await }).await?;
    printer.txn(out, &resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_etcdctl_txn_input() {
        let input = "mod(\"key1\") > \"0\"\nvalue(\"k\") = \"a b\"\n\nput key1 \"overwrote-key1\"\nget --prefix k\n\ndel 'k 2'\n\n";
        let t = read_txn(&mut input.as_bytes(), false).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.compare.len(), 2);
        assert_eq!(t.compare[0].target_union, Some(TargetUnion::ModRevision(0)));
        assert_eq!(t.compare[1].target_union, Some(TargetUnion::Value(b"a b".to_vec())));
        assert_eq!(t.success.len(), 2);
        match &t.failure[0].request {
            Some(Request::RequestDeleteRange(d)) => assert_eq!(d.key, b"k 2"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn rejects_malformed_input() {
        assert!(parse_compare("mod(key) > 0").is_err());
        assert!(parse_compare("size(\"k\") = \"1\"").is_err());
        assert!(parse_op("put").is_err());
        assert!(read_txn(&mut "mod(\"k\") > \"0\"\n".as_bytes(), false).is_err());
    }
}

//! put, get, del and compaction: etcdctl's argument rules, then one RPC and its printer.

use std::io::Read;

use clap::Args;
use rkv_proto::etcdserverpb::{
    range_request::{SortOrder, SortTarget},
    CompactionRequest, DeleteRangeRequest, PutRequest, RangeRequest,
};

use crate::client::Endpoints;
use crate::error::{CtlError, EXIT_BAD_ARGS, EXIT_BAD_FEATURE, EXIT_ERROR};
use crate::print::{Format, Out, Printer};

#[derive(Args, Debug, Clone, Default)]
pub struct PutArgs {
    /// Return the previous key-value pair before modification.
    #[arg(long = "prev-kv")]
    pub prev_kv: bool,
    /// Lease ID (in hexadecimal) to attach to the key.
    #[arg(long, default_value = "0")]
    pub lease: String,
    /// Update the key using its current value.
    #[arg(long = "ignore-value")]
    pub ignore_value: bool,
    /// Update the key using its current lease.
    #[arg(long = "ignore-lease")]
    pub ignore_lease: bool,
    pub args: Vec<String>,
}

impl PutArgs {
    /// etcdctl's `getPutOp`; `stdin` supplies the value when only the key is given.
    pub fn request(&self, stdin: impl FnOnce() -> Option<String>) -> Result<PutRequest, CtlError> {
        let need = "put command needs 1 argument and input from stdin or 2 arguments";
        let Some(key) = self.args.first() else {
            return Err(CtlError::bad_args(need));
        };
        if self.ignore_value && self.args.len() > 1 {
            return Err(CtlError::bad_args("put command needs only 1 argument when 'ignore-value' is set"));
        }
        let mut value = String::new();
        if !self.ignore_value {
            value = match self.args.get(1) {
                Some(v) => v.clone(),
                None => stdin().filter(|v| !v.is_empty()).ok_or_else(|| CtlError::bad_args(need))?,
            };
        }
        let lease = i64::from_str_radix(&self.lease, 16).map_err(|e| {
            CtlError::bad_args(format!(
                "bad lease ID ({}), expecting ID in Hex",
                go_parse_int_error(&self.lease, &e)
            ))
        })?;
        Ok(PutRequest {
            key: key.clone().into_bytes(),
            value: value.into_bytes(),
            lease,
            prev_kv: self.prev_kv,
            ignore_value: self.ignore_value,
            ignore_lease: self.ignore_lease,
        })
    }
}

#[derive(Args, Debug, Clone)]
pub struct GetArgs {
    /// Linearizable(l) or Serializable(s).
    #[arg(long, default_value = "l")]
    pub consistency: String,
    /// Order of results; ASCEND or DESCEND (ASCEND by default).
    #[arg(long, default_value = "")]
    pub order: String,
    /// Sort target; CREATE, KEY, MODIFY, VALUE, or VERSION.
    #[arg(long = "sort-by", default_value = "")]
    pub sort_by: String,
    /// Maximum number of results.
    #[arg(long, default_value_t = 0)]
    pub limit: i64,
    /// Get keys with matching prefix.
    #[arg(long)]
    pub prefix: bool,
    /// Get keys that are greater than or equal to the given key using byte compare.
    #[arg(long = "from-key")]
    pub from_key: bool,
    /// Specify the kv revision.
    #[arg(long, default_value_t = 0)]
    pub rev: i64,
    /// Get only the keys.
    #[arg(long = "keys-only")]
    pub keys_only: bool,
    /// Get only the count.
    #[arg(long = "count-only")]
    pub count_only: bool,
    /// Only write values when using the "simple" output format.
    #[arg(long = "print-value-only")]
    pub print_value_only: bool,
    #[arg(long = "min-mod-rev", default_value_t = 0)]
    pub min_mod_rev: i64,
    #[arg(long = "max-mod-rev", default_value_t = 0)]
    pub max_mod_rev: i64,
    #[arg(long = "min-create-rev", default_value_t = 0)]
    pub min_create_rev: i64,
    #[arg(long = "max-create-rev", default_value_t = 0)]
    pub max_create_rev: i64,
    pub args: Vec<String>,
}

/// clientv3's `getPrefix`: the smallest key greater than every key with this prefix.
pub fn prefix_end(key: &[u8]) -> Vec<u8> {
    let mut end = key.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte is 0xff: no upper bound.
    vec![0]
}

/// The (key, range_end) of etcdctl's `--prefix` / `--from-key` / explicit range_end options.
fn key_range(key: &str, range_end: Option<&String>, prefix: bool, from_key: bool) -> (Vec<u8>, Vec<u8>) {
    let mut key = key.as_bytes().to_vec();
    let mut end = range_end.map(|e| e.as_bytes().to_vec()).unwrap_or_default();
    if prefix {
        if key.is_empty() {
            key = vec![0];
            end = vec![0];
        } else {
            end = prefix_end(&key);
        }
    }
    if from_key {
        if key.is_empty() {
            key = vec![0];
        }
        end = vec![0];
    }
    (key, end)
}

impl GetArgs {
    /// etcdctl's `getGetOp` + clientv3's op options.
    pub fn request(&self) -> Result<RangeRequest, CtlError> {
        let Some(key) = self.args.first() else {
            return Err(CtlError::bad_args(
                "get command needs one argument as key and an optional argument as range_end",
            ));
        };
        if self.prefix && self.from_key {
            return Err(CtlError::bad_args(
                "`--prefix` and `--from-key` cannot be set at the same time, choose one",
            ));
        }
        if self.keys_only && self.count_only {
            return Err(CtlError::bad_args(
                "`--keys-only` and `--count-only` cannot be set at the same time, choose one",
            ));
        }
        let serializable = match self.consistency.as_str() {
            "s" => true,
            "l" => false,
            other => {
                return Err(CtlError::new(EXIT_BAD_FEATURE, format!("unknown consistency flag {other:?}")));
            }
        };
        if self.args.len() > 1 && (self.prefix || self.from_key) {
            return Err(CtlError::bad_args(
                "too many arguments, only accept one argument when `--prefix` or `--from-key` is set",
            ));
        }
        let mut order = match self.order.to_uppercase().as_str() {
            "ASCEND" => SortOrder::Ascend,
            "DESCEND" => SortOrder::Descend,
            "" => SortOrder::None,
            _ => return Err(CtlError::new(EXIT_BAD_FEATURE, format!("bad sort order {}", self.order))),
        };
        let target = match self.sort_by.to_uppercase().as_str() {
            "CREATE" => SortTarget::Create,
            "KEY" | "" => SortTarget::Key,
            "MODIFY" => SortTarget::Mod,
            "VALUE" => SortTarget::Value,
            "VERSION" => SortTarget::Version,
            _ => return Err(CtlError::new(EXIT_BAD_FEATURE, format!("bad sort target {}", self.sort_by))),
        };
        // clientv3: ascending by key is the server's natural order, so no sort is asked.
        if target == SortTarget::Key && order == SortOrder::Ascend {
            order = SortOrder::None;
        }
        let (key, range_end) = key_range(key, self.args.get(1), self.prefix, self.from_key);
        Ok(RangeRequest {
            key,
            range_end,
            limit: self.limit,
            revision: self.rev.max(0),
            sort_order: order as i32,
            sort_target: target as i32,
            serializable,
            keys_only: self.keys_only,
            count_only: self.count_only,
            min_mod_revision: self.min_mod_rev,
            max_mod_revision: self.max_mod_rev,
            min_create_revision: self.min_create_rev,
            max_create_revision: self.max_create_rev,
        })
    }
}

#[derive(Args, Debug, Clone, Default)]
pub struct DelArgs {
    /// Delete keys with matching prefix.
    #[arg(long)]
    pub prefix: bool,
    /// Return deleted key-value pairs.
    #[arg(long = "prev-kv")]
    pub prev_kv: bool,
    /// Delete keys that are greater than or equal to the given key using byte compare.
    #[arg(long = "from-key")]
    pub from_key: bool,
    pub args: Vec<String>,
}

impl DelArgs {
    pub fn request(&self) -> Result<DeleteRangeRequest, CtlError> {
        if self.args.is_empty() || self.args.len() > 2 {
            return Err(CtlError::bad_args(
                "del command needs one argument as key and an optional argument as range_end",
            ));
        }
        if self.prefix && self.from_key {
            return Err(CtlError::bad_args(
                "`--prefix` and `--from-key` cannot be set at the same time, choose one",
            ));
        }
        if self.args.len() > 1 && (self.prefix || self.from_key) {
            return Err(CtlError::bad_args(
                "too many arguments, only accept one argument when `--prefix` or `--from-key` is set",
            ));
        }
        let (key, range_end) = key_range(&self.args[0], self.args.get(1), self.prefix, self.from_key);
        Ok(DeleteRangeRequest { key, range_end, prev_kv: self.prev_kv })
    }
}

#[derive(Args, Debug, Clone)]
pub struct CompactionArgs {
    /// Wait for the compaction to physically remove all old revisions.
    #[arg(long)]
    pub physical: bool,
    pub args: Vec<String>,
}

impl CompactionArgs {
    pub fn request(&self) -> Result<CompactionRequest, CtlError> {
        if self.args.len() != 1 {
            return Err(CtlError::new(EXIT_BAD_ARGS, "compaction command needs 1 argument"));
        }
        let rev = self.args[0]
            .parse::<i64>()
            .map_err(|e| CtlError::new(EXIT_ERROR, go_parse_int_error(&self.args[0], &e)))?;
        Ok(CompactionRequest { revision: rev, physical: self.physical })
    }
}

/// `put`: the value comes from stdin when only the key is given.
pub async fn put(args: PutArgs, eps: &Endpoints, printer: &Printer, out: &mut Out) -> Result<(), CtlError> {
    let req = args.request(|| {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).ok().map(|_| s)
    })?;
    let c = eps.first().await?;
    let resp = c.call(|| async { c.kv().put(req.clone()).await }).await?;
    printer.put(out, &resp)
}

/// `get`: --print-value-only and --count-only each belong to one output format.
pub async fn get(args: GetArgs, eps: &Endpoints, format: Format, out: &mut Out) -> Result<(), CtlError> {
    let req = args.request()?;
    if args.print_value_only && format != Format::Simple {
        return Err(CtlError::bad_args("print-value-only is only for `--write-out=simple`"));
    }
    if args.count_only && format != Format::Fields {
        return Err(CtlError::bad_args("--count-only is only for `--write-out=fields`"));
    }
    let c = eps.first().await?;
    let resp = c.call(|| async { c.kv().range(req.clone()).await }).await?;
    Printer { format, value_only: args.print_value_only }.get(out, &resp)
}

pub async fn del(args: DelArgs, eps: &Endpoints, printer: &Printer, out: &mut Out) -> Result<(), CtlError> {
    let req = args.request()?;
    let c = eps.first().await?;
    let resp = c.call(|| async { c.kv().delete_range(req.clone()).await }).await?;
    printer.del(out, &resp)
}

pub async fn compaction(args: CompactionArgs, eps: &Endpoints, out: &mut Out) -> Result<(), CtlError> {
    let req = args.request()?;
    let c = eps.first().await?;
    c.call(|| async { c.kv().compact(req).await }).await?;
    out.line(&format!("compacted revision {}", req.revision));
    Ok(())
}

/// Go's `strconv.ParseInt` error text.
fn go_parse_int_error(s: &str, e: &std::num::ParseIntError) -> String {
    use std::num::IntErrorKind;
    let why = match e.kind() {
        IntErrorKind::PosOverflow | IntErrorKind::NegOverflow => "value out of range",
        _ => "invalid syntax",
    };
    format!("strconv.ParseInt: parsing {}: {why}", crate::goquote::quote(s.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_matches_clientv3() {
        assert_eq!(prefix_end(b"foo"), b"fop".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }
}

//! etcdctl's printers: `simple`, `json`, `fields` and `table`, byte for byte.

use std::io::{self, Write};

use rkv_proto::etcdserverpb::{
    response_op::Response, DeleteRangeResponse, MemberListResponse, PutResponse, RangeResponse,
    ResponseHeader, StatusResponse, TxnResponse,
};
use rkv_proto::mvccpb::KeyValue;

use crate::error::{CtlError, EXIT_BAD_FEATURE};
use crate::goquote::quote;
use crate::json;
use crate::k8s;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Simple,
    Json,
    Fields,
    Table,
    /// Beyond etcdctl: decodes Kubernetes objects stored under `/registry` (see `k8s`).
    K8s,
}

impl Format {
    pub fn parse(s: &str) -> Result<Format, CtlError> {
        match s {
            "simple" => Ok(Format::Simple),
            "json" => Ok(Format::Json),
            "fields" => Ok(Format::Fields),
            "table" => Ok(Format::Table),
            "k8s" => Ok(Format::K8s),
            other => Err(CtlError::new(EXIT_BAD_FEATURE, format!("unknown output format {other:?}"))),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Format::Simple => "simple",
            Format::Json => "json",
            Format::Fields => "fields",
            Format::Table => "table",
            Format::K8s => "k8s",
        }
    }

    pub fn unsupported(self) -> CtlError {
        CtlError::new(EXIT_BAD_FEATURE, format!("{} not supported as output format", self.name()))
    }
}

/// Collects output and writes it to stdout in one go (keys and values are raw bytes).
#[derive(Default)]
pub struct Out {
    buf: Vec<u8>,
}

impl Out {
    pub fn line(&mut self, s: &str) {
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(b'\n');
    }

    pub fn raw_line(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
        self.buf.push(b'\n');
    }

    pub fn flush(self) -> io::Result<()> {
        let mut stdout = io::stdout().lock();
        stdout.write_all(&self.buf)?;
        stdout.flush()
    }
}

pub struct Printer {
    pub format: Format,
    pub value_only: bool,
}

impl Printer {
    fn kv_simple(&self, out: &mut Out, kv: &KeyValue) {
        if !self.value_only {
            out.raw_line(&kv.key);
        }
        out.raw_line(&kv.value);
    }

    fn kv_fields(out: &mut Out, prefix: &str, kv: &KeyValue) {
        out.line(&format!("\"{prefix}Key\" : {}", quote(&kv.key)));
        out.line(&format!("\"{prefix}CreateRevision\" : {}", kv.create_revision));
        out.line(&format!("\"{prefix}ModRevision\" : {}", kv.mod_revision));
        out.line(&format!("\"{prefix}Version\" : {}", kv.version));
        out.line(&format!("\"{prefix}Value\" : {}", quote(&kv.value)));
        out.line(&format!("\"{prefix}Lease\" : {}", kv.lease));
    }

    pub(crate) fn header_fields(out: &mut Out, h: &Option<ResponseHeader>) {
        let h = h.unwrap_or_default();
        out.line(&format!("\"ClusterID\" : {}", h.cluster_id));
        out.line(&format!("\"MemberID\" : {}", h.member_id));
        // etcdctl 3.5 prints the revision even where it is 0 (member list); 3.6 hides it.
        out.line(&format!("\"Revision\" : {}", h.revision));
        out.line(&format!("\"RaftTerm\" : {}", h.raft_term));
    }

    pub fn get(&self, out: &mut Out, r: &RangeResponse) -> Result<(), CtlError> {
        match self.format {
            Format::Simple => r.kvs.iter().for_each(|kv| self.kv_simple(out, kv)),
            Format::K8s => r.kvs.iter().for_each(|kv| out.line(&k8s::describe(&kv.key, &kv.value))),
            Format::Json => out.line(&json::range(r)),
            Format::Fields => {
                Self::header_fields(out, &r.header);
                r.kvs.iter().for_each(|kv| Self::kv_fields(out, "", kv));
                out.line(&format!("\"More\" : {}", r.more));
                out.line(&format!("\"Count\" : {}", r.count));
            }
            Format::Table => return Err(self.format.unsupported()),
        }
        Ok(())
    }

    pub fn put(&self, out: &mut Out, r: &PutResponse) -> Result<(), CtlError> {
        match self.format {
            Format::Simple => {
                out.line("OK");
                if let Some(kv) = &r.prev_kv {
                    self.kv_simple(out, kv);
                }
            }
            Format::Json => out.line(&json::put(r)),
            Format::Fields => {
                Self::header_fields(out, &r.header);
                if let Some(kv) = &r.prev_kv {
                    Self::kv_fields(out, "Prev", kv);
                }
            }
            Format::Table | Format::K8s => return Err(self.format.unsupported()),
        }
        Ok(())
    }

    pub fn del(&self, out: &mut Out, r: &DeleteRangeResponse) -> Result<(), CtlError> {
        match self.format {
            Format::Simple => {
                out.line(&r.deleted.to_string());
                r.prev_kvs.iter().for_each(|kv| self.kv_simple(out, kv));
            }
            Format::Json => out.line(&json::delete(r)),
            Format::Fields => {
                Self::header_fields(out, &r.header);
                out.line(&format!("\"Deleted\" : {}", r.deleted));
                r.prev_kvs.iter().for_each(|kv| Self::kv_fields(out, "Prev", kv));
            }
            Format::Table | Format::K8s => return Err(self.format.unsupported()),
        }
        Ok(())
    }

    pub fn txn(&self, out: &mut Out, r: &TxnResponse) -> Result<(), CtlError> {
        match self.format {
            Format::Simple => {
                out.line(if r.succeeded { "SUCCESS" } else { "FAILURE" });
                for op in &r.responses {
                    out.line("");
                    match &op.response {
                        Some(Response::ResponseDeleteRange(d)) => self.del(out, d)?,
                        Some(Response::ResponsePut(p)) => self.put(out, p)?,
                        Some(Response::ResponseRange(g)) => self.get(out, g)?,
                        _ => out.line(&format!("unexpected response {op:?}")),
                    }
                }
            }
            Format::Json => out.line(&json::txn(r)),
            Format::Fields => {
                Self::header_fields(out, &r.header);
                out.line(&format!("\"Succeeded\" : {}", r.succeeded));
                for op in &r.responses {
                    match &op.response {
                        Some(Response::ResponseDeleteRange(d)) => self.del(out, d)?,
                        Some(Response::ResponsePut(p)) => self.put(out, p)?,
                        Some(Response::ResponseRange(g)) => self.get(out, g)?,
                        other => {
                            out.line(&format!("\"Unknown\" : {}", quote(format!("{other:?}").as_bytes())))
                        }
                    }
                }
            }
            Format::Table | Format::K8s => return Err(self.format.unsupported()),
        }
        Ok(())
    }

    pub fn endpoint_status(&self, out: &mut Out, list: &[(String, StatusResponse)]) {
        match self.format {
            // Only values differ in k8s output.
            Format::Simple | Format::K8s => {
                for row in status_rows(list) {
                    out.line(&row.join(", "));
                }
            }
            Format::Json => {
                let items: Vec<String> = list
                    .iter()
                    .map(|(ep, s)| {
                        json::Obj::new()
                            .raw("Endpoint", json::string(ep))
                            .raw("Status", json::status(s))
                            .build()
                    })
                    .collect();
                out.line(&format!("[{}]", items.join(",")));
            }
            Format::Fields => {
                for (ep, s) in list {
                    Self::header_fields(out, &s.header);
                    out.line(&format!("\"Version\" : {}", quote(s.version.as_bytes())));
                    out.line(&format!("\"DBSize\" : {}", s.db_size));
                    out.line(&format!("\"Leader\" : {}", s.leader));
                    out.line(&format!("\"IsLearner\" : {}", s.is_learner));
                    out.line(&format!("\"RaftIndex\" : {}", s.raft_index));
                    out.line(&format!("\"RaftTerm\" : {}", s.raft_term));
                    out.line(&format!("\"RaftAppliedIndex\" : {}", s.raft_applied_index));
                    out.line(&format!("\"Errors\" : [{}]", s.errors.join(" ")));
                    out.line(&format!("\"Endpoint\" : {}", quote(ep.as_bytes())));
                    out.line("");
                }
            }
            Format::Table => {
                let header = [
                    "ENDPOINT",
                    "ID",
                    "VERSION",
                    "DB SIZE",
                    "IS LEADER",
                    "IS LEARNER",
                    "RAFT TERM",
                    "RAFT INDEX",
                    "RAFT APPLIED INDEX",
                    "ERRORS",
                ];
                table(out, &header, &status_rows(list));
            }
        }
    }

    pub fn endpoint_health(&self, out: &mut Out, list: &[Health]) {
        match self.format {
            // Only values differ in k8s output.
            Format::Simple | Format::K8s => {
                for h in list {
                    if h.error.is_empty() {
                        out.line(&format!(
                            "{} is healthy: successfully committed proposal: took = {}",
                            h.endpoint, h.took
                        ));
                    } else {
                        eprintln!("{} is unhealthy: failed to commit proposal: {}", h.endpoint, h.error);
                    }
                }
            }
            Format::Json => {
                let items: Vec<String> = list
                    .iter()
                    .map(|h| {
                        json::Obj::new()
                            .raw("endpoint", json::string(&h.endpoint))
                            .raw("health", h.health.to_string())
                            .raw("took", json::string(&h.took))
                            .str("error", &h.error)
                            .build()
                    })
                    .collect();
                out.line(&format!("[{}]", items.join(",")));
            }
            Format::Fields => {
                for h in list {
                    out.line(&format!("\"Endpoint\" : {}", quote(h.endpoint.as_bytes())));
                    out.line(&format!("\"Health\" : {}", h.health));
                    out.line(&format!("\"Took\" : {}", h.took));
                    out.line(&format!("\"Error\" : {}", h.error));
                    out.line("");
                }
            }
            Format::Table => {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|h| vec![h.endpoint.clone(), h.health.to_string(), h.took.clone(), h.error.clone()])
                    .collect();
                table(out, &["ENDPOINT", "HEALTH", "TOOK", "ERROR"], &rows);
            }
        }
    }
}

impl Printer {
    /// etcdctl's `member list`.
    pub fn member_list(&self, out: &mut Out, r: &MemberListResponse) -> Result<(), CtlError> {
        let rows: Vec<Vec<String>> = r
            .members
            .iter()
            .map(|m| {
                let status = if m.name.is_empty() { "unstarted" } else { "started" };
                vec![
                    format!("{:x}", m.id),
                    status.to_string(),
                    m.name.clone(),
                    m.peer_ur_ls.join(","),
                    m.client_ur_ls.join(","),
                    m.is_learner.to_string(),
                ]
            })
            .collect();
        match self.format {
            Format::Simple | Format::K8s => rows.iter().for_each(|row| out.line(&row.join(", "))),
            Format::Table => {
                table(out, &["ID", "STATUS", "NAME", "PEER ADDRS", "CLIENT ADDRS", "IS LEARNER"], &rows)
            }
            Format::Json => {
                let members: Vec<String> = r.members.iter().map(json::member).collect();
                out.line(
                    &json::Obj::new().obj("header", json::header(&r.header)).list("members", members).build(),
                );
            }
            Format::Fields => {
                Self::header_fields(out, &r.header);
                for m in &r.members {
                    out.line(&format!("\"ID\" : {}", m.id));
                    out.line(&format!("\"Name\" : {}", quote(m.name.as_bytes())));
                    for u in &m.peer_ur_ls {
                        out.line(&format!("\"PeerURL\" : {}", quote(u.as_bytes())));
                    }
                    for u in &m.client_ur_ls {
                        out.line(&format!("\"ClientURL\" : {}", quote(u.as_bytes())));
                    }
                    out.line(&format!("\"IsLearner\" : {}", m.is_learner));
                    out.line("");
                }
            }
        }
        Ok(())
    }
}

pub struct Health {
    pub endpoint: String,
    pub health: bool,
    pub took: String,
    pub error: String,
}

fn status_rows(list: &[(String, StatusResponse)]) -> Vec<Vec<String>> {
    list.iter()
        .map(|(ep, s)| {
            let member = s.header.as_ref().map_or(0, |h| h.member_id);
            vec![
                ep.clone(),
                format!("{member:x}"),
                s.version.clone(),
                human_bytes(s.db_size.max(0) as u64),
                (s.leader == member).to_string(),
                s.is_learner.to_string(),
                s.raft_term.to_string(),
                s.raft_index.to_string(),
                s.raft_applied_index.to_string(),
                s.errors.join(", "),
            ]
        })
        .collect()
}

/// go-humanize's `Bytes`: SI units, one decimal below 10.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    if n < 10 {
        return format!("{n} B");
    }
    let e = ((n as f64).ln() / 1000f64.ln()).floor() as usize;
    let e = e.min(UNITS.len() - 1);
    let val = ((n as f64) / 1000f64.powi(e as i32) * 10.0 + 0.5).floor() / 10.0;
    if val < 10.0 {
        format!("{val:.1} {}", UNITS[e])
    } else {
        format!("{val:.0} {}", UNITS[e])
    }
}

/// The ASCII table etcdctl draws (olekukonko/tablewriter: centered headers, right-aligned cells).
pub fn table(out: &mut Out, header: &[&str], rows: &[Vec<String>]) {
    let widths: Vec<usize> = header
        .iter()
        .enumerate()
        .map(|(i, h)| rows.iter().map(|r| r[i].chars().count()).chain([h.len()]).max().unwrap_or(0))
        .collect();
    let border: String = widths.iter().map(|w| format!("+{}", "-".repeat(w + 2))).collect::<String>() + "+";
    out.line(&border);
    let head: String = header
        .iter()
        .zip(&widths)
        .map(|(h, w)| {
            let gap = w - h.len();
            let left = gap / 2;
            format!("| {}{}{} ", " ".repeat(left), h, " ".repeat(gap - left))
        })
        .collect::<String>()
        + "|";
    out.line(&head);
    out.line(&border);
    for row in rows {
        let line: String =
            row.iter().zip(&widths).map(|(c, w)| format!("| {:>w$} ", c, w = *w)).collect::<String>() + "|";
        out.line(&line);
    }
    out.line(&border);
}

/// Go's `time.Duration.String()`.
pub fn go_duration(d: std::time::Duration) -> String {
    let ns = d.as_nanos();
    let trim = |s: String| -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    };
    if ns < 1_000 {
        format!("{ns}ns")
    } else if ns < 1_000_000 {
        format!("{}µs", trim(format!("{:.3}", ns as f64 / 1e3)))
    } else if ns < 1_000_000_000 {
        format!("{}ms", trim(format!("{:.6}", ns as f64 / 1e6)))
    } else {
        format!("{}s", trim(format!("{:.9}", ns as f64 / 1e9)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn humanize_like_go() {
        assert_eq!(human_bytes(4096), "4.1 kB");
        assert_eq!(human_bytes(25000), "25 kB");
        assert_eq!(human_bytes(20480), "20 kB");
        assert_eq!(human_bytes(5), "5 B");
        assert_eq!(human_bytes(1_500_000), "1.5 MB");
    }

    #[test]
    fn durations_like_go() {
        assert_eq!(go_duration(std::time::Duration::from_nanos(2_344_238)), "2.344238ms");
        assert_eq!(go_duration(std::time::Duration::from_micros(1500)), "1.5ms");
        assert_eq!(go_duration(std::time::Duration::from_nanos(999)), "999ns");
    }
}

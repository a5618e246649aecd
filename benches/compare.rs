//! rkv beside a real etcd 3.5 in one run: every workload of benches/load against both, 1 and
//! 3 members, alternating which goes first, rounds repeated; a table of medians (min-max) and
//! the rkv/etcd ratio, and the same as JSON.
//!
//! `cargo bench --bench compare` (release). Environment: RKV_BENCH_ROUNDS (default 3),
//! RKV_BENCH_OPS (operations per workload, default 20000), RKV_BENCH_MEMBERS (default "1,3"),
//! RKV_BENCH_KEYS (keys for the footprint, default 100000), RKV_BENCH_ONLY (a substring of the
//! workload names to run), RKV_BENCH_JSON (output file, default bench-compare.json in the
//! target dir).

mod load;

use std::collections::BTreeMap;
use std::time::Duration;

use load::{footprint, Deployment, Kind, Stats, Workload};

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// One measure's values over the rounds, for one kind.
#[derive(Default)]
struct Series {
    values: Vec<f64>,
}

impl Series {
    fn median(&self) -> f64 {
        let mut v = self.values.clone();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    }
    fn min(&self) -> f64 {
        self.values.iter().copied().fold(f64::INFINITY, f64::min)
    }
    fn max(&self) -> f64 {
        self.values.iter().copied().fold(f64::NEG_INFINITY, f64::max)
    }
}

/// (members, order, measure) → (unit, higher is better, values per kind).
type Table = BTreeMap<(usize, usize, String), (String, bool, BTreeMap<&'static str, Series>)>;

/// A measure's place in the table: (members, order, name).
type Key = (usize, usize, String);

fn record(table: &mut Table, key: Key, unit: &str, higher: bool, kind: Kind, v: f64) {
    let entry = table.entry(key).or_insert_with(|| (unit.to_string(), higher, BTreeMap::new()));
    entry.2.entry(kind.name()).or_default().values.push(v);
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let rounds: usize = env("RKV_BENCH_ROUNDS", 3);
    let ops: usize = env("RKV_BENCH_OPS", 20_000);
    let keys: usize = env("RKV_BENCH_KEYS", 100_000);
    let only: String = env("RKV_BENCH_ONLY", String::new());
    let members: Vec<usize> = env("RKV_BENCH_MEMBERS", "1,3".to_string())
        .split(',')
        .filter_map(|m| m.trim().parse().ok())
        .collect();
    let workloads: Vec<Workload> = Workload::all().into_iter().filter(|w| w.name().contains(&only)).collect();
    let mut table = Table::new();
    let mut errors = Vec::new();
    for &n in &members {
        for round in 0..rounds {
            let kinds = if round % 2 == 0 { [Kind::Rkv, Kind::Etcd] } else { [Kind::Etcd, Kind::Rkv] };
            for kind in kinds {
                let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
                let mut d = Deployment::start(kind, dir.path(), n);
                d.wait_ready().await;
                let channels = d.channels().await;
                for (order, w) in workloads.iter().enumerate() {
                    let s: Stats = w.run(&channels, ops, &format!("r{round}w{order}")).await;
                    if s.errors > 0 {
                        errors.push(format!("{} x{n} {}: {} errors", kind.name(), w.name(), s.errors));
                    }
                    eprintln!(
                        "{n} member(s) round {round} {:4} {:40} {:>10.0}/s p99 {:.2} ms",
                        kind.name(),
                        w.name(),
                        s.per_sec(),
                        ms(s.quantile(0.99))
                    );
                    let unit = if matches!(w, Workload::WatchFanout { .. }) { "events/s" } else { "ops/s" };
                    record(&mut table, (n, order * 10, w.name()), unit, true, kind, s.per_sec());
                    for (i, (q, label)) in
                        [(0.5, "p50"), (0.99, "p99"), (0.999, "p999")].into_iter().enumerate()
                    {
                        let name = format!("{} {label}", w.name());
                        record(
                            &mut table,
                            (n, order * 10 + 1 + i, name),
                            "ms",
                            false,
                            kind,
                            ms(s.quantile(q)),
                        );
                    }
                }
                if only.is_empty() || "footprint".contains(&only) {
                    let f = footprint(&mut d, keys).await;
                    let base = workloads.len() * 10;
                    let label = format!("after {keys} keys:");
                    let rss = f.rss as f64 / 1048576.0;
                    record(&mut table, (n, base, format!("{label} RSS")), "MiB", false, kind, rss);
                    let data = f.data as f64 / 1048576.0;
                    record(&mut table, (n, base + 1, format!("{label} data size")), "MiB", false, kind, data);
                    let restart = format!("{label} restart to a linearizable read");
                    record(&mut table, (n, base + 2, restart), "ms", false, kind, ms(f.restart));
                    eprintln!(
                        "{n} member(s) round {round} {:4} rss {} MiB restart {:?}",
                        kind.name(),
                        f.rss >> 20,
                        f.restart
                    );
                }
            }
        }
    }

    println!("\n| members | measure | rkv | etcd | rkv/etcd |");
    println!("|---|---|---|---|---|");
    let mut json = Vec::new();
    for ((n, _, name), (unit, higher, by_kind)) in &table {
        let (Some(r), Some(e)) = (by_kind.get("rkv"), by_kind.get("etcd")) else { continue };
        let ratio = if e.median() > 0.0 { r.median() / e.median() } else { 0.0 };
        let cell = |s: &Series| format!("{:.1} ({:.1}-{:.1}) {unit}", s.median(), s.min(), s.max());
        println!("| {n} | {name} | {} | {} | {ratio:.2}x |", cell(r), cell(e));
        json.push(serde_json::json!({
            "members": n, "measure": name, "unit": unit, "higher_is_better": higher,
            "rkv": r.values, "etcd": e.values, "rkv_median": r.median(), "etcd_median": e.median(), "ratio": ratio,
        }));
    }
    let out = std::env::var("RKV_BENCH_JSON").unwrap_or_else(|_| {
        let dir = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".to_string());
        format!("{dir}/bench-compare.json")
    });
    let text = serde_json::to_string_pretty(&json).unwrap_or_default();
    match std::fs::write(&out, text) {
        Ok(()) => println!("\nJSON: {out}"),
        Err(e) => eprintln!("cannot write {out}: {e}"),
    }
    if !errors.is_empty() {
        println!("\nerrors:\n{}", errors.join("\n"));
    }
}

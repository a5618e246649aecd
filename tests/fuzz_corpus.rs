//! Replays the fuzz targets' seeds and their committed corpus (fuzz/corpus/<target>, grown by
//! `scripts/fuzz.sh`) on stable, so that every input a fuzzer ever kept, including the ones that
//! once crashed, stays a regression test. With RKV_FUZZ_SEED_DIR set, also writes the seeds
//! there (what `scripts/fuzz.sh` starts a new corpus from).

use std::path::{Path, PathBuf};

use rkv_server::fuzzing::{etcd_wal, peer_message, seeds, ApplyHarness};

const TARGETS: [&str; 6] =
    ["client_requests", "raft_entry", "peer_message", "snapshot", "etcd_db", "etcd_wal"];

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, bytes)
        })
        .collect()
}

fn run(target: &str, harness: &mut ApplyHarness, input: &[u8]) {
    match target {
        "client_requests" => harness.client_requests(input),
        "raft_entry" => harness.raft_entry(input),
        "peer_message" => peer_message(input),
        "snapshot" => harness.snapshot(input),
        "etcd_db" => harness.etcd_db(input),
        "etcd_wal" => etcd_wal(input),
        other => panic!("unknown fuzz target {other}"),
    }
}

#[test]
fn seeds_and_corpus_replay_without_a_panic() {
    let scratch = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let seeds = seeds(&scratch.path().join("seeds")).unwrap_or_else(|e| panic!("building seeds: {e}"));
    for target in TARGETS {
        let seeded = seeds.iter().any(|(t, _)| *t == target);
        assert!(seeded || !corpus(target).is_empty(), "no seed or corpus input for {target}");
    }
    if let Ok(out) = std::env::var("RKV_FUZZ_SEED_DIR") {
        for (i, (target, bytes)) in seeds.iter().enumerate() {
            let dir = Path::new(&out).join(target);
            std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
            std::fs::write(dir.join(format!("seed-{i}")), bytes).unwrap_or_else(|e| panic!("{e}"));
        }
    }
    let mut replayed = 0;
    for target in TARGETS {
        let dir = scratch.path().join(target);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let mut harness = ApplyHarness::new(&dir).unwrap_or_else(|e| panic!("{e}"));
        for (_, bytes) in seeds.iter().filter(|(t, _)| *t == target) {
            run(target, &mut harness, bytes);
        }
        for (path, bytes) in corpus(target) {
            // A panic names the input that caused it.
            eprintln!("replaying {}", path.display());
            run(target, &mut harness, &bytes);
            replayed += 1;
        }
    }
    eprintln!("replayed {} seeds and {replayed} corpus inputs", seeds.len());
}

/// The seeds are valid inputs: each reaches the code behind its decoder.
#[test]
fn seeds_apply_what_they_say() {
    let scratch = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let seeds = seeds(&scratch.path().join("seeds")).unwrap_or_else(|e| panic!("building seeds: {e}"));
    let dir = scratch.path().join("check");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let mut harness = ApplyHarness::new(&dir).unwrap_or_else(|e| panic!("{e}"));
    let (_, requests) = &seeds[0];
    harness.client_requests(requests);
    // Puts of a, b, a txn's put of c, a put with a lease, a delete of a, a compaction, and a
    // revoke that deletes the leased key: revisions 2..=7 (the compaction adds none).
    assert_eq!(harness.current_revision(), 7);
}

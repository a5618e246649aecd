#![no_main]

use std::sync::{Mutex, OnceLock};

use rkv_server::fuzzing::ApplyHarness;

/// One store for the whole run: opening RocksDB per input would dominate.
fn harness() -> &'static Mutex<ApplyHarness> {
    static HARNESS: OnceLock<Mutex<ApplyHarness>> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}")).keep();
        Mutex::new(ApplyHarness::new(&dir).unwrap_or_else(|e| panic!("{e}")))
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness().lock().unwrap_or_else(|e| e.into_inner()).snapshot(data);
});

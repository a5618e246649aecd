#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    rkv_server::fuzzing::process_harness().lock().unwrap_or_else(|e| e.into_inner()).etcd_db(data);
});

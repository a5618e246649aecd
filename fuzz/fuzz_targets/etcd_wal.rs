#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    rkv_server::fuzzing::etcd_wal(data);
});

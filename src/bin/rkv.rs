//! `rkv`: start a member with etcd's flags.

use std::process::ExitCode;

/// jemalloc rather than glibc's malloc: under the benchmark's workloads glibc gave the
/// blocking pool's and RocksDB's threads arenas of their own that kept what they freed (one
/// member ended at 272 MiB against etcd's 211 MiB), and capping its arenas cost LIST
/// throughput ~10%. jemalloc ended the same workloads at ~220 MiB and was as fast or faster
/// in the A/B runs (docs/benchmarks.md). Only the binary sets it: an embedding program owns
/// its allocator.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let config = match rkv_server::Config::from_args(std::env::args()) {
        Ok(Some(config)) => config,
        Ok(None) => {
            print!("{}", rkv_server::version::version_text());
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    rkv_server::init_logging(&config.log_level);
    match rkv_server::run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "rkv failed to start");
            eprintln!("rkv: {e}");
            ExitCode::FAILURE
        }
    }
}

//! `rkv`: start a member with etcd's flags.

use std::process::ExitCode;

fn main() -> ExitCode {
    limit_malloc_arenas();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("rkv: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(serve())
}

async fn serve() -> ExitCode {
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

/// glibc gives a thread that finds the heap locked an arena of its own, up to 8 per core, and
/// an arena keeps what its threads freed. The blocking pool's and RocksDB's threads thus held
/// rkv at ~270 MiB after the benchmark's workloads where 4 arenas hold it at ~200 MiB with the
/// same throughput (docs/benchmarks.md). Set here, before any thread exists, and only in the
/// binary: an embedding program owns its allocator. MALLOC_ARENA_MAX, when set, still wins.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    const ARENAS: libc::c_int = 4;
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter, and no other thread is running
        // yet that could be allocating concurrently.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, ARENAS);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}

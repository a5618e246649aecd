//! `rkv`: start a member with etcd's flags.

use std::process::ExitCode;

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

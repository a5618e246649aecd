//! `rctl`: etcdctl's commands against rkv or etcd. `snapshot restore` builds an rkv data dir,
//! so this binary hands the storage layer's restore to the command-line library.

use rctl::command::snapshot::{set_tools, FileStatus, RestoreArgs, SnapshotTools};

fn restore(args: &RestoreArgs, progress: &mut dyn FnMut(u64, u64)) -> Result<String, String> {
    let snapshot = args.filename.clone().ok_or("snapshot restore requires exactly one argument")?;
    let data_dir = args.data_dir.clone().unwrap_or_else(|| format!("{}.rkv", args.name).into());
    let req = rkv_server::restore::RestoreRequest {
        snapshot,
        name: args.name.clone(),
        data_dir: data_dir.clone(),
        initial_cluster: args.initial_cluster.clone(),
        initial_cluster_token: args.initial_cluster_token.clone(),
        initial_advertise_peer_urls: args
            .initial_advertise_peer_urls
            .split(',')
            .map(|u| u.trim().to_string())
            .filter(|u| !u.is_empty())
            .collect(),
        skip_hash_check: args.skip_hash_check,
        import: rkv_server::etcd_files::import::ImportOptions {
            bump_revision: args.bump_revision,
            mark_compacted: args.mark_compacted,
        },
    };
    let restored = rkv_server::restore::restore(&req, progress)?;
    Ok(format!(
        "restored snapshot at revision {} into {} (member {:x}, cluster {:x})",
        restored.revision,
        data_dir.display(),
        restored.member_id,
        restored.cluster_id
    ))
}

fn status(path: &std::path::Path) -> Result<FileStatus, String> {
    let s = rkv_server::restore::status(path)?;
    Ok(FileStatus { hash: s.hash, revision: s.revision, total_keys: s.total_keys, total_size: s.total_size })
}

fn main() -> std::process::ExitCode {
    set_tools(SnapshotTools { restore, status });
    rctl::main()
}

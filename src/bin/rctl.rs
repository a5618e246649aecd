//! `rctl`: etcdctl's commands against rkv or etcd.

fn main() -> std::process::ExitCode {
    rctl::main()
}

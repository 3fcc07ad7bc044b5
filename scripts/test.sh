#!/usr/bin/env bash
# The project's one test command.
#
# Installs what the tests need when it is missing (kcat from Debian, the pinned Python
# packages of tests/requirements.txt), builds every binary, runs the Rust tests, then
# the real-client integration tests against target/debug/sluice.
#
#   ./scripts/test.sh                 everything
#   ./scripts/test.sh -k kcat         extra arguments go to pytest
#   SLUICE_SKIP_INSTALL=1 ./scripts/test.sh   skip the install steps
#   SLUICE_SKIP_FUZZ=1 ./scripts/test.sh      skip the fuzz smoke run
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$(pwd)"
PYTHON="${PYTHON:-python3}"

step() { printf '\n==> %s\n' "$*"; }

if [[ "${SLUICE_SKIP_INSTALL:-0}" != "1" ]]; then
    if ! command -v kcat >/dev/null 2>&1; then
        step "installing kcat (apt-get)"
        SUDO=()
        if [[ "$(id -u)" -ne 0 ]]; then SUDO=(sudo); fi
        "${SUDO[@]}" apt-get update
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y kcat
    fi
    step "installing Python test requirements (tests/requirements.txt)"
    PIP_ARGS=(install -q -r tests/requirements.txt)
    # A distribution's own Python (PEP 668) refuses plain pip installs.
    if "$PYTHON" -c 'import os, sys, sysconfig; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")) else 1)'; then
        PIP_ARGS+=(--break-system-packages)
    fi
    PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 "$PYTHON" -m pip "${PIP_ARGS[@]}"
fi

step "cargo build --workspace --bins"
cargo build --workspace --bins

step "cargo test --workspace"
cargo test --workspace

if [[ "${SLUICE_SKIP_FUZZ:-0}" != "1" ]]; then
    # A short smoke run of every decoder's fuzz target on a copy of the seed corpus.
    # cargo-fuzz passes unstable flags to rustc; RUSTC_BOOTSTRAP lets the stable
    # toolchain accept them, and `-s none` needs no sanitizer runtime.
    if ! command -v cargo-fuzz >/dev/null 2>&1; then
        step "installing cargo-fuzz"
        cargo install cargo-fuzz --locked
    fi
    for target in kafka_request record_batch consumer_protocol; do
        step "fuzz smoke: $target (20 s)"
        corpus="$(mktemp -d)"
        cp "fuzz/corpus/$target"/* "$corpus/"
        if ! (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" -s none "$corpus" -- \
            -max_total_time=20 -rss_limit_mb=4096 >"$corpus.log" 2>&1); then
            tail -n 40 "$corpus.log"
            echo "fuzz target $target found a failure (artifacts in fuzz/artifacts/$target)"
            exit 1
        fi
        grep -E '^Done [0-9]+ runs' "$corpus.log" || true
        rm -rf "$corpus" "$corpus.log"
    done
fi

step "real-client integration tests (pytest tests/integration)"
export SLUICE_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/sluice"
"$PYTHON" -m pytest tests/integration -v -ra -p no:cacheprovider "$@"

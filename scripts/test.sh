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

step "real-client integration tests (pytest tests/integration)"
export SLUICE_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/sluice"
"$PYTHON" -m pytest tests/integration -v -ra -p no:cacheprovider "$@"

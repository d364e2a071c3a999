#!/usr/bin/env bash
# RayOS main job, from a fresh machine: boot the RayOS test host in QEMU (nested
# KVM), start rayos-vmm inside it on an unmodified Debian kernel, and attach this
# terminal to the Linux guest's shell. Type `poweroff -f` (or Ctrl-A x) to leave.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --workspace --locked
exec cargo run --release --locked -q -p rayos-smoke -- console "$@"

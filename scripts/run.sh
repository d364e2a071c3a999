#!/usr/bin/env bash
# RayOS main job, from a fresh machine: build the RayOS host image and boot it
# in QEMU (nested KVM: TCG -cpu max where this machine's KVM cannot run Linux).
# `rayos init` is PID 1; the compositor shows the RayOS display (a QEMU window
# on your desktop, else VNC on 127.0.0.1, its address printed); the Linux guest
# boots under rayos-vmm; this terminal is the serial console with the
# `rayos>` prompt: type "open a terminal", then type into the window.
# `help` lists the commands; `poweroff` stops the VMs cleanly and ends it.
# The host volume (policy, state, shared folders) persists in
# target/rayos-host between runs.
#
#   scripts/run.sh                    the RayOS host (see `--help` after --)
#   scripts/run.sh --fresh-volume     the same on a new, empty host volume (first boot)
#   scripts/run.sh --session          the older desktop session: the compositor in a
#                                     window of this machine, the guest under QEMU
#   scripts/run.sh --nested-console   the nested test host: rayos-vmm boots a
#                                     Debian kernel inside QEMU with nested KVM,
#                                     and this terminal is the guest's shell
set -euo pipefail
cd "$(dirname "$0")/.."
mode=host
case "${1:-}" in
    --nested-console) shift; mode=console ;;
    --session) shift; mode=session ;;
esac
bash scripts/setup.sh
cargo build --release --workspace --locked
if [ "$mode" != console ]; then
    target/release/rayos models install
fi
exec target/release/rayos-smoke "$mode" "$@"

#!/usr/bin/env bash
# RayOS main job, from a fresh machine: the RayOS desktop session. The
# compositor opens a window on your desktop (headless without one: use
# `screenshot FILE` at the prompt), the Linux guest boots with its root on
# virtio-fs and its agent on vsock, and a `rayos>` prompt launches guest apps
# from requests in words ("open a terminal"): each shows as its own window
# labelled with the VM. `help` lists the commands; `poweroff` (or Ctrl-D)
# stops the guest.
#
#   scripts/run.sh                    the desktop session (guest under QEMU)
#   scripts/run.sh --nested-console   the nested test host: rayos-vmm boots a
#                                     Debian kernel inside QEMU with nested KVM,
#                                     and this terminal is the guest's shell
set -euo pipefail
cd "$(dirname "$0")/.."
mode=session
if [ "${1:-}" = "--nested-console" ]; then
    shift
    mode=console
fi
bash scripts/setup.sh
cargo build --release --workspace --locked
if [ "$mode" = session ]; then
    target/release/rayos models install
fi
exec target/release/rayos-smoke "$mode" "$@"

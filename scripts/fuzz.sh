#!/usr/bin/env bash
# RayOS: long fuzzing campaigns, with the address sanitizer.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Runs every cargo-fuzz target (or the ones named) for SECONDS each (default
# 1800) on nightly with -Zsanitizer=address, keeping each target's corpus in
# <crate>/fuzz/corpus/<target> and any crash in <crate>/fuzz/artifacts/<target>.
# Prints one line per target: `PASS fuzz-<target> runs=<n> seconds=<s>` or
# `FAIL fuzz-<target>: ...` with the crash's file. CI runs each target for 30 s
# without a sanitizer (scripts/test.sh); this is for the long runs.
set -uo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-1800}
shift || true
tools="${RAYOS_CACHE_DIR:-$HOME/.cache/rayos}/tools/bin"
export PATH="$tools:$PATH"
command -v cargo-fuzz >/dev/null || { echo "FAIL fuzz: cargo-fuzz not found (scripts/setup.sh installs it into $tools)"; exit 1; }
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal || {
    echo "FAIL fuzz: the address sanitizer needs a nightly toolchain (rustup toolchain install nightly)"; exit 1; }

targets=()
for dir in vmm/fuzz vmm/backends/vsock/fuzz contract/fuzz compositor/fuzz; do
    for t in $(cd "$dir" && cargo fuzz list 2>/dev/null); do
        if [ $# -eq 0 ] || printf '%s\n' "$@" | grep -qx "$t"; then targets+=("$dir:$t"); fi
    done
done
[ ${#targets[@]} -gt 0 ] || { echo "FAIL fuzz: no target matches: $*"; exit 1; }

failed=0
for dt in "${targets[@]}"; do
    dir=${dt%%:*}; t=${dt#*:}
    echo "[fuzz] $t (${dir}) for ${seconds}s with the address sanitizer" >&2
    out=$(mktemp)
    (cd "$dir" && cargo +nightly fuzz run --sanitizer address "$t" -- \
        -max_total_time="$seconds" -print_final_stats=1) >"$out" 2>&1
    rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out" | tail -n 1)
    if [ "$rc" -eq 0 ] && [ -n "$runs" ]; then
        echo "PASS fuzz-$t runs=$runs seconds=$seconds"
    else
        tail -n 40 "$out"
        echo "FAIL fuzz-$t: exit $rc (crash inputs in $dir/artifacts/$t)"
        failed=$((failed + 1))
    fi
    rm -f "$out"
done
[ "$failed" -eq 0 ]

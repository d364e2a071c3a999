# Shell functions both real-guest test hosts use (vmm-native and vmm-agent):
# spliced into their host-init.sh at the HOST_LIB placeholder (GuestPlan::host_init). They
# call the including script's fail and wait_for, and add to its $procs.
now() { cut -d. -f1 /proc/uptime; }
step() { echo "RAYOS-VN-STEP $1"; }
# vmm_state_report: for a failure while rayos-vmm runs: asks every rayos-vmm
# for its state report (SIGUSR1: each vCPU's registers, each virtio queue's
# ring indexes and interrupt state) and prints it, with how long the guest's
# console ($1) has been silent (a guest that stopped printing is a hang, not
# a slow step).
vmm_state_report() {
    if [ -f "$1" ]; then
        silent=$(( $(date +%s) - $(stat -c %Y "$1") ))
        echo "RAYOS-VN-DIAG guest console silent for $silent s ($(wc -l <"$1") lines)"
    fi
    pids=
    for c in /proc/[0-9]*/comm; do
        [ "$(cat "$c" 2>/dev/null)" = rayos-vmm ] && pids="$pids $(basename "$(dirname "$c")")"
    done
    [ -n "$pids" ] || return 0
    kill -USR1 $pids 2>/dev/null
    sleep 2
    echo "RAYOS-VN-DIAG rayos-vmm state report:"
    grep -h 'state report' /tmp/logs/*.log 2>/dev/null | tail -n 24 | cut -c1-600 | sed 's/^/RAYOS-VN-DIAG report| /'
}
ok() { echo "RAYOS-VN-OK $*"; }

# load_kvm: KVM for this CPU's vendor and the file-system modules, as every
# nested test host does; sets $vendor and prints the host's info marker.
load_kvm() {
    if grep -qw svm /proc/cpuinfo; then vendor=amd
    elif grep -qw vmx /proc/cpuinfo; then vendor=intel
    else fail "CPU has neither svm nor vmx: no nested virtualisation"; fi
    for m in $(cat @MODULE_LIST_DIR@/modules-$vendor) $(cat @MODULE_LIST_DIR@/modules-fs); do
        grep -q "^$m " /proc/modules || insmod @MODULE_DIR@/$m.ko || fail "insmod $m.ko failed"
    done
    [ -c /dev/kvm ] || fail "/dev/kvm missing after loading kvm-$vendor"
    echo advise > /sys/kernel/mm/transparent_hugepage/shmem_enabled 2>/dev/null
    echo "@HOST_INFO@kernel=$(uname -r) vendor=$vendor vmm=rayos"
}

# start_compositor DIR: rayos-compositor on the headless backend with its
# Wayland sockets in DIR (private) and its control socket at $CTL.
start_compositor() {
    mkdir -p $1 /usr/share
    chmod 700 $1
    # xkbcommon's keymaps: the guest image's xkb-data serves the host side too.
    [ -d /usr/share/X11/xkb ] || ln -s /image/@ROOTFS@/usr/share/X11 /usr/share/X11
    RUST_LOG=info /usr/bin/rayos-compositor --backend headless --size 1280x800 --socket-dir $1 --control $CTL \
        </dev/null >/tmp/logs/compositor.log 2>&1 &
    procs="$procs $!"
    wait_for "the compositor's sockets" 60 test -S $CTL -a -S $1/rayos-host
}

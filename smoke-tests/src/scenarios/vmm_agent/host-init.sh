#!/bin/busybox sh
# rayos-smoke vmm-agent: the nested test host's /init
# (smoke-tests/src/scenarios/vmm_agent/host-init.sh; its @...@ placeholders are filled in by mod.rs).
#
# The RayOS host service (`rayos host`) owns the guest here: it starts
# virtiofsd, rayos-vsock, rayos-vmm and the bridge on the guest image from the
# disk the outer host gives us (virtio-blk, ext4), under a policy file, and
# every step below goes through its CLI (a client of its control API). Then
# QEMU boots the same image with the same backends, for comparison. Every
# step prints RAYOS-VN-STEP <name> when it starts and RAYOS-VN-OK <name>
# <detail> when it passed; the outer side times them.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /tmp /run /image /out /tmp/logs /etc/rayos
echo @HOST_INIT@

RT=/run/rayos
CR=/run/rayos-compositor
CTL=$CR/control.sock
export RAYOS_SOCKET=$RT/rayos.sock
G=/tmp/logs/@VM@-serial.log
QS=/tmp/logs/qemu-serial.log
Q=/run/qemu-vm
svc_pid=
qemu_pid=
procs=
@HOST_LIB@
save_logs() {
    # Bounded: a wedged test host must still power off and say so.
    ( grep -q ' /out ' /proc/mounts && cp /tmp/logs/* /out/ 2>/dev/null; sync ) &
    s=$! n=0
    while kill -0 $s 2>/dev/null; do
        n=$((n + 1))
        [ $n -lt 100 ] || { echo "RAYOS-VN-DIAG copying the logs to /out did not finish within 20 s"; return; }
        sleep 0.2
    done
}
# console_tail LOG: the last lines of a guest console, from user space and overall.
console_tail() {
    [ -f "$1" ] || { echo "RAYOS-VN-DIAG $(basename $1): none"; return; }
    [ -s "$1" ] || { echo "RAYOS-VN-DIAG $(basename $1): empty"; return; }
    grep -v '^\[ *[0-9]*\.[0-9]*\]' $1 | tail -n 12 | sed "s#^#RAYOS-VN-DIAG $(basename $1)| #"
    tail -n 8 $1 | sed "s#^#RAYOS-VN-DIAG $(basename $1)| #"
}
why=
fail() {
    echo "@HOST_FAIL@ $*"
    # How the service saw the VM; a guest crash (rayos-vmm status 3 or 4) is
    # retried by the outer side.
    if [ -n "$svc_pid" ]; then
        /usr/bin/rayos vm status @VM@ --json >/tmp/status.json 2>&1
        echo "RAYOS-VN-DIAG service: $(cut -c1-900 /tmp/status.json)"
        if grep -q 'panicked (status 3)' /tmp/status.json; then echo "@VMM_EXIT@3"
        elif grep -q 'triple-faulted (status 4)' /tmp/status.json; then echo "@VMM_EXIT@4"; fi
        echo "RAYOS-VN-DIAG processes:"
        ps -o pid,args | grep -v '\[' | sed 's/^/RAYOS-VN-DIAG ps| /'
        echo "RAYOS-VN-DIAG service log:"
        tail -n 40 /tmp/logs/rayosd.log 2>/dev/null | sed 's/^/RAYOS-VN-DIAG rayosd| /'
    fi
    vmm_state_report $G
    echo "RAYOS-VN-DIAG guest console: last lines from user space, then the last lines:"
    console_tail $G
    [ -f $QS ] && console_tail $QS
    [ -n "$svc_pid" ] && kill -TERM "$svc_pid" 2>/dev/null && sleep 3
    if [ -n "$qemu_pid" ]; then
        kill -KILL "$qemu_pid" 2>/dev/null
        echo "RAYOS-VN-DIAG qemu.log:"
        tail -n 5 /tmp/logs/qemu.log 2>/dev/null | sed 's/^/RAYOS-VN-DIAG qemu| /'
    fi
    for p in $procs $beat; do kill "$p" 2>/dev/null; done
    sleep 1
    save_logs
    echo RAYOS-VN-DONE
    poweroff -f
    sleep 60
}
# wait_for WHAT SECONDS COMMAND...: until COMMAND succeeds; fails the run
# after SECONDS (adding the output of `eval "$why"`) or at once when the
# service is gone.
wait_for() {
    what=$1 secs=$2
    shift 2
    end=$(($(now) + secs))
    until "$@"; do
        if [ -n "$svc_pid" ] && ! kill -0 "$svc_pid" 2>/dev/null; then
            wait "$svc_pid"
            st=$?
            svc_pid=
            fail "rayos host exited ($st) while waiting for $what: $(tail -n 5 /tmp/logs/rayosd.log)"
        fi
        [ "$(now)" -lt "$end" ] || fail "$what: not within $secs s${why:+: $(eval "$why")}"
        sleep 0.2
    done
}
# The service's VM object as JSON, in /tmp/vm.json.
vm_json() { /usr/bin/rayos vm status @VM@ --json >/tmp/vm.json 2>&1; }
running() { vm_json && grep -q '"state":"running"' /tmp/vm.json; }
# How many times the event stream has reported the VM running.
runs() { grep '"type":"vm_state"' /tmp/logs/events.jsonl | grep -c '"state":"running"'; }
# Whether the event stream has an event of TYPE with the text PART.
seen() { grep "\"type\":\"$1\"" /tmp/logs/events.jsonl | grep -q "$2"; }
rss_kib() { sed -n "s/^VmRSS:[^0-9]*\([0-9]*\) kB/\1/p" /proc/$svc_pid/status; }
# Our children that are still running (by program name; the bridge is `rayos bridge`).
leftovers() {
    for n in rayos-vmm virtiofsd rayos-vsock qemu-system-x86_64; do
        p=$(pidof $n) && echo "$n:$p"
    done
    ps -o pid,args 2>/dev/null | grep '[r]ayos bridge' | sed 's/^/bridge:/'
}

# A guest crash (rayos-vmm status 3 or 4, QEMU's guest resetting) is the
# nested environment's, not RayOS's (see the README's Test tiers): the boot
# is tried again here, at most @GUEST_RETRIES@ times in all, each retry
# printed as RAYOS-VN-RETRY and counted.
retries=0
retry() { # WHAT WHY
    [ "$retries" -lt @GUEST_RETRIES@ ] || return 1
    retries=$((retries + 1))
    echo "RAYOS-VN-RETRY $1: $2"
}
guest_crash() { grep -q 'panicked (status 3)\|triple-faulted (status 4)' "$1"; }
# `rayos vm start --wait`, booting again after a guest crash.
start_vm() { # WHAT
    while ! /usr/bin/rayos vm start @VM@ --wait >/tmp/logs/start.txt 2>&1; do
        if guest_crash /tmp/logs/start.txt && retry "$1" "$(tail -n 1 /tmp/logs/start.txt)"; then
            # boot_to_agent_s times the boot that reached the agent.
            [ "$1" = "the first boot" ] && echo @VMM_START@
            continue
        fi
        fail "rayos vm start @VM@ --wait: $(tail -n 3 /tmp/logs/start.txt)"
    done
}

load_kvm
# A heartbeat: when the serial console goes quiet, it tells a wedged step
# (beats go on) from a test host whose kernel stopped (they stop too).
( while sleep 30; do echo "RAYOS-VN-BEAT load $(cut -d' ' -f1-4 /proc/loadavg) $(grep MemAvailable /proc/meminfo | tr -s ' ')"; done ) &
beat=$!

# The guest image (an ext4 disk) and the output folder, from the outer host.
mount -t ext4 /dev/vda /image || fail "cannot mount the guest image disk /dev/vda"
mount -t virtiofs @OUT_TAG@ /out || fail "cannot mount the output folder (virtio-fs @OUT_TAG@)"
[ -f /image/manifest.json ] && [ -f /image/@VMLINUZ@ ] && [ -d /image/@ROOTFS@/sbin ] \
    || fail "the guest image disk lacks manifest.json, @VMLINUZ@ or @ROOTFS@"

if [ "@NATIVE@" = 1 ]; then
    step compositor
    start_compositor $CR
    ok compositor headless on $CR
    compositor_keys="compositor = \"$CTL\"
compositor_socket_dir = \"$CR\""
else
    compositor_keys=
fi

step service
cat >/etc/rayos/policy.toml <<EOF
# The test host's policy (rayos-smoke vmm-agent).
[host]
runtime_dir = "$RT"
log_dir = "/tmp/logs"
$compositor_keys
stop_timeout_s = 60
agent_timeout_s = @BOOT_TIMEOUT@
rayos_vmm = "/usr/bin/rayos-vmm"
rayos_vsock = "/usr/bin/rayos-vsock"
virtiofsd = "/usr/bin/virtiofsd"

[vm.@VM@]
image = "/image"
memory = "@MEMORY@"
cpus = @CPUS@
colour = "@VM_COLOUR@"
autostart = false
# Every app of the image but one, which must be refused.
apps = [@ALLOWED_APPS@]
allow_command = true
on_backend_death = "restart-vm"
EOF
cp /etc/rayos/policy.toml /tmp/logs/
/usr/bin/rayos host --policy /etc/rayos/policy.toml --check >/tmp/logs/check.txt 2>&1 \
    || fail "rayos host --check refused the policy: $(tail -n 3 /tmp/logs/check.txt)"
@VMM_ENV@/usr/bin/rayos host --policy /etc/rayos/policy.toml --system </dev/null >/tmp/logs/rayosd.log 2>&1 &
svc_pid=$!
wait_for "the service's socket $RAYOS_SOCKET" 30 test -S $RAYOS_SOCKET
/usr/bin/rayos events </dev/null >/tmp/logs/events.jsonl 2>/tmp/logs/events.err &
procs="$procs $!"
/usr/bin/rayos vm list >/tmp/logs/vm-list.txt 2>&1 || fail "rayos vm list: $(cat /tmp/logs/vm-list.txt)"
grep -q "^@VM@ *stopped" /tmp/logs/vm-list.txt || fail "VM @VM@ is not listed as stopped: $(cat /tmp/logs/vm-list.txt)"
ok service "rss_kib=$(rss_kib) socket_mode=$(stat -c %a $RAYOS_SOCKET)"

echo @VMM_START@
step agent
start_vm "the first boot"
vm_json || fail "rayos vm status: $(cat /tmp/vm.json)"
grep -q '"state":"running"' /tmp/vm.json || fail "VM @VM@ is not running after start --wait: $(cat /tmp/vm.json)"
ok agent "$(cat /tmp/vm.json)"

step catalog
/usr/bin/rayos apps --vm @VM@ >/tmp/logs/apps.txt 2>&1 || fail "rayos apps: $(tail -n 3 /tmp/logs/apps.txt)"
grep -q '^foot.desktop ' /tmp/logs/apps.txt || fail "foot.desktop is not among the VM's apps: $(cut -d' ' -f1 /tmp/logs/apps.txt | tr '\n' ' ')"
ok catalog "$(grep -c '\.desktop ' /tmp/logs/apps.txt) apps, foot.desktop among them"

step exit3
/usr/bin/rayos launch --vm @VM@ --embedded --wait --command -- sh -c 'id -un; exit 3' >/tmp/logs/exit3.txt 2>&1
st=$?
[ "$st" = 3 ] || fail "rayos launch --wait --command sh -c 'exit 3' returned $st: $(tail -n 3 /tmp/logs/exit3.txt)"
ok exit3 "status 3, ran as $(head -n 1 /tmp/logs/exit3.txt)"

# Launch round trips: `rayos launch --embedded --wait --command -- true`,
# each timed by the CLI (total_ms: request to the program's exit status);
# --embedded: the command channel alone, no waypipe around the program.
step rtt
: >/tmp/logs/rtt.txt
for i in 1 2 3 4 5 6 7; do
    timeout 60 /usr/bin/rayos launch --vm @VM@ --embedded --wait --json --command -- true >/tmp/rtt.json 2>&1 \
        || fail "rayos launch --command true ($i): $(tail -n 3 /tmp/rtt.json)"
    sed -n 's/.*"total_ms":\([0-9.]*\).*/\1/p' /tmp/rtt.json >>/tmp/logs/rtt.txt
done
ok rtt "$(tr '\n' ' ' </tmp/logs/rtt.txt)"

# An app the policy leaves out is refused by the host: nothing reaches the guest.
step refuse
/usr/bin/rayos launch --vm @VM@ @REFUSED_APP@ >/tmp/logs/refuse.txt 2>&1 && fail "@REFUSED_APP@ was launched against the policy: $(cat /tmp/logs/refuse.txt)"
grep -q "policy" /tmp/logs/refuse.txt || fail "@REFUSED_APP@ was not refused by policy: $(cat /tmp/logs/refuse.txt)"
/usr/bin/rayos apps --vm @VM@ 2>/dev/null | grep -q '^@REFUSED_APP@ ' && fail "rayos apps lists @REFUSED_APP@, which the policy leaves out"
ok refuse "$(tail -n 1 /tmp/logs/refuse.txt | cut -c1-200)"

step api
/usr/bin/rayos api-bench --requests 300 >/tmp/logs/api-bench.txt 2>&1 || fail "rayos api-bench: $(cat /tmp/logs/api-bench.txt)"
ok api "$(tail -n 1 /tmp/logs/api-bench.txt) rss_kib=$(rss_kib)"

if [ "@NATIVE@" = 1 ]; then
    # Waits for a drawn window of the VM whose app_id matches PATTERN (its JSON
    # in /tmp/win.json), prints it after MARKER and takes a screenshot of it
    # (PNG) into the logs.
    window_ready() { /usr/bin/rayos-smoke-control $CTL --wait-window @VM@ "$1" 0 >/tmp/win.json 2>&1; }
    drawn_window() { # WHAT PATTERN MARKER PNG
        why='echo "windows $(tail -c 1500 /tmp/win.json); service: $(tail -n 5 /tmp/logs/rayosd.log)"'
        wait_for "$1" @WINDOW_TIMEOUT@ window_ready "$2"
        echo "$3 $(cat /tmp/win.json)"
        wid=$(sed -n 's/.*"id":\([0-9]*\).*/\1/p' /tmp/win.json | head -n 1)
        sleep 1
        /usr/bin/rayos-smoke-control $CTL "{\"op\":\"screenshot\",\"window\":$wid,\"path\":\"/tmp/logs/$4\"}" >/tmp/shot.txt 2>&1 \
            || fail "screenshot of window $wid: $(tail -c 600 /tmp/shot.txt)"
        why=
    }
    if [ "@WORDS@" = 1 ]; then
        step words
        /usr/bin/rayos launch --json "@WORDS_REQUEST@" >/tmp/logs/launch-words.json 2>&1 \
            || fail "rayos launch \"@WORDS_REQUEST@\": $(tail -n 3 /tmp/logs/launch-words.json)"
        grep -q '"native_window":true' /tmp/logs/launch-words.json || fail "the launch did not use the bridge: $(cat /tmp/logs/launch-words.json)"
        ok words "$(tail -n 1 /tmp/logs/launch-words.json)"
        step terminal
        drawn_window "a terminal window of VM @VM@ that has drawn" '@TERMINAL_APP_IDS@' RAYOS-VN-TERMINAL terminal-window.png
    else
        step terminal
        /usr/bin/rayos launch --vm @VM@ --json foot >/tmp/logs/launch-foot.json 2>&1 \
            || fail "rayos launch foot: $(tail -n 3 /tmp/logs/launch-foot.json)"
        drawn_window "a foot window of VM @VM@ that has drawn" 'foot' RAYOS-VN-TERMINAL terminal-window.png
    fi
    /usr/bin/rayos windows >/tmp/logs/windows.txt 2>&1 || fail "rayos windows: $(cat /tmp/logs/windows.txt)"
    grep -q "^$wid  *vm:@VM@ " /tmp/logs/windows.txt || fail "rayos windows does not list window $wid of vm:@VM@: $(cat /tmp/logs/windows.txt)"
    ok terminal "window $wid of VM @VM@ drew and is listed by rayos windows; screenshot taken"
fi

# rayos-vsock dies: the service reports it and, by policy (restart-vm),
# restarts the VM; the command channel then answers again.
step vsock
before=$(runs)
vs=$(pidof rayos-vsock) || fail "no rayos-vsock process to kill"
kill -KILL $vs
why='echo "events: $(tail -n 6 /tmp/logs/events.jsonl | tr "\n" " ")"'
wait_for "the child_exited event of rayos-vsock" 30 seen child_exited '"child":"rayos-vsock"'
wait_for "VM @VM@ degraded" 30 seen vm_state '"state":"degraded"'
restarted() {
    if vm_json && grep -q '"state":"failed"' /tmp/vm.json; then
        guest_crash /tmp/vm.json || fail "VM @VM@ failed instead of restarting: $(sed -n 's/.*"last_exit":"\([^"]*\)".*/\1/p' /tmp/vm.json)"
        # The service's restart boot crashed: start it by hand (counted).
        start_vm "the restart after rayos-vsock died"
    fi
    [ "$(runs)" -gt "$before" ]
}
wait_for "VM @VM@ running again" @BOOT_TIMEOUT@ restarted
why=
/usr/bin/rayos apps --vm @VM@ >/tmp/apps2.txt 2>&1 && grep -q '^foot.desktop ' /tmp/apps2.txt \
    || fail "the command channel did not come back: $(tail -n 3 /tmp/apps2.txt)"
vm_json
ok vsock "$(cat /tmp/vm.json)"

step stop
/usr/bin/rayos vm stop @VM@ >/tmp/logs/stop.txt 2>&1 || fail "rayos vm stop @VM@: $(cat /tmp/logs/stop.txt)"
grep -q 'powered off' /tmp/logs/stop.txt || fail "the guest did not power off: $(cat /tmp/logs/stop.txt)"
sleep 0.5
left=$(leftovers)
[ -z "$left" ] || fail "still running after rayos vm stop: $left"
[ -e $RT/vm-@VM@ ] && fail "$RT/vm-@VM@ is left after rayos vm stop: $(ls -la $RT/vm-@VM@)"
ok stop "$(cat /tmp/logs/stop.txt)"

step service-stop
kill -TERM $svc_pid
wait $svc_pid
st=$?
svc_pid=
[ "$st" = 0 ] || fail "rayos host exited with $st after SIGTERM: $(tail -n 5 /tmp/logs/rayosd.log)"
[ -e $RAYOS_SOCKET ] && fail "$RAYOS_SOCKET is left after the service stopped"
ok service-stop "rayos host exited 0, its socket removed"

# The same image under QEMU, with the same backends.
mkdir -p $Q
chmod 700 $Q
echo RAYOS-VA-QEMU-START
step qemu
# virtiofsd and rayos-vsock end with their frontend, so each boot gets its own.
boot_qemu() {
    rm -f $Q/fs.sock $Q/vhost-vsock.sock $Q/vsock.sock
    /usr/bin/virtiofsd --shared-dir /image/@ROOTFS@ --socket-path $Q/fs.sock --sandbox chroot --cache auto \
        </dev/null >>/tmp/logs/qemu-virtiofsd.log 2>&1 &
    procs="$procs $!"
    RUST_LOG=info /usr/bin/rayos-vsock --socket $Q/vhost-vsock.sock --uds-path $Q/vsock.sock --guest-cid 3 \
        </dev/null >>/tmp/logs/qemu-rayos-vsock.log 2>&1 &
    procs="$procs $!"
    # (not wait_for: this runs inside qemu_ping's wait_for on a retry)
    n=0
    until [ -S $Q/fs.sock ] && [ -S $Q/vhost-vsock.sock ]; do
        n=$((n + 1))
        [ $n -lt 150 ] || fail "the backends' sockets (QEMU) did not appear within 30 s"
        sleep 0.2
    done
    @QEMU@ -machine @QEMU_MACHINE@ -enable-kvm -cpu host -smp @CPUS@ -m @MEMORY@ \
        -nodefaults -no-user-config -display none -no-reboot \
        -object memory-backend-memfd,id=mem,size=@MEMORY@,share=on -numa node,memdev=mem \
        -kernel /image/@VMLINUZ@ -initrd /image/@INITRAMFS@ -append '@CMDLINE@' \
        -serial file:$QS \
        -chardev socket,id=fs0,path=$Q/fs.sock -device vhost-user-fs-pci,chardev=fs0,tag=rootfs \
        -chardev socket,id=vsock,path=$Q/vhost-vsock.sock -device vhost-user-vsock-pci,chardev=vsock \
        </dev/null >/tmp/logs/qemu.log 2>&1 &
    qemu_pid=$!
    qemu_stall_at=$(($(now) + @QEMU_STALL@))
}
# again_qemu WHY: boots QEMU again when a retry is left (keeping the failed
# boot's console as qemu-serial.N.log), or fails.
again_qemu() {
    if retry qemu "$1"; then
        mv $QS /tmp/logs/qemu-serial.$retries.log
        step qemu
        boot_qemu
        return 1
    fi
    echo "RAYOS-VN-REFERENCE-CRASH $1"
    fail "$1"
}
qemu_ping() {
    if ! kill -0 $qemu_pid 2>/dev/null; then
        wait $qemu_pid
        st=$?
        qemu_pid=
        # Under -no-reboot a guest reset (a triple fault) ends QEMU with 0.
        [ "$st" = 0 ] || fail "QEMU exited ($st) while booting: $(tail -n 3 /tmp/logs/qemu.log)"
        again_qemu "QEMU's guest reset itself while booting; its console ended: $(tail -n 1 $QS | cut -c1-120)"
        return 1
    fi
    if [ "$(now)" -ge "$qemu_stall_at" ]; then
        # A stalled reference boot (its agent silent for twice as long as a
        # slow boot takes): the console says how far it got.
        console_tail $QS
        kill -KILL $qemu_pid
        n=0
        while kill -0 $qemu_pid 2>/dev/null; do
            n=$((n + 1))
            [ $n -lt 50 ] || fail "QEMU (pid $qemu_pid) outlived SIGKILL by 10 s: state $(cut -d' ' -f3 /proc/$qemu_pid/stat), wchan $(cat /proc/$qemu_pid/wchan)"
            sleep 0.2
        done
        wait $qemu_pid
        qemu_pid=
        again_qemu "QEMU's guest did not reach its agent within @QEMU_STALL@ s; its console ended: $(tail -n 1 $QS | cut -c1-120)"
        return 1
    fi
    /usr/bin/rayos guest --vsock $Q/vsock.sock --timeout 5 ping >/tmp/ping.out 2>&1
}
boot_qemu
# Each boot is bounded by @QEMU_STALL@ s (qemu_ping); this bounds them all.
wait_for "the guest agent under QEMU" $((@QEMU_STALL@ * (@GUEST_RETRIES@ + 1) + 30)) qemu_ping
ok qemu "$(tr '\n' ' ' </tmp/ping.out)"

step qemu-poweroff
/usr/bin/rayos guest --vsock $Q/vsock.sock shutdown >/tmp/logs/qemu-shutdown.txt 2>&1 || fail "rayos guest shutdown (QEMU): $(cat /tmp/logs/qemu-shutdown.txt)"
( sleep 60; kill $qemu_pid 2>/dev/null ) &
watchdog=$!
wait $qemu_pid
st=$?
qemu_pid=
kill $watchdog 2>/dev/null
[ "$st" = 0 ] || fail "QEMU exited with $st after the shutdown request"
ok qemu-poweroff QEMU exited 0

for p in $procs $beat; do kill "$p" 2>/dev/null; done
sleep 0.5
save_logs
echo RAYOS-VN-DONE
poweroff -f

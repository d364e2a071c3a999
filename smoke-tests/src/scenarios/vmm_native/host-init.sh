#!/bin/busybox sh
# rayos-smoke vmm-native: the nested test host's /init
# (smoke-tests/src/scenarios/vmm_native/host-init.sh; its @...@ placeholders are filled in by mod.rs).
#
# The RayOS guest image (Debian trixie) under rayos-vmm, inside this test
# host, with RayOS's own backends: virtiofsd serves the guest's root from the
# image disk the outer host gives us (virtio-blk, ext4), rayos-vsock serves its
# vsock. Every step prints RAYOS-VN-STEP <name> when it starts and
# RAYOS-VN-OK <name> <detail> when it passed; the outer side times them.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /tmp /run /image /out /tmp/logs
echo @HOST_INIT@

V=/run/vm0.vsock
RT=/run/rayos
CTL=$RT/control.sock
vmm_pid=
procs=
@HOST_LIB@
save_logs() {
    [ -f /tmp/guest-serial.log ] && cp /tmp/guest-serial.log /tmp/logs/
    grep -q ' /out ' /proc/mounts && cp /tmp/logs/* /out/ 2>/dev/null
    sync
}
why=
fail() {
    echo "@HOST_FAIL@ $*"
    # A VMM that ended on its own says how (a guest crash is retried).
    if [ -n "$vmm_pid" ] && ! kill -0 "$vmm_pid" 2>/dev/null; then
        wait "$vmm_pid"
        st=$?
        echo "@VMM_EXIT@$st"
        vmm_pid=
        kvm_trace_dump $st
    fi
    vmm_state_report /tmp/guest-serial.log
    echo "RAYOS-VN-DIAG guest console: last lines from user space, then the last lines:"
    grep -v '^\[ *[0-9]*\.[0-9]*\]' /tmp/guest-serial.log 2>/dev/null | tail -n 15 | sed 's/^/RAYOS-VN-DIAG guest| /'
    tail -n 12 /tmp/guest-serial.log 2>/dev/null | sed 's/^/RAYOS-VN-DIAG guest| /'
    echo "RAYOS-VN-DIAG rayos-vmm log:"
    grep -v 'state report' /tmp/logs/rayos-vmm.log 2>/dev/null | tail -n 15 | sed 's/^/RAYOS-VN-DIAG vmm| /'
    [ -n "$vmm_pid" ] && kill "$vmm_pid" 2>/dev/null
    for p in $procs; do kill "$p" 2>/dev/null; done
    sleep 1
    save_logs
    echo RAYOS-VN-DONE
    poweroff -f
    sleep 60
}
# kvm_trace_dump STATUS: with --kvm-trace, the KVM events before a failed VMM
# exit (testhost.rs's trace hooks).
kvm_trace_dump() {
    status=$1
    :
@KVM_TRACE_AFTER@
}
# wait_for WHAT SECONDS COMMAND...: until COMMAND succeeds; fails the run
# after SECONDS (adding the output of `eval "$why"`) or at once when
# rayos-vmm is gone.
wait_for() {
    what=$1 secs=$2
    shift 2
    end=$(($(now) + secs))
    until "$@"; do
        if [ -n "$vmm_pid" ] && ! kill -0 "$vmm_pid" 2>/dev/null; then
            wait "$vmm_pid"
            st=$?
            echo "@VMM_EXIT@$st"
            vmm_pid=
            kvm_trace_dump $st
            fail "rayos-vmm exited ($st) while waiting for $what"
        fi
        [ "$(now)" -lt "$end" ] || fail "$what: not within $secs s${why:+: $(eval "$why")}"
        sleep 0.5
    done
}
# window_ready APP_ID_PARTS: a window of the VM with such an app_id has drawn
# (its JSON in /tmp/win.json).
window_ready() { /usr/bin/rayos-smoke-control $CTL --wait-window @VM@ "$1" 0 >/tmp/win.json 2>&1; }

load_kvm

# The guest image (an ext4 disk) and the output folder, from the outer host.
mount -t ext4 /dev/vda /image || fail "cannot mount the guest image disk /dev/vda"
mount -t virtiofs @OUT_TAG@ /out || fail "cannot mount the output folder (virtio-fs @OUT_TAG@)"
[ -f /image/@VMLINUZ@ ] && [ -d /image/@ROOTFS@/sbin ] || fail "the exported guest image lacks @VMLINUZ@ or @ROOTFS@"

step backends
/usr/bin/virtiofsd --shared-dir /image/@ROOTFS@ --socket-path /run/fs.sock --sandbox chroot --cache auto \
    </dev/null >/tmp/logs/virtiofsd.log 2>&1 &
procs="$procs $!"
RUST_LOG=info /usr/bin/rayos-vsock --socket /run/vhost-vsock.sock --uds-path $V --guest-cid 3 \
    </dev/null >/tmp/logs/rayos-vsock.log 2>&1 &
procs="$procs $!"
wait_for "the backends' sockets" 30 test -S /run/fs.sock -a -S /run/vhost-vsock.sock
ok backends virtiofsd and rayos-vsock listening

if [ "@DESKTOP@" = 1 ]; then
    # The compositor first: rayos-vmm shows the guest's display on the VM's
    # desktop socket from the guest's first scanout on.
    step compositor
    start_compositor $RT
    /usr/bin/rayos-smoke-control $CTL '{"op":"register_vm","name":"@VM@","colour":"@VM_COLOUR@"}' >/tmp/reg.txt 2>&1 \
        || fail "register_vm: $(cat /tmp/reg.txt)"
    ok compositor headless, VM @VM@ registered before its display
fi

@KVM_TRACE_BEFORE@
echo @VMM_START@
step vmm
@VMM_ENV@/usr/bin/rayos-vmm --kernel /image/@VMLINUZ@ --initramfs /image/@INITRAMFS@ \
    --cmdline '@CMDLINE@' --memory @MEMORY@ --cpus @CPUS@ \
    --serial file:/tmp/guest-serial.log --metrics /tmp/rayos-vmm-metrics.json \
    --fs tag=rootfs,socket=/run/fs.sock \
    --vhost-user virtio-id=19,socket=/run/vhost-vsock.sock \
    @GPU_ARGS@</dev/null >/tmp/logs/rayos-vmm.log 2>&1 &
vmm_pid=$!
# Fails at once when the guest's console shows it cannot get there.
ping_agent() {
    G=/tmp/guest-serial.log
    if grep -q 'probe with driver vmw_vsock_virtio_transport failed' $G 2>/dev/null; then
        fail "the guest's virtio-vsock driver did not bind: $(grep 'vmw_vsock_virtio_transport' $G | tail -n 1)"
    fi
    if grep -q 'rayos-initramfs: dropping to a shell' $G 2>/dev/null; then
        fail "the guest's initramfs could not start its root: $(grep 'rayos-initramfs:' $G | head -n 1)"
    fi
    # Every ~15 s, where the guest's console is (a stalled boot shows where).
    polls=$((polls + 1))
    # The console so far also goes to the output folder: a stalled test host
    # console cannot hide it.
    if [ $((polls % 20)) = 0 ]; then
        echo "RAYOS-VN-PROGRESS guest console: $(tail -n 1 $G 2>/dev/null | cut -c1-160)"
        cp $G /out/guest-serial.log 2>/dev/null
    fi
    /usr/bin/rayos guest --vsock $V --timeout 5 ping >/tmp/ping.out 2>&1
}
polls=0
wait_for "the guest agent on vsock port 5252" @BOOT_TIMEOUT@ ping_agent
ok agent "$(tr '\n' ' ' </tmp/ping.out)"

step catalog
/usr/bin/rayos guest --vsock $V apps >/tmp/logs/apps.txt 2>&1 || fail "rayos guest apps: $(tail -n 3 /tmp/logs/apps.txt)"
grep -q '^foot.desktop ' /tmp/logs/apps.txt || fail "foot.desktop is not in the guest catalog: $(cut -d' ' -f1 /tmp/logs/apps.txt | tr '\n' ' ')"
ok catalog "$(grep -c '\.desktop ' /tmp/logs/apps.txt) apps, foot.desktop among them"

step exit3
/usr/bin/rayos guest --vsock $V launch --wait --command -- sh -c 'id -un; exit 3' >/tmp/logs/exit3.txt 2>&1
st=$?
[ "$st" = 3 ] || fail "rayos guest launch --wait sh -c 'exit 3' returned $st: $(tail -n 3 /tmp/logs/exit3.txt)"
ok exit3 "status 3, ran as $(head -n 1 /tmp/logs/exit3.txt)"

if [ "@DESKTOP@" = 1 ]; then
    # guest_sh CMD: CMD in the guest (an embedded launch), its output in /tmp/gsh.out.
    # (bounded: a guest that stops answering must not hang the test host)
    guest_sh() { timeout 60 /usr/bin/rayos guest --vsock $V launch --wait --command -- sh -c "$1" >/tmp/gsh.out 2>&1; }
    ctl() { /usr/bin/rayos-smoke-control $CTL "$@" >/tmp/ctl.txt 2>&1 || fail "control $*: $(tail -c 600 /tmp/ctl.txt)"; }
    # shot NAME: screenshots of the desktop window and of the output.
    shot() {
        ctl "{\"op\":\"screenshot\",\"window\":$wid,\"path\":\"/tmp/logs/$1-window.png\"}" \
            "{\"op\":\"screenshot\",\"path\":\"/tmp/logs/$1-output.png\"}"
    }
    # win_field NAME: a number from the desktop window's JSON (in /tmp/win.json).
    win_field() { sed -n "s/.*\"geometry\":{[^}]*\"$1\":\(-*[0-9]*\).*/\1/p" /tmp/win.json | head -n 1; }

    # The first embedded launch that finds the guest's DRM card starts its
    # desktop session (udevd, seatd, weston on DRM with pixman).
    step desktop
    why='echo "guest: $(tail -n 3 /tmp/gsh.out)"'
    wait_for "the guest's desktop session (weston serving /run/user/1000/wayland-0)" @WINDOW_TIMEOUT@ \
        guest_sh 'test -S /run/user/1000/wayland-0'
    why=
    wait_for "the VM's embedded-desktop window" @WINDOW_TIMEOUT@ window_ready @DESKTOP_APP_ID@
    wid=$(sed -n 's/.*"id":\([0-9]*\).*/\1/p' /tmp/win.json | head -n 1)
    # weston's desktop shell paints its background and panel some seconds
    # after weston serves its socket (a black frame until then). Waiting on
    # the shot's size: a black frame compresses to a few KB, the desktop's
    # patterned background to hundreds; the outer side checks the pixels.
    desktop_drawn() { shot desktop; [ "$(wc -c </tmp/logs/desktop-window.png)" -gt 60000 ]; }
    wait_for "weston's desktop drawn in the window" 90 desktop_drawn
    echo "RAYOS-VN-DESKTOP $(cat /tmp/win.json)"
    # weston's log (its input devices, outputs) goes with the test host's logs.
    weston_log() { guest_sh 'cat /tmp/weston.log' && cp /tmp/gsh.out /tmp/logs/weston.log; }
    weston_log
    ok desktop "window $wid; weston running"

    # A click on weston's panel launcher (top-left of the guest's display)
    # starts weston-terminal in the guest.
    step click
    gx=$(win_field x) gy=$(win_field y)
    echo "RAYOS-VN-PROGRESS clicking weston's launcher at ($((gx + 18)), $((gy + 16))); window at ($gx, $gy)"
    # What the guest's tablet device reports during the click (raw evdev:
    # 24-byte events), for the logs and the evaluation.
    timeout 30 /usr/bin/rayos guest --vsock $V launch --command -- \
        sh -c 'timeout 20 dd if=/dev/input/event1 of=/tmp/tablet.bin bs=24 count=7 2>/dev/null' >/dev/null 2>&1
    sleep 1
    # Move, then press and release: a click as a hand makes it.
    px=$((gx + 18)) py=$((gy + 16))
    ctl "{\"op\":\"pointer\",\"x\":$px,\"y\":$py,\"action\":\"motion\"}"
    sleep 0.5
    ctl "{\"op\":\"pointer\",\"x\":$px,\"y\":$py,\"button\":\"left\",\"action\":\"press\"}"
    sleep 0.2
    ctl "{\"op\":\"pointer\",\"x\":$px,\"y\":$py,\"button\":\"left\",\"action\":\"release\"}"
    sleep 1
    guest_sh 'grep virtio3 /proc/interrupts; od -An -tx1 -v /tmp/tablet.bin'
    cp /tmp/gsh.out /tmp/logs/guest-input.txt
    echo "RAYOS-VN-TABLET $(tr '\n' ' ' </tmp/logs/guest-input.txt)"
    why='weston_log; echo "weston: $(grep -i -E "input|seat|libinput|pointer" /tmp/logs/weston.log | tail -n 8)"'
    wait_for "weston-terminal, started by a click on weston's panel" 60 guest_sh 'pgrep -x weston-terminal'
    why=
    ok click "weston-terminal pid $(tail -n 1 /tmp/gsh.out)"

    # Keys typed into the window reach the terminal's shell, which writes a
    # file the test host reads through the guest's root share.
    step typed
    # The terminal maps and takes weston's keyboard focus a few seconds
    # after it starts (fonts, its first frame) under nested emulation.
    sleep 6
    shot clicked
    typed_cmd="{\"op\":\"key\",\"id\":$wid,\"text\":\"\\necho typed-through-rayos > /home/rayos/@TYPED_FILE@\\n\"}"
    ctl "$typed_cmd"
    typed_file() { test -s /image/@ROOTFS@/home/rayos/@TYPED_FILE@; }
    end=$(($(now) + 20))
    until typed_file || [ "$(now)" -ge "$end" ]; do sleep 0.5; done
    if ! typed_file; then
        # Printed and counted: the outer side reports it (typed_retries).
        echo "RAYOS-VN-TYPED-RETRY the typed file did not appear within 20 s; typing once more"
        shot typed-missing
        ctl "$typed_cmd"
    fi
    wait_for "the file typed into the guest's terminal" 40 typed_file
    ok typed "$(cat /image/@ROOTFS@/home/rayos/@TYPED_FILE@)"
    shot typed

    # A host resize of the window: the guest's display follows (its
    # connector's preferred mode), and weston's output if it re-modes.
    step resize
    ctl "{\"op\":\"resize\",\"id\":$wid,\"width\":@RESIZE_W@,\"height\":@RESIZE_H@}"
    why='echo "guest modes: $(tail -n 3 /tmp/gsh.out)"'
    wait_for "the guest's display at @RESIZE_W@x@RESIZE_H@" 60 \
        guest_sh 'head -n 1 /sys/class/drm/card0-Virtual-1/modes | grep -qx @RESIZE_W@x@RESIZE_H@ && cat /sys/class/drm/card0-Virtual-1/modes'
    why=
    ok resize "guest modes $(tr '\n' ' ' </tmp/gsh.out)"
    sleep 3
    ctl '{"op":"list_windows"}'
    echo "RAYOS-VN-LIST $(tail -n 1 /tmp/ctl.txt)"
    shot resized
    weston_log
fi

if [ "@NATIVE@" = 1 ]; then
    step compositor
    start_compositor $RT
    /usr/bin/rayos-smoke-control $CTL '{"op":"register_vm","name":"@VM@","colour":"@VM_COLOUR@"}' >/tmp/reg.txt 2>&1 \
        || fail "register_vm: $(cat /tmp/reg.txt)"
    ok compositor headless, VM @VM@ registered

    step bridge
    /usr/bin/rayos bridge --vsock $V --vm @VM@ --socket-dir $RT --guest-root /image/@ROOTFS@ --log /tmp/logs/waypipe.log \
        </dev/null >/tmp/logs/bridge.log 2>&1 &
    procs="$procs $!"
    wait_for "the bridge's socket ${V}_@BRIDGE_PORT@" 30 test -S ${V}_@BRIDGE_PORT@
    ok bridge listening on ${V}_@BRIDGE_PORT@

    # `rayos launch` with ARGS, its JSON in LOG; it must have used the bridge.
    launch_bridged() { # LOG ARGS...
        log=$1
        shift
        /usr/bin/rayos launch --vsock $V "$@" >$log 2>&1 || fail "rayos launch $*: $(tail -n 3 $log)"
        grep -q '"native_window":true' $log || fail "rayos launch did not use the bridge: $(cat $log)"
    }
    # Waits for a drawn window of the VM whose app_id matches PATTERN, prints
    # it after MARKER, sets wid and takes screenshots of it (WINDOW_PNG) and
    # of the output (OUTPUT_PNG), then prints the window list.
    drawn_window() { # WHAT PATTERN MARKER WINDOW_PNG OUTPUT_PNG
        why='echo "windows $(tail -c 1500 /tmp/win.json); waypipe: $(tail -n 5 /tmp/logs/waypipe.log)"'
        wait_for "$1" @WINDOW_TIMEOUT@ window_ready "$2"
        echo "$3 $(cat /tmp/win.json)"
        wid=$(sed -n 's/.*"id":\([0-9]*\).*/\1/p' /tmp/win.json | head -n 1)
        sleep 1
        /usr/bin/rayos-smoke-control $CTL "{\"op\":\"screenshot\",\"window\":$wid,\"path\":\"/tmp/logs/$4\"}" \
            "{\"op\":\"screenshot\",\"path\":\"/tmp/logs/$5\"}" "{\"op\":\"list_windows\"}" >/tmp/shot.txt 2>&1 \
            || fail "screenshots of window $wid: $(tail -c 600 /tmp/shot.txt)"
        echo "RAYOS-VN-LIST $(tail -n 1 /tmp/shot.txt)"
        why=
    }

    step launch
    launch_bridged /tmp/logs/launch.json --json @APP@
    ok launch "$(tail -n 1 /tmp/logs/launch.json)"

    step window
    drawn_window "a window of VM @VM@ with app_id *@APP_ID_PART@* that has drawn" '@APP_ID_PART@' RAYOS-VN-WINDOW guest-window.png output.png
    ok window "window $wid of VM @VM@ drew; screenshots taken"

    # Closing the window ends the app's window for good (and lets the guest
    # idle while the intent model loads).
    step close
    /usr/bin/rayos-smoke-control $CTL "{\"op\":\"close\",\"id\":$wid}" >/tmp/close.txt 2>&1 || fail "close: $(cat /tmp/close.txt)"
    window_gone() { ! /usr/bin/rayos-smoke-control $CTL '{"op":"list_windows"}' 2>&1 | grep -q "\"id\":$wid,"; }
    wait_for "window $wid to close" 60 window_gone
    ok close "window $wid closed"

    if [ "@WORDS@" = 1 ]; then
        step words
        launch_bridged /tmp/logs/launch-words.json --system --json @WORDS_REQUEST@
        ok words "$(tail -n 1 /tmp/logs/launch-words.json)"

        step terminal
        drawn_window "a terminal window of VM @VM@ that has drawn" '@TERMINAL_APP_IDS@' RAYOS-VN-TERMINAL terminal-window.png output-two-apps.png
        ok terminal "window $wid of VM @VM@ drew; screenshots taken"
    fi
fi

step poweroff
/usr/bin/rayos guest --vsock $V shutdown >/tmp/logs/shutdown.txt 2>&1 || fail "rayos guest shutdown: $(cat /tmp/logs/shutdown.txt)"
( sleep @POWEROFF_TIMEOUT@; kill "$vmm_pid" 2>/dev/null ) &
watchdog=$!
wait "$vmm_pid"
status=$?
kill "$watchdog" 2>/dev/null
[ -s /tmp/rayos-vmm-metrics.json ] && echo "@VMM_METRICS@$(tr -d '\n' < /tmp/rayos-vmm-metrics.json)"
echo "@VMM_EXIT@$status"
vmm_pid=
kvm_trace_dump $status
[ "$status" = 0 ] || fail "rayos-vmm exited with $status after the shutdown request"
ok poweroff rayos-vmm exited 0
for p in $procs; do kill "$p" 2>/dev/null; done
sleep 0.5
save_logs
echo RAYOS-VN-DONE
poweroff -f

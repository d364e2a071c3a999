#!/bin/busybox sh
# RayOS compositor-drm test host init (smoke-tests/src/scenarios/compositor_drm/init.sh; its @...@ placeholders are filled in by init.rs).
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm /run /tmp
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs -o mode=755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /tmp
echo @INIT@
fail() { echo "@FAIL@$*"; poweroff -f; sleep 60; }
for m in $(cat @LIST_DIR@/@LIST@); do
    insmod @MODULE_DIR@/$m.ko || fail "insmod $m.ko failed"
done
@UDEVD@ --daemon || fail "systemd-udevd did not start"
udevadm trigger --action=add --type=subsystems
udevadm trigger --action=add --type=devices
udevadm settle --timeout=120 || fail "udevadm settle timed out"
[ -c /dev/dri/card0 ] || fail "no /dev/dri/card0 after loading the display driver"
for c in /sys/class/drm/card*-*; do
    [ -e "$c/status" ] || continue
    echo "@CONNECTOR@${c##*/} status=$(cat $c/status) modes=$(tr '\n' ',' < $c/modes)"
done
tagged=0
for e in /dev/input/event*; do
    [ -c "$e" ] || continue
    props=$(udevadm info --query=property --name=$e | grep -E '^(NAME|ID_INPUT[A-Z_]*)=' | tr '\n' ' ')
    echo "@INPUT@$e $props"
    case "$props" in *ID_INPUT=1*) tagged=$((tagged+1)); nodes="$nodes $e" ;; esac
done
[ $tagged -gt 0 ] || fail "no input device tagged ID_INPUT=1 by udev"
mkdir -p @SOCKET_DIR@
chmod 700 @SOCKET_DIR@
echo @COMPOSITOR_START@
( LIBSEAT_BACKEND=builtin XDG_RUNTIME_DIR=@SOCKET_DIR@ @LOG@@COMPOSITOR@ --backend drm --socket-dir @SOCKET_DIR@ --control @CONTROL@ </dev/null
  s=$?; echo $s > /tmp/compositor.status; echo "@COMPOSITOR_EXIT@$s" ) &
i=0
while [ ! -S @SOCKET_DIR@/@SOCKET@ ]; do
    [ -e /tmp/compositor.status ] && fail "the compositor exited with status $(cat /tmp/compositor.status) before its Wayland socket appeared"
    i=$((i+1))
    [ $i -gt @TRIES@ ] && fail "no Wayland socket @SOCKET_DIR@/@SOCKET@ after @SECS@ s"
    sleep 0.1
done
( XDG_RUNTIME_DIR=@SOCKET_DIR@ WAYLAND_DISPLAY=@SOCKET@ @CLIENT@ </dev/null
  echo "@CLIENT_EXIT@$?" ) &
# Input events sent before libinput opened a device would be lost: wait until
# a process (the compositor) holds every tagged event node open.
for e in $nodes; do
    i=0
    until ls -l /proc/[0-9]*/fd/ 2>/dev/null | grep -q " -> $e\$"; do
        [ -e /tmp/compositor.status ] && fail "the compositor exited with status $(cat /tmp/compositor.status)"
        i=$((i+1))
        [ $i -gt @TRIES@ ] && fail "the compositor did not open $e within @SECS@ s"
        sleep 0.1
    done
done
echo "@INPUT_OPEN@$nodes"
echo @READY@
# The host side captures the scanout and sends input through QMP, then quits QEMU.
while :; do sleep 3600; done

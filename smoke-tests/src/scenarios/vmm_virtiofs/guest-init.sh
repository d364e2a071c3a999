#!/bin/busybox sh
echo @GUEST_INIT@
# RayOS vmm-virtiofs guest init (smoke-tests/src/scenarios/vmm_virtiofs/guest-init.sh; its @...@ placeholders are filled in by plan.rs).
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "@GUEST_INFO@$(uname -r) nproc=$(nproc)"
MIB=@MIB@
BYTES=@BYTES@
STEP_TIMEOUT=@STEP_TIMEOUT@
MNT=@MNT@

diag() {
    for d in /sys/bus/pci/devices/*; do
        [ -e "$d" ] || continue
        drv=$(readlink "$d/driver" 2>/dev/null)
        echo "@DIAG@pci ${d##*/} $(cat "$d/vendor"):$(cat "$d/device") class=$(cat "$d/class") driver=${drv##*/} irq=$(cat "$d/irq" 2>/dev/null)"
    done
    for d in /sys/bus/virtio/devices/*; do
        [ -e "$d" ] || continue
        drv=$(readlink "$d/driver" 2>/dev/null)
        echo "@DIAG@virtio ${d##*/} device=$(cat "$d/device") vendor=$(cat "$d/vendor") status=$(cat "$d/status" 2>/dev/null) features=$(cat "$d/features" 2>/dev/null) driver=${drv##*/}"
    done
    sed 's/^/@DIAG@interrupts /' /proc/interrupts
    lsmod | sed 's/^/@DIAG@lsmod /'
    grep -E 'virtiofs|fuse' /proc/mounts | sed 's/^/@DIAG@mount /'
    dmesg | sed 's/^/@DIAG@dmesg /'
}
STEP=boot
step() {
    STEP=$1
    echo "$1 $(cut -d. -f1 /proc/uptime)" > /run/rayos-step
    echo "@STEP@$1"
}
fs_error() {
    kill $WATCHDOG 2>/dev/null
    echo "@ERROR@$STEP: $*"
    diag
    poweroff -f
    sleep 60
}
step start
(
    while sleep 5; do
        read name since < /run/rayos-step || continue
        [ -n "$since" ] || continue
        now=$(cut -d. -f1 /proc/uptime)
        if [ $((now - since)) -ge $STEP_TIMEOUT ]; then
            echo "@ERROR@$name: no progress for ${STEP_TIMEOUT} s (guest watchdog)"
            diag
            poweroff -f
        fi
    done
) &
WATCHDOG=$!

if sed -n '/^now at /{p;q}' /proc/timer_list 2>/dev/null | grep -q nsecs; then
    CLOCK=timer_list
else
    CLOCK=uptime
fi
now_ns() {
    if [ $CLOCK = timer_list ]; then
        sed -n '/^now at /{s/^now at \([0-9]*\) nsecs.*/\1/p;q}' /proc/timer_list
    else
        awk '{printf "%.0f\n", $1 * 1000000000}' /proc/uptime
    fi
}
echo "@CLOCK@$CLOCK"

step modules
for m in $(cat @MODULE_LIST@); do
    insmod @MODULE_DIR@/$m.ko 2>/tmp/err || fs_error "insmod $m.ko failed: $(cat /tmp/err)"
done

step pci
pcidev=
for d in /sys/bus/pci/devices/*; do
    [ "$(cat "$d/vendor" 2>/dev/null):$(cat "$d/device" 2>/dev/null)" = 0x1af4:0x105a ] && pcidev=${d##*/}
done
[ -n "$pcidev" ] || fs_error "no virtio-fs PCI function (1af4:105a) on the PCI bus"
echo "@PCI@$pcidev"

step probe
i=0
while :; do
    drv=$(readlink /sys/bus/pci/devices/$pcidev/driver 2>/dev/null)
    vdev=
    for d in /sys/bus/virtio/devices/*; do
        [ "$(cat "$d/device" 2>/dev/null)" = 0x001a ] && vdev=$d
    done
    vdrv=
    [ -n "$vdev" ] && vdrv=$(readlink "$vdev/driver" 2>/dev/null)
    [ "${vdrv##*/}" = virtiofs ] && break
    i=$((i + 1))
    if [ $i -ge 50 ]; then
        [ "${drv##*/}" = virtio-pci ] || fs_error "virtio-pci did not bind $pcidev (driver: ${drv##*/})"
        [ -n "$vdev" ] || fs_error "virtio-pci bound $pcidev but created no virtio device of type 26 (fs)"
        fs_error "the virtiofs driver did not bind ${vdev##*/} (driver: ${vdrv##*/})"
    fi
    sleep 0.1
done

step mount
mkdir -p $MNT
mount -t virtiofs @TAG@ $MNT 2>/tmp/err || fs_error "mount -t virtiofs @TAG@ $MNT failed: $(cat /tmp/err)"
grep -q " $MNT virtiofs " /proc/mounts || fs_error "$MNT is not a virtiofs mount after mount succeeded"
[ -f $MNT/@IN_FILE@ ] || fs_error "$MNT/@IN_FILE@ not found (ls: $(ls -la $MNT 2>&1 | tr '\n' ' '))"
size=$(stat -c %s $MNT/@IN_FILE@)
[ "$size" = $BYTES ] || fs_error "$MNT/@IN_FILE@ has $size bytes, expected $BYTES"

step read
t0=$(now_ns)
dd if=$MNT/@IN_FILE@ of=/dev/null bs=1M 2>/tmp/err || fs_error "dd if=$MNT/@IN_FILE@ failed: $(tail -n 1 /tmp/err)"
t1=$(now_ns)
echo "@READ@start_ns=$t0 end_ns=$t1 bytes=$size"

step read-sha256
sum=$(sha256sum $MNT/@IN_FILE@) || fs_error "sha256sum $MNT/@IN_FILE@ failed"
echo "@READ_SHA@${sum%% *}"

step generate
dd if=/dev/urandom of=/tmp/@OUT_FILE@ bs=1M count=$MIB iflag=fullblock 2>/tmp/err || fs_error "cannot create /tmp/@OUT_FILE@: $(tail -n 1 /tmp/err)"
sum=$(sha256sum /tmp/@OUT_FILE@) || fs_error "sha256sum /tmp/@OUT_FILE@ failed"
echo "@WRITE_SHA@${sum%% *}"

step write
t0=$(now_ns)
dd if=/tmp/@OUT_FILE@ of=$MNT/@OUT_FILE@ bs=1M 2>/tmp/err || fs_error "dd of=$MNT/@OUT_FILE@ failed: $(tail -n 1 /tmp/err)"
sync || fs_error "sync failed"
t1=$(now_ns)
echo "@WRITE@start_ns=$t0 end_ns=$t1 bytes=$(stat -c %s /tmp/@OUT_FILE@)"
grep -i virtio /proc/interrupts | sed 's/^/@IRQ@/'

step umount
umount $MNT || fs_error "umount $MNT failed"

step readonly
n=0
for d in /sys/bus/virtio/devices/*; do
    [ "$(cat "$d/device" 2>/dev/null)" = 0x001a ] && n=$((n + 1))
done
if [ $n -ge 2 ]; then
    mkdir -p @RO_MNT@
    i=0
    until mount -t virtiofs @RO_TAG@ @RO_MNT@ 2>/tmp/err; do
        i=$((i + 1))
        [ $i -lt 50 ] || fs_error "mount -t virtiofs @RO_TAG@ @RO_MNT@ failed: $(cat /tmp/err)"
        sleep 0.1
    done
    token=$(cat @RO_MNT@/@RO_FILE@) || fs_error "cannot read @RO_MNT@/@RO_FILE@"
    refused=0
    last=
    for w in "echo x > @RO_MNT@/new.txt" "echo x >> @RO_MNT@/@RO_FILE@" "rm @RO_MNT@/@RO_FILE@" "mkdir @RO_MNT@/dir"; do
        if out=$(sh -c "$w" 2>&1); then
            echo "@DIAG@read-only share allowed: $w"
        else
            refused=$((refused + 1))
            last=$out
        fi
    done
    files=$(ls -A @RO_MNT@ | wc -l)
    umount @RO_MNT@ || fs_error "umount @RO_MNT@ failed"
    echo "@RO@token=$token refused=$refused tried=@RO_WRITES@ files=$files error=$last"
else
    echo "@RO@absent"
fi
kill $WATCHDOG 2>/dev/null
echo @DONE@
echo @GUEST_OK@
poweroff -f

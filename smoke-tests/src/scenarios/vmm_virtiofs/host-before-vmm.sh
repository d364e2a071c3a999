# wait_virtiofsd PID SOCKET LOG WHAT: until virtiofsd PID has made SOCKET
# (30 s), failing with its LOG when it exits first.
wait_virtiofsd() {
    i=0
    while [ ! -S "$2" ]; do
        if ! kill -0 "$1" 2>/dev/null; then
            sed "s/^/$(basename "$3" .log): /" "$3"
            fail "virtiofs: $4 exited before creating $2: $(tail -n 1 "$3")"
        fi
        i=$((i + 1))
        [ $i -lt 300 ] || fail "virtiofs: $4 did not create $2 within 30 s"
        sleep 0.1
    done
}
mkdir -p @SHARE@
mount -t tmpfs -o size=@TMPFS_MIB@m tmpfs @SHARE@ || fail "virtiofs: cannot mount a tmpfs on @SHARE@"
dd if=/dev/urandom of=@SHARE@/@IN_FILE@ bs=1M count=@MIB@ iflag=fullblock 2>/tmp/err || fail "virtiofs: cannot create @SHARE@/@IN_FILE@: $(tail -n 1 /tmp/err)"
sum=$(sha256sum @SHARE@/@IN_FILE@) || fail "virtiofs: sha256sum @SHARE@/@IN_FILE@ failed"
echo "@HOST_IN@${sum%% *} bytes=$(stat -c %s @SHARE@/@IN_FILE@)"
[ -x @VIRTIOFSD@ ] || fail "@VIRTIOFSD@ is not in this test host"
rm -f @SOCKET@
@VIRTIOFSD@ --socket-path=@SOCKET@ --shared-dir=@SHARE@ --sandbox=@SANDBOX@ >@LOG@ 2>&1 &
vfs_pid=$!
wait_virtiofsd $vfs_pid @SOCKET@ @LOG@ "virtiofsd (--sandbox=@SANDBOX@)"
echo "@HOST_INFO@virtiofsd pid=$vfs_pid sandbox=@SANDBOX@ socket=@SOCKET@ shared_dir=@SHARE@"
mkdir -p @RO_DIR@
mount -t tmpfs -o size=1m tmpfs @RO_DIR@ || fail "virtiofs: cannot mount a tmpfs on @RO_DIR@"
head -c 16 /dev/urandom | sha256sum | cut -c1-32 > @RO_DIR@/@RO_FILE@
echo "@HOST_RO@before token=$(cat @RO_DIR@/@RO_FILE@) files=$(ls -A @RO_DIR@ | wc -l)"
rm -f @RO_SOCKET@
@VIRTIOFSD@ --socket-path=@RO_SOCKET@ --shared-dir=@RO_DIR@ --sandbox=@SANDBOX@ --cache=auto --readonly >@RO_LOG@ 2>&1 &
ro_pid=$!
wait_virtiofsd $ro_pid @RO_SOCKET@ @RO_LOG@ "the read-only virtiofsd (--readonly, --sandbox=@SANDBOX@)"

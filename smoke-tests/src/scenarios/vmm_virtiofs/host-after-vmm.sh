kill $ro_pid 2>/dev/null
sed 's/^/virtiofsd-ro: /' @RO_LOG@
i=0
while kill -0 $vfs_pid 2>/dev/null && [ $i -lt 50 ]; do i=$((i + 1)); sleep 0.1; done
if kill -0 $vfs_pid 2>/dev/null; then
    echo "@HOST_INFO@virtiofsd still running 5 s after the VMM exited; killing it"
    kill $vfs_pid
fi
sed 's/^/virtiofsd: /' @LOG@
if [ -f @SHARE@/@OUT_FILE@ ]; then
    sum=$(sha256sum @SHARE@/@OUT_FILE@)
    echo "@HOST_OUT@${sum%% *} bytes=$(stat -c %s @SHARE@/@OUT_FILE@)"
else
    echo "@HOST_OUT@missing"
fi
echo "@HOST_RO@after token=$(cat @RO_DIR@/@RO_FILE@ 2>/dev/null) files=$(ls -A @RO_DIR@ | wc -l)"

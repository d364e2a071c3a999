//! A [`VmSpec`]'s command line, parsed by rayos-vmm's own clap parser, gives
//! back the same VM: the interface crate and the VMM cannot drift apart.

use clap::Parser;
use rayos_vmm::cli::Args;
use rayos_vmm_api::{FsDevice, Serial, VhostUserDevice, VmSpec, VIRTIO_ID_VSOCK};

fn parse(spec: &VmSpec) -> Args {
    let mut argv = vec![std::ffi::OsString::from("rayos-vmm")];
    argv.extend(spec.to_argv().unwrap());
    Args::try_parse_from(argv).unwrap()
}

#[test]
fn every_field_reaches_the_vmm_parser() {
    let mut spec = VmSpec::new("/img/vmlinuz");
    spec.initramfs = Some("/img/initramfs.cpio.gz".into());
    spec.cmdline = "console=ttyS0 rayos.root=rootfs panic=-1".into();
    spec.memory_mib = 1536;
    spec.cpus = 2;
    spec.serial = Serial::File("/run/rayos/linux/serial.log".into());
    spec.metrics = Some("/run/rayos/linux/metrics.json".into());
    spec.fs.push(FsDevice { tag: "rootfs".into(), socket: "/run/rayos/linux/fs-rootfs.sock".into() });
    spec.fs.push(FsDevice { tag: "share0".into(), socket: "/run/rayos/linux/fs-share0.sock".into() });
    spec.vhost_user.push(VhostUserDevice {
        virtio_id: VIRTIO_ID_VSOCK,
        socket: "/run/rayos/linux/vhost-vsock.sock".into(),
        queues: Some(3),
        queue_size: Some(256),
    });
    let a = parse(&spec);
    assert_eq!(a.kernel, spec.kernel);
    assert_eq!(a.initramfs, spec.initramfs);
    assert_eq!(a.cmdline, spec.cmdline);
    assert_eq!(rayos_vmm::cli::parse_size(&a.memory).unwrap(), 1536 << 20);
    assert_eq!(a.cpus, 2);
    assert_eq!(
        rayos_vmm::cli::parse_serial(&a.serial).unwrap(),
        rayos_vmm::cli::SerialMode::File("/run/rayos/linux/serial.log".into())
    );
    assert_eq!(a.metrics, spec.metrics);
    assert_eq!(
        a.fs,
        ["tag=rootfs,socket=/run/rayos/linux/fs-rootfs.sock", "tag=share0,socket=/run/rayos/linux/fs-share0.sock"]
    );
    assert_eq!(a.vhost_user, ["virtio-id=19,socket=/run/rayos/linux/vhost-vsock.sock,queues=3,queue-size=256"]);
}

#[test]
fn device_values_pass_the_vmm_validation_with_live_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let fs_sock = dir.path().join("fs.sock");
    let vs_sock = dir.path().join("vsock.sock");
    let _a = std::os::unix::net::UnixListener::bind(&fs_sock).unwrap();
    let _b = std::os::unix::net::UnixListener::bind(&vs_sock).unwrap();
    let mut spec = VmSpec::new("/k");
    spec.fs.push(FsDevice { tag: "rootfs".into(), socket: fs_sock.clone() });
    spec.vhost_user.push(VhostUserDevice {
        virtio_id: VIRTIO_ID_VSOCK,
        socket: vs_sock.clone(),
        queues: None,
        queue_size: None,
    });
    let a = parse(&spec);
    let fs = rayos_vmm::cli::parse_fs(&a.fs[0], 0).unwrap();
    assert_eq!(fs.socket, fs_sock);
    let vs = rayos_vmm::cli::parse_vhost_user(&a.vhost_user[0], 1).unwrap();
    assert_eq!(vs.socket, vs_sock);
    assert_eq!(vs.device_type, VIRTIO_ID_VSOCK);
    assert_eq!(vs.queue_sizes.len(), 3, "vsock's default queue count");
}

//! Tier 1: when the vhost-user backend process dies, the VMM side survives:
//! the device reports itself broken (its transport then shows
//! DEVICE_NEEDS_RESET), the notifier fires, and activation fails cleanly.

mod common;

use std::time::{Duration, Instant};

use common::*;
use rayos_vmm::memory::GuestRam;
use rayos_vmm::virtio::vhost_user::VhostUserDevice;
use rayos_vmm::virtio::{Activation, VirtioDevice};
use vmm_sys_util::eventfd::EventFd;

#[test]
fn backend_death_marks_the_device_broken() {
    let dir = tempfile::tempdir().unwrap();
    // The backend runs in a child process so that it can really die (or stop).
    let pid = fork_backend(dir.path());
    let sock = dir.path().join("upper.sock");
    let ram = GuestRam::new(16 << 20).unwrap();
    let mut dev = VhostUserDevice::connect("upper", &sock, 42, vec![256], None, &ram).unwrap();
    let notifier = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    dev.set_broken_notifier(notifier.try_clone().unwrap());
    assert!(!dev.broken());

    // SAFETY: killing and reaping our own child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
    let t0 = Instant::now();
    while !dev.broken() {
        assert!(t0.elapsed() < Duration::from_secs(10), "death not noticed");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(wait_eventfd(&notifier, Duration::from_secs(5)), "configuration interrupt raised");

    let ring = Ring::new(256, 0x10000);
    let q = ring.queue_state();
    let kicks = [EventFd::new(0).unwrap()];
    let calls = [EventFd::new(0).unwrap()];
    let err = dev
        .activate(Activation {
            features: 1 << 32,
            mem: &ram.memory,
            queues: vec![(0, q)],
            kicks: &kicks,
            calls: &calls,
        })
        .unwrap_err();
    assert!(matches!(err, rayos_vmm::virtio::ActivateError::BackendGone(_)), "{err}");
    assert!(err.to_string().contains("is gone"), "{err}");
    // Reading configuration no longer talks to the dead backend.
    let mut b = [0xffu8; 4];
    dev.read_config(0, &mut b);
    assert_eq!(b, [0; 4]);
}

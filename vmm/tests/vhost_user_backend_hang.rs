//! Tier 1: a vhost-user backend that stops answering (SIGSTOP) cannot hang
//! the VMM: a request waits at most REQUEST_TIMEOUT, then the device is
//! marked broken (its transport shows DEVICE_NEEDS_RESET) and the notifier
//! fires. One test per binary: the backend runs in a forked child.

mod common;

use std::time::{Duration, Instant};

use common::*;
use rayos_vmm::memory::GuestRam;
use rayos_vmm::virtio::vhost_user::{VhostUserDevice, REQUEST_TIMEOUT};
use rayos_vmm::virtio::{Activation, VirtioDevice};
use vmm_sys_util::eventfd::EventFd;

#[test]
fn a_stopped_backend_times_out_and_marks_the_device_broken() {
    let dir = tempfile::tempdir().unwrap();
    // The backend runs in a child process so that it can really die (or stop).
    let pid = fork_backend(dir.path());
    let sock = dir.path().join("upper.sock");
    let ram = GuestRam::new(16 << 20).unwrap();
    let mut dev = VhostUserDevice::connect("upper", &sock, 42, vec![256], None, &ram).unwrap();
    let notifier = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    dev.set_broken_notifier(notifier.try_clone().unwrap());
    let ring = Ring::new(256, 0x10000);
    let q = ring.queue_state();
    let kicks = [EventFd::new(0).unwrap()];
    let calls = [EventFd::new(0).unwrap()];
    dev.activate(Activation {
        features: 1 << 32,
        mem: &ram.memory,
        queues: vec![(0, q)],
        kicks: &kicks,
        calls: &calls,
    })
    .unwrap();

    // The backend stops; the driver resets the device (GET_VRING_BASE waits for a reply).
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    let (tx, rx) = std::sync::mpsc::channel();
    let t0 = Instant::now();
    let worker = std::thread::spawn(move || {
        dev.reset();
        tx.send(()).unwrap();
        dev
    });
    let done = rx.recv_timeout(REQUEST_TIMEOUT + Duration::from_secs(10));
    let took = t0.elapsed();
    // SAFETY: killing and reaping our own child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
    assert!(done.is_ok(), "reset still waiting on the stopped backend after {took:?}");
    let dev = worker.join().unwrap();
    println!("reset gave up after {:.2} s", took.as_secs_f64());
    assert!(took >= REQUEST_TIMEOUT - Duration::from_millis(200), "gave up early: {took:?}");
    assert!(dev.broken(), "the device is marked broken");
    assert!(wait_eventfd(&notifier, Duration::from_secs(5)), "configuration interrupt raised");
}

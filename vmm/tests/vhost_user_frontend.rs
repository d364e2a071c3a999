//! Tier 1: the vhost-user frontend against a real vhost-user-backend
//! backend in this process, exchanging real descriptors through guest RAM
//! (a memfd the backend maps from SET_MEM_TABLE).

mod common;

use std::time::Duration;

use common::*;
use rayos_vmm::memory::GuestRam;
use rayos_vmm::virtio::vhost_user::VhostUserDevice;
use rayos_vmm::virtio::{Activation, VirtioDevice, VIRTIO_F_VERSION_1};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

#[test]
fn requests_round_trip_through_the_backend() {
    let dir = tempfile::tempdir().unwrap();
    let sock = start_backend(dir.path());
    let ram = GuestRam::new(16 << 20).unwrap();
    let mut dev = VhostUserDevice::connect("upper", &sock, 42, vec![256], None, &ram).unwrap();

    assert_eq!(dev.device_type(), 42);
    assert_eq!(dev.queue_max_sizes(), vec![256]);
    assert_ne!(dev.features() & (1 << VIRTIO_F_VERSION_1), 0);
    assert_eq!(dev.features() & (1 << 30), 0, "the protocol-features bit is not a virtio feature");
    let mut cfg = [0u8; 12];
    dev.read_config(0, &mut cfg);
    assert_eq!(&cfg, CONFIG, "configuration through GET_CONFIG");

    let mem = &ram.memory;
    let mut ring = Ring::new(256, 0x10000);
    let queue = ring.queue_state();
    let kicks = [EventFd::new(libc::EFD_NONBLOCK).unwrap()];
    let calls = [EventFd::new(libc::EFD_NONBLOCK).unwrap()];
    dev.activate(Activation {
        features: 1 << VIRTIO_F_VERSION_1,
        mem,
        queues: vec![(0, queue)],
        kicks: &kicks,
        calls: &calls,
    })
    .unwrap();

    // 300 requests: more than the ring size, so indexes wrap.
    for n in 0..300u32 {
        let text = format!("hello rayos {n}");
        let (inb, outb) = (0x20000, 0x21000);
        mem.write_slice(text.as_bytes(), GuestAddress(inb)).unwrap();
        mem.write_slice(&[0u8; 64], GuestAddress(outb)).unwrap();
        let head = (n % 128) as u16 * 2;
        ring.write_desc(mem, head, inb, text.len() as u32, VIRTQ_DESC_F_NEXT, head + 1);
        ring.write_desc(mem, head + 1, outb, 64, VIRTQ_DESC_F_WRITE, 0);
        ring.publish(mem, head);
        kicks[0].write(1).unwrap();
        // Interrupts may be spurious (the backend may signal on setup): wait
        // until the used index moves, each wait being for an interrupt.
        let t0 = std::time::Instant::now();
        while ring.used_idx(mem) != (n + 1) as u16 {
            assert!(t0.elapsed() < Duration::from_secs(10), "request {n} never completed");
            assert!(wait_eventfd(&calls[0], Duration::from_secs(10)), "no interrupt for request {n}");
        }
        assert_eq!(ring.used_elem(mem, n as u16), (head as u32, text.len() as u32));
        let mut out = vec![0u8; text.len()];
        mem.read_slice(&mut out, GuestAddress(outb)).unwrap();
        assert_eq!(out, text.to_uppercase().as_bytes());
    }
    dev.reset();
    assert!(!dev.broken());
}

#[test]
fn connecting_to_nothing_is_a_clear_error() {
    let ram = GuestRam::new(16 << 20).unwrap();
    let err = VhostUserDevice::connect("x", std::path::Path::new("/nonexistent/be.sock"), 26, vec![8], None, &ram)
        .err()
        .unwrap();
    assert!(err.to_string().contains("cannot connect to vhost-user backend at /nonexistent/be.sock"), "{err}");
}

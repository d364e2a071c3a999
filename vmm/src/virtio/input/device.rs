//! virtio-input on the virtio-pci transport (`InputDeviceModel`): the
//! configuration window, the event queue the device fills with the events
//! the host sends through an [`InputHandle`], and the status queue (LED
//! state from the guest) that is read and dropped. One worker thread per
//! device; events wait in a bounded queue while the guest has no buffers,
//! and the oldest are dropped (whole reports at a time) when it overflows.
//!
//! Reports leave at a device's pace ([`InputDeviceModel::with_pace`]), one
//! report per interval, as a USB device's polling does. Without it a burst
//! (text typed through the control API: hundreds of events at once) fills
//! all 64 of the guest's buffers at once, the guest's evdev client buffer
//! (64 events) overflows before its compositor reads it, and the kernel
//! drops keys (SYN_DROPPED): seen as half-typed lines in weston-terminal.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use virtio_queue::{Queue, QueueT};
use vm_memory::Bytes;
use vmm_sys_util::eventfd::EventFd;

use super::config::{ConfigWindow, InputDevice};
use super::event::{InputEvent, EV_SYN};
use crate::memory::GuestMem;
use crate::virtio::worker::{active_queues, raw, wait_readable_for, ActiveQueue, Worker};
use crate::virtio::{ActivateError, Activation, VirtioDevice, VIRTIO_F_VERSION_1};

/// virtio device type of an input device (5).
pub const VIRTIO_ID_INPUT: u32 = 18;
/// Queue sizes: events, status.
pub const QUEUE_SIZES: [u16; 2] = [64, 64];
/// Events kept while the guest has no buffers (a few seconds of typing).
pub const MAX_PENDING: usize = 4096;

/// The host side's way in: events to deliver to the guest.
#[derive(Clone)]
pub struct InputHandle {
    pending: Arc<Mutex<VecDeque<InputEvent>>>,
    notify: Arc<EventFd>,
}

impl InputHandle {
    /// Queues `events` (whole reports, each ending in SYN_REPORT) for the guest.
    pub fn send(&self, events: &[InputEvent]) {
        let mut q = self.pending.lock().expect("input queue lock");
        q.extend(events.iter().copied());
        // Over the cap: drop the oldest whole reports.
        while q.len() > MAX_PENDING {
            while let Some(e) = q.pop_front() {
                if e.type_ == EV_SYN {
                    break;
                }
            }
        }
        drop(q);
        let _ = self.notify.write(1);
    }

    /// Events waiting for guest buffers.
    pub fn pending(&self) -> usize {
        self.pending.lock().expect("input queue lock").len()
    }
}

/// A virtio-input device behind the virtio-pci transport.
pub struct InputDeviceModel {
    config: ConfigWindow,
    handle: InputHandle,
    worker: Option<Worker>,
    /// Least time between two reports.
    pace: Duration,
}

/// A keyboard's report interval (a USB keyboard polls at 125 Hz).
pub const KEYBOARD_PACE: Duration = Duration::from_millis(8);
/// A pointer's (500 Hz).
pub const POINTER_PACE: Duration = Duration::from_millis(2);

impl InputDeviceModel {
    pub fn new(device: InputDevice) -> std::io::Result<Self> {
        Ok(InputDeviceModel {
            config: ConfigWindow::new(device),
            handle: InputHandle {
                pending: Arc::new(Mutex::new(VecDeque::new())),
                notify: Arc::new(EventFd::new(libc::EFD_NONBLOCK)?),
            },
            worker: None,
            pace: Duration::ZERO,
        })
    }

    /// Sends at most one report per `pace`.
    pub fn with_pace(mut self, pace: Duration) -> Self {
        self.pace = pace;
        self
    }

    pub fn handle(&self) -> InputHandle {
        self.handle.clone()
    }

    fn stop_worker(&mut self) {
        if let Some(w) = self.worker.take() {
            w.stop("virtio-input");
        }
    }
}

impl Drop for InputDeviceModel {
    fn drop(&mut self) {
        self.stop_worker();
    }
}

impl VirtioDevice for InputDeviceModel {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_INPUT
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        QUEUE_SIZES.to_vec()
    }

    fn features(&self) -> u64 {
        1 << VIRTIO_F_VERSION_1
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        self.config.read(offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        self.config.write(offset, data);
    }

    fn activate(&mut self, a: Activation<'_>) -> Result<(), ActivateError> {
        self.stop_worker();
        let queues = active_queues("virtio-input", &a, QUEUE_SIZES.len())?;
        let (mem, handle, pace) = (a.mem.clone(), self.handle.clone(), self.pace);
        self.worker = Some(Worker::spawn("virtio-input", move |stop| serve(&mem, &handle, queues, stop, pace))?);
        Ok(())
    }

    fn reset(&mut self) {
        self.stop_worker();
    }
}

/// The worker: waits for the guest's kicks, the host's events, the next
/// report's time or `stop`.
fn serve(mem: &GuestMem, handle: &InputHandle, mut queues: Vec<Option<ActiveQueue>>, stop: &EventFd, pace: Duration) {
    let mut next = Instant::now();
    // The guest had no buffer for a pending event: wait for its kick.
    let mut starved = false;
    loop {
        let mut fds = vec![raw(stop), raw(&handle.notify)];
        fds.extend(queues.iter().flatten().map(|q| raw(&q.kick)));
        let timeout = (handle.pending() > 0 && !starved).then(|| next.saturating_duration_since(Instant::now()));
        let ready = match wait_readable_for(&fds, timeout) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("virtio-input: poll failed: {e}");
                return;
            }
        };
        if ready[0] {
            return;
        }
        let _ = handle.notify.read();
        for (q, _) in queues.iter().flatten().zip(&ready[2..]).filter(|(_, r)| **r) {
            let _ = q.kick.read();
            starved = false;
        }
        if let Some(q) = queues[0].as_mut() {
            let now = Instant::now();
            if now >= next {
                let max = if pace.is_zero() { usize::MAX } else { 1 };
                let (reports, out_of_buffers) = fill_events(mem, handle, &mut q.queue, &q.call, max);
                starved = out_of_buffers;
                if reports > 0 {
                    next = now + pace;
                }
            }
        }
        if let Some(q) = queues[1].as_mut() {
            drain_status(mem, &mut q.queue, &q.call);
        }
    }
}

/// Moves pending events into the guest's event buffers (8 bytes each),
/// at most `max_reports` whole reports. Returns the reports delivered and
/// whether events were left for want of a buffer.
pub fn fill_events(
    mem: &GuestMem,
    handle: &InputHandle,
    queue: &mut Queue,
    call: &EventFd,
    max_reports: usize,
) -> (usize, bool) {
    let mut used = false;
    let mut reports = 0;
    let mut out_of_buffers = false;
    while reports < max_reports {
        let Some(event) = handle.pending.lock().expect("input queue lock").front().copied() else { break };
        let Some(chain) = queue.pop_descriptor_chain(mem) else {
            out_of_buffers = true;
            break;
        };
        let head = chain.head_index();
        let written = match chain.writable().next() {
            Some(d) if d.len() >= 8 && mem.write_slice(&event.to_bytes(), d.addr()).is_ok() => 8,
            _ => {
                tracing::debug!("virtio-input: event buffer {head} is not an 8-byte writable buffer");
                0
            }
        };
        if written == 8 {
            handle.pending.lock().expect("input queue lock").pop_front();
            if event.type_ == EV_SYN {
                reports += 1;
            }
        }
        if let Err(e) = queue.add_used(mem, head, written) {
            tracing::warn!("virtio-input: used ring: {e}");
        }
        used = true;
    }
    if used && queue.needs_notification(mem).unwrap_or(true) {
        let _ = call.write(1);
    }
    (reports, out_of_buffers)
}

/// Returns the guest's status buffers (LED state) unread.
fn drain_status(mem: &GuestMem, queue: &mut Queue, call: &EventFd) {
    let mut used = false;
    while let Some(chain) = queue.pop_descriptor_chain(mem) {
        if let Err(e) = queue.add_used(mem, chain.head_index(), 0) {
            tracing::warn!("virtio-input: status used ring: {e}");
        }
        used = true;
    }
    if used && queue.needs_notification(mem).unwrap_or(true) {
        let _ = call.write(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::input::event::{TabletMapper, EV_KEY};
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{GuestAddress, GuestMemoryMmap};

    const WRITE: u16 = 2;

    #[test]
    fn events_fill_the_guests_buffers_in_order() {
        let mem: GuestMemoryMmap = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
        let mock = MockSplitQueue::new(&mem, 16);
        let bufs: Vec<RawDescriptor> =
            (0..4u64).map(|i| RawDescriptor::from(SplitDescriptor::new(0x10_0000 + i * 8, 8, WRITE, 0))).collect();
        mock.add_desc_chains(&bufs, 0).unwrap();
        let mut queue: Queue = mock.create_queue().unwrap();
        let dev = InputDeviceModel::new(InputDevice::keyboard()).unwrap();
        let h = dev.handle();
        h.send(&InputEvent::key(30, true).unwrap());
        h.send(&TabletMapper { width: 100, height: 100 }.motion(50.0, 50.0));
        let call = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        assert_eq!(fill_events(&mem, &h, &mut queue, &call, usize::MAX), (1, true), "one whole report, then no buffer");
        assert_eq!(call.read().unwrap(), 1);
        assert_eq!(mock.used().idx().load(), 4, "four buffers filled");
        assert_eq!(h.pending(), 1, "the fifth event waits for a buffer");
        let mut e = [0u8; 8];
        mem.read_slice(&mut e, GuestAddress(0x10_0000)).unwrap();
        assert_eq!(e, InputEvent { type_: EV_KEY, code: 30, value: 1 }.to_bytes());
        mem.read_slice(&mut e, GuestAddress(0x10_0008)).unwrap();
        assert_eq!(e, InputEvent::SYN.to_bytes());
    }

    #[test]
    fn a_paced_fill_delivers_one_report() {
        let mem: GuestMemoryMmap = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
        let mock = MockSplitQueue::new(&mem, 16);
        let bufs: Vec<RawDescriptor> =
            (0..8u64).map(|i| RawDescriptor::from(SplitDescriptor::new(0x10_0000 + i * 8, 8, WRITE, 0))).collect();
        mock.add_desc_chains(&bufs, 0).unwrap();
        let mut queue: Queue = mock.create_queue().unwrap();
        let dev = InputDeviceModel::new(InputDevice::keyboard()).unwrap().with_pace(KEYBOARD_PACE);
        let h = dev.handle();
        for code in [30, 31, 32] {
            h.send(&InputEvent::key(code, true).unwrap());
        }
        let call = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        assert_eq!(fill_events(&mem, &h, &mut queue, &call, 1), (1, false));
        assert_eq!((mock.used().idx().load(), h.pending()), (2, 4), "one report out, two waiting");
        assert_eq!(fill_events(&mem, &h, &mut queue, &call, usize::MAX), (2, false));
        assert_eq!(h.pending(), 0);
    }

    #[test]
    fn an_overflowing_queue_drops_whole_old_reports() {
        let dev = InputDeviceModel::new(InputDevice::keyboard()).unwrap();
        let h = dev.handle();
        for i in 0..(MAX_PENDING as u32) {
            h.send(&InputEvent::key(1 + i % 100, i % 2 == 0).unwrap());
        }
        let q = h.pending.lock().unwrap();
        assert!(q.len() <= MAX_PENDING);
        assert_eq!(q.front().unwrap().type_, EV_KEY, "the queue starts at a report's first event");
        assert_eq!(q.back().copied(), Some(InputEvent::SYN));
    }

    #[test]
    fn config_and_identity() {
        let mut dev = InputDeviceModel::new(InputDevice::tablet()).unwrap();
        assert_eq!((dev.device_type(), dev.queue_max_sizes()), (VIRTIO_ID_INPUT, vec![64, 64]));
        dev.write_config(0, &[1, 0]);
        let mut name = [0u8; 19];
        dev.read_config(8, &mut name);
        assert_eq!(&name, b"RayOS virtio tablet");
    }
}

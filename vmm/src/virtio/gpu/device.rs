//! virtio-gpu on the virtio-pci transport: the device's configuration
//! (`events_read`, `events_clear`, one scanout, no capsets), its two queues
//! (control and cursor), served by one worker thread that reads each
//! request, runs it through the command processor ([`Gpu`]) and writes the
//! response, and the display-change event a resize raises.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use virtio_bindings::virtio_gpu as b;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

use super::commands::Gpu;
use super::protocol::{Header, Response, ResponseType, MAX_SCANOUTS};
use super::scanout::Scanout;
use crate::memory::GuestMem;
use crate::virtio::worker::{active_queues, raw, wait_readable, ActiveQueue, Worker};
use crate::virtio::{ActivateError, Activation, VirtioDevice, VIRTIO_F_VERSION_1};

/// virtio device type of a GPU (5).
pub const VIRTIO_ID_GPU: u32 = 16;
/// Queue sizes: control, cursor.
pub const QUEUE_SIZES: [u16; 2] = [256, 16];
/// Largest request read from one chain (ATTACH_BACKING with the most entries, and some).
pub const MAX_REQUEST: usize = 24 + 8 + super::protocol::MAX_MEM_ENTRIES as usize * 16 + 64;
/// Size of the device configuration.
const CONFIG_SIZE: u64 = 16;

/// A display-size handle for the presenter: `resize` changes what
/// GET_DISPLAY_INFO and GET_EDID answer and tells the guest.
pub struct DisplayHandle<S: Scanout> {
    gpu: Arc<Mutex<Gpu<S>>>,
    events: Arc<AtomicU32>,
    config_irq: Arc<Mutex<Option<EventFd>>>,
}

impl<S: Scanout> Clone for DisplayHandle<S> {
    fn clone(&self) -> Self {
        DisplayHandle { gpu: self.gpu.clone(), events: self.events.clone(), config_irq: self.config_irq.clone() }
    }
}

impl<S: Scanout> DisplayHandle<S> {
    /// The device's figures for the metrics file.
    pub fn metrics(&self) -> rayos_vmm_api::GpuMetrics {
        let g = self.gpu.lock().expect("gpu lock");
        let s = g.stats();
        rayos_vmm_api::GpuMetrics {
            scanout: g.scanout_size(),
            requests: s.requests,
            refused: s.refused,
            transfers: s.transfers,
            transfer_bytes: s.transfer_bytes,
            flushes: s.flushes,
            presenter: g.scanout().metrics(),
        }
    }

    /// The host window is now `width` × `height`: the guest gets the
    /// display event (a configuration interrupt) and asks again.
    pub fn resize(&self, width: u32, height: u32) {
        self.gpu.lock().expect("gpu lock").resize(width, height);
        self.events.fetch_or(b::VIRTIO_GPU_EVENT_DISPLAY, Ordering::AcqRel);
        if let Some(irq) = self.config_irq.lock().expect("irq lock").as_ref() {
            let _ = irq.write(1);
        }
    }
}

/// virtio-gpu (2D) behind the virtio-pci transport.
pub struct GpuDevice<S: Scanout + Send + 'static> {
    gpu: Arc<Mutex<Gpu<S>>>,
    events: Arc<AtomicU32>,
    config_irq: Arc<Mutex<Option<EventFd>>>,
    worker: Option<Worker>,
}

impl<S: Scanout + Send + 'static> GpuDevice<S> {
    pub fn new(gpu: Gpu<S>) -> Self {
        GpuDevice {
            gpu: Arc::new(Mutex::new(gpu)),
            events: Arc::new(AtomicU32::new(0)),
            config_irq: Arc::new(Mutex::new(None)),
            worker: None,
        }
    }

    pub fn display(&self) -> DisplayHandle<S> {
        DisplayHandle { gpu: self.gpu.clone(), events: self.events.clone(), config_irq: self.config_irq.clone() }
    }

    fn stop_worker(&mut self) {
        if let Some(w) = self.worker.take() {
            w.stop("virtio-gpu");
        }
    }
}

impl<S: Scanout + Send + 'static> Drop for GpuDevice<S> {
    fn drop(&mut self) {
        self.stop_worker();
    }
}

impl<S: Scanout + Send + 'static> VirtioDevice for GpuDevice<S> {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_GPU
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        QUEUE_SIZES.to_vec()
    }

    fn features(&self) -> u64 {
        (1 << VIRTIO_F_VERSION_1) | (1 << b::VIRTIO_GPU_F_EDID)
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let words = [self.events.load(Ordering::Acquire), 0, MAX_SCANOUTS, 0];
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        for (i, d) in data.iter_mut().enumerate() {
            *d = offset.checked_add(i as u64).filter(|o| *o < CONFIG_SIZE).map_or(0, |o| bytes[o as usize]);
        }
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // Only events_clear (offset 4, write-to-clear) is writable.
        if offset == 4 && data.len() == 4 {
            let clear = u32::from_le_bytes(data.try_into().expect("4 bytes"));
            self.events.fetch_and(!clear, Ordering::AcqRel);
        }
    }

    fn activate(&mut self, a: Activation<'_>) -> Result<(), ActivateError> {
        self.stop_worker();
        let queues = active_queues("virtio-gpu", &a, QUEUE_SIZES.len())?;
        let (gpu, mem) = (self.gpu.clone(), a.mem.clone());
        self.worker = Some(Worker::spawn("virtio-gpu", move |stop| serve(&gpu, &mem, queues, stop))?);
        Ok(())
    }

    fn reset(&mut self) {
        self.stop_worker();
        self.events.store(0, Ordering::Release);
    }

    fn set_broken_notifier(&mut self, irq: EventFd) {
        *self.config_irq.lock().expect("irq lock") = Some(irq);
    }
}

/// The worker: waits for a kick on any queue (or `stop`) and serves it.
fn serve<S: Scanout>(gpu: &Mutex<Gpu<S>>, mem: &GuestMem, mut queues: Vec<Option<ActiveQueue>>, stop: &EventFd) {
    loop {
        let mut fds = vec![raw(stop)];
        fds.extend(queues.iter().flatten().map(|q| raw(&q.kick)));
        let ready = match wait_readable(&fds) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("virtio-gpu: poll failed: {e}");
                return;
            }
        };
        if ready[0] {
            return;
        }
        for (q, _) in queues.iter_mut().flatten().zip(&ready[1..]).filter(|(_, r)| **r) {
            let _ = q.kick.read();
            serve_queue(gpu, mem, &mut q.queue, &q.call);
        }
    }
}

/// Serves every chain the guest made available on `queue`, then raises
/// its interrupt if the guest wants one.
pub fn serve_queue<S: Scanout>(gpu: &Mutex<Gpu<S>>, mem: &GuestMem, queue: &mut Queue, call: &EventFd) {
    let mut used = false;
    while let Some(chain) = queue.pop_descriptor_chain(mem) {
        let head = chain.head_index();
        let mut request = Vec::new();
        let mut writable: Vec<(GuestAddress, u32)> = Vec::new();
        let mut bad = false;
        for d in chain {
            if d.is_write_only() {
                writable.push((d.addr(), d.len()));
            } else if !writable.is_empty() || request.len() + d.len() as usize > MAX_REQUEST {
                bad = true; // readable after writable, or too long
                break;
            } else {
                let start = request.len();
                request.resize(start + d.len() as usize, 0);
                if mem.read_slice(&mut request[start..], d.addr()).is_err() {
                    bad = true;
                    break;
                }
            }
        }
        let response = if bad {
            tracing::debug!("virtio-gpu: malformed descriptor chain {head}");
            Response::Error(ResponseType::ErrInvalidParameter).encode(&Header::decode(&request).unwrap_or_default())
        } else {
            gpu.lock().expect("gpu lock").process(mem, &request)
        };
        let written = write_response(mem, &writable, &response);
        if let Err(e) = queue.add_used(mem, head, written) {
            tracing::warn!("virtio-gpu: used ring: {e}");
        }
        used = true;
    }
    if used && queue.needs_notification(mem).unwrap_or(true) {
        let _ = call.write(1);
    }
}

/// Writes `response` across the writable descriptors; returns the bytes written.
fn write_response(mem: &GuestMem, writable: &[(GuestAddress, u32)], response: &[u8]) -> u32 {
    let mut done = 0usize;
    for (addr, len) in writable {
        if done == response.len() {
            break;
        }
        let n = (*len as usize).min(response.len() - done);
        if mem.write_slice(&response[done..done + n], *addr).is_err() {
            break;
        }
        done += n;
    }
    done as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::gpu::protocol::encode::request;
    use crate::virtio::gpu::protocol::HDR_SIZE;
    use crate::virtio::gpu::scanout::Recorder;
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::GuestMemoryMmap;

    const NEXT: u16 = 1;
    const WRITE: u16 = 2;

    fn chain(mock: &MockSplitQueue<'_, GuestMemoryMmap>, descs: &[(u64, u32, u16)], at: u16) {
        let raw: Vec<RawDescriptor> = descs
            .iter()
            .enumerate()
            .map(|(i, &(addr, len, flags))| {
                let last = i + 1 == descs.len();
                let flags = if last { flags } else { flags | NEXT };
                RawDescriptor::from(SplitDescriptor::new(addr, len, flags, at + i as u16 + 1))
            })
            .collect();
        mock.add_desc_chains(&raw, at).unwrap();
    }

    #[test]
    fn a_request_chain_gets_its_response_and_an_interrupt() {
        let mem: GuestMemoryMmap = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
        let mock = MockSplitQueue::new(&mem, 16);
        let req = request(b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_GET_DISPLAY_INFO, &[]);
        mem.write_slice(&req, GuestAddress(0x10_0000)).unwrap();
        // The request split over two readable descriptors; the response over two writable ones.
        chain(&mock, &[(0x10_0000, 10, 0), (0x10_000a, 14, 0), (0x20_0000, 100, WRITE), (0x30_0000, 400, WRITE)], 0);
        // A chain whose readable part follows a writable one.
        chain(&mock, &[(0x20_1000, 64, WRITE), (0x10_0000, 24, 0)], 4);
        let mut queue: Queue = mock.create_queue().unwrap();
        let gpu = Mutex::new(Gpu::new(1280, 800, 1 << 20, Recorder::default()));
        let call = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        serve_queue(&gpu, &mem, &mut queue, &call);
        assert_eq!(call.read().unwrap(), 1, "the interrupt was raised");
        let used = mock.used();
        assert_eq!(used.idx().load(), 2);
        let first = used.ring().ref_at(0).unwrap().load();
        assert_eq!(first.len(), (HDR_SIZE + 16 * 24) as u32);
        let mut head = [0u8; HDR_SIZE];
        mem.read_slice(&mut head, GuestAddress(0x20_0000)).unwrap();
        assert_eq!(Header::decode(&head).unwrap().type_, ResponseType::OkDisplayInfo.code());
        // The first scanout's width (response bytes 32..36) is in the first writable descriptor.
        let mut w = [0u8; 4];
        mem.read_slice(&mut w, GuestAddress(0x20_0000 + HDR_SIZE as u64 + 8)).unwrap();
        assert_eq!(u32::from_le_bytes(w), 1280);
        let second = used.ring().ref_at(1).unwrap().load();
        assert_eq!(second.len(), HDR_SIZE as u32);
        mem.read_slice(&mut head, GuestAddress(0x20_1000)).unwrap();
        assert_eq!(Header::decode(&head).unwrap().type_, ResponseType::ErrInvalidParameter.code());
    }

    #[test]
    fn config_reports_one_scanout_and_clears_events() {
        let mut d = GpuDevice::new(Gpu::new(640, 480, 1 << 20, Recorder::default()));
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        d.set_broken_notifier(irq.try_clone().unwrap());
        let mut c = [0u8; 16];
        d.read_config(0, &mut c);
        assert_eq!(c, [0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]);
        d.display().resize(1024, 768);
        assert_eq!(irq.read().unwrap(), 1, "a configuration interrupt");
        d.read_config(0, &mut c[..4]);
        assert_eq!(u32::from_le_bytes(c[..4].try_into().unwrap()), b::VIRTIO_GPU_EVENT_DISPLAY);
        d.write_config(4, &b::VIRTIO_GPU_EVENT_DISPLAY.to_le_bytes());
        d.read_config(0, &mut c[..4]);
        assert_eq!(&c[..4], &[0; 4]);
        let mut past = [0xffu8; 4];
        d.read_config(14, &mut past);
        assert_eq!(past, [0; 4]);
        assert_eq!(d.gpu.lock().unwrap().display_size(), (1024, 768));
    }
}

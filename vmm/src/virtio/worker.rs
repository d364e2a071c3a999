//! What the in-process devices (gpu, input) share: their queues built from
//! the transport's validated state, and one worker thread per device that
//! waits on file descriptors and stops when told.

use std::os::fd::{AsRawFd, RawFd};
use std::thread::JoinHandle;

use virtio_queue::Queue;
use vmm_sys_util::eventfd::EventFd;

use super::transport::pci::queue_from_state;
use super::{ActivateError, Activation};

/// One enabled queue: the ring, its kick (guest → device) and its call
/// (device → guest interrupt).
pub struct ActiveQueue {
    pub queue: Queue,
    pub kick: EventFd,
    pub call: EventFd,
}

fn gone(device: &str, what: &str) -> ActivateError {
    ActivateError::BackendGone(format!("{device} {what}"))
}

/// The activation's queues, by index (`None` where the driver left one
/// disabled); indexes at or past `count` are ignored.
pub fn active_queues(
    device: &str,
    a: &Activation<'_>,
    count: usize,
) -> Result<Vec<Option<ActiveQueue>>, ActivateError> {
    let mut out: Vec<Option<ActiveQueue>> = (0..count).map(|_| None).collect();
    for (index, q) in &a.queues {
        let Some(slot) = out.get_mut(*index) else { continue };
        let kick = a.kicks[*index].try_clone().map_err(|_| gone(device, "eventfd"))?;
        let call = a.calls[*index].try_clone().map_err(|_| gone(device, "eventfd"))?;
        // The transport validated this state before activating us.
        let queue = queue_from_state(q).map_err(|_| ActivateError::RingOutsideRam { queue: *index, gpa: q.desc })?;
        *slot = Some(ActiveQueue { queue, kick, call });
    }
    Ok(out)
}

/// A device's worker thread and the eventfd that stops it.
pub struct Worker {
    stop: EventFd,
    thread: JoinHandle<()>,
}

impl Worker {
    /// Starts `serve` on a thread named `name`; it gets the stop eventfd to
    /// wait on beside its own descriptors.
    pub fn spawn(name: &str, serve: impl FnOnce(&EventFd) + Send + 'static) -> Result<Worker, ActivateError> {
        let stop = EventFd::new(libc::EFD_NONBLOCK).map_err(|_| gone(name, "eventfd"))?;
        let theirs = stop.try_clone().map_err(|_| gone(name, "eventfd"))?;
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || serve(&theirs))
            .map_err(|_| gone(name, "worker thread"))?;
        Ok(Worker { stop, thread })
    }

    /// Tells the worker to stop and waits for it.
    pub fn stop(self, name: &str) {
        let _ = self.stop.write(1);
        if self.thread.join().is_err() {
            tracing::error!("{name}: the queue worker panicked");
        }
    }
}

/// Waits until one of `fds` is readable; returns which are. `Err` when
/// poll(2) fails for a reason other than a signal.
pub fn wait_readable(fds: &[RawFd]) -> std::io::Result<Vec<bool>> {
    wait_readable_for(fds, None)
}

/// As [`wait_readable`], giving up after `timeout` (then none is readable).
pub fn wait_readable_for(fds: &[RawFd], timeout: Option<std::time::Duration>) -> std::io::Result<Vec<bool>> {
    let mut polls: Vec<libc::pollfd> =
        fds.iter().map(|&fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 }).collect();
    let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as i32);
    loop {
        // SAFETY: `polls` is a valid array of initialised pollfds of the length passed.
        let n = unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, ms) };
        if n >= 0 {
            return Ok(polls.iter().map(|p| p.revents != 0).collect());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// The raw descriptor of an eventfd, for [`wait_readable`].
pub fn raw(e: &EventFd) -> RawFd {
    e.as_raw_fd()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_wakes_on_its_fds_and_stops() {
        let ping = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let theirs = ping.try_clone().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let w = Worker::spawn("test-worker", move |stop| loop {
            let ready = wait_readable(&[raw(stop), raw(&theirs)]).unwrap();
            if ready[0] {
                return;
            }
            let _ = theirs.read();
            tx.send(()).unwrap();
        })
        .unwrap();
        ping.write(1).unwrap();
        rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
        w.stop("test-worker");
    }
}

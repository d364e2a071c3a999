//! A memfd mapped into the presenter, shared with the compositor as a
//! wl_shm pool.

use std::ffi::CStr;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd};

/// A shared-memory file and its mapping.
pub struct ShmFile {
    file: File,
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is owned by this value and only reached through &self / &mut self.
unsafe impl Send for ShmFile {}

impl ShmFile {
    pub fn new(len: usize) -> std::io::Result<ShmFile> {
        let name: &CStr = c"rayos-presenter";
        // SAFETY: `name` is a valid C string; the flags are valid.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nobody else.
        let file = unsafe { File::from_raw_fd(fd) };
        file.set_len(len as u64)?;
        // SAFETY: mapping a file we own of `len` bytes, shared, readable and
        // writable; the result is checked below.
        let ptr = unsafe {
            libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0)
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(ShmFile { file, ptr: ptr.cast(), len })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` maps `len` bytes for as long as `self` lives; the
        // compositor may read them concurrently, which can only tear pixels.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for ShmFile {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping made in `new`.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

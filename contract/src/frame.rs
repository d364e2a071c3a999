//! Framing: every message is a little-endian `u32` payload length followed by
//! that many bytes of UTF-8 JSON.
//!
//! A frame is at most [`MAX_FRAME`] bytes of payload. A peer that announces a
//! longer one gets [`FrameError::TooLarge`] and the decoder skips exactly the
//! announced bytes without buffering them, so the stream stays in step and
//! the next frame is read normally: the agent answers with an error and keeps
//! serving. A zero-length frame is malformed (JSON is never empty) but also
//! keeps the stream in step.

use std::io::{Read, Write};

use serde::Serialize;

/// Largest payload either side sends or accepts: 4 MiB holds a catalog of
/// several thousand apps.
pub const MAX_FRAME: usize = 4 << 20;

/// Length prefix size in bytes.
pub const HEADER: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes is over the {MAX_FRAME} byte limit")]
    TooLarge { len: usize },
    #[error("empty frame")]
    Empty,
    #[error("connection closed inside a frame ({got} of {want} bytes)")]
    Truncated { got: usize, want: usize },
    #[error("cannot encode message: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

impl FrameError {
    /// Whether the stream is still in step after this error (the next frame
    /// can be read).
    pub fn recoverable(&self) -> bool {
        matches!(self, FrameError::TooLarge { .. } | FrameError::Empty)
    }
}

/// One message as a frame (header + JSON).
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let mut out = vec![0u8; HEADER];
    serde_json::to_writer(&mut out, msg)?;
    let len = out.len() - HEADER;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge { len });
    }
    out[..HEADER].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(out)
}

/// Write one message as a frame.
pub fn write_frame<W: Write, T: Serialize>(w: &mut W, msg: &T) -> Result<(), FrameError> {
    w.write_all(&encode(msg)?)?;
    w.flush()?;
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Header,
    Body(usize),
    Discard(usize),
}

/// Incremental frame decoder: push bytes as they arrive, pop frames.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    state: State,
}

impl Default for Decoder {
    fn default() -> Self {
        Self { buf: Vec::new(), state: State::Header }
    }
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Append received bytes. Bytes of a frame being skipped are dropped at
    /// once, so an oversize frame never grows the buffer.
    pub fn push(&mut self, mut bytes: &[u8]) {
        if let State::Discard(left) = self.state {
            let n = left.min(bytes.len());
            bytes = &bytes[n..];
            self.state = if left == n { State::Header } else { State::Discard(left - n) };
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame's payload, an error for a frame that is being
    /// (or was) skipped, or `None` when more bytes are needed.
    pub fn next_frame(&mut self) -> Option<Result<Vec<u8>, FrameError>> {
        loop {
            match self.state {
                State::Header => {
                    if self.buf.len() < HEADER {
                        return None;
                    }
                    let len = u32::from_le_bytes(self.buf[..HEADER].try_into().expect("4 bytes")) as usize;
                    self.buf.drain(..HEADER);
                    if len == 0 {
                        return Some(Err(FrameError::Empty));
                    }
                    if len > MAX_FRAME {
                        let n = len.min(self.buf.len());
                        self.buf.drain(..n);
                        self.state = if n == len { State::Header } else { State::Discard(len - n) };
                        return Some(Err(FrameError::TooLarge { len }));
                    }
                    self.state = State::Body(len);
                }
                State::Body(len) => {
                    if self.buf.len() < len {
                        return None;
                    }
                    let payload: Vec<u8> = self.buf.drain(..len).collect();
                    self.state = State::Header;
                    return Some(Ok(payload));
                }
                State::Discard(_) => {
                    // Only reached if bytes arrived while discarding; push()
                    // already dropped them, so wait for more.
                    return None;
                }
            }
        }
    }

    /// Bytes of an unfinished frame: `(got, want)` when the stream ends.
    fn pending(&self) -> Option<(usize, usize)> {
        match self.state {
            State::Header if self.buf.is_empty() => None,
            State::Header => Some((self.buf.len(), HEADER)),
            State::Body(len) => Some((self.buf.len(), len)),
            State::Discard(left) => Some((0, left)),
        }
    }
}

/// Blocking frame reader over any byte stream.
pub struct FrameReader<R> {
    inner: R,
    decoder: Decoder,
    chunk: Box<[u8]>,
}

impl<R: Read> FrameReader<R> {
    pub fn new(inner: R) -> Self {
        Self { inner, decoder: Decoder::new(), chunk: vec![0u8; 64 * 1024].into_boxed_slice() }
    }

    /// The next frame's payload; `Ok(None)` on a clean end of stream between
    /// frames. After a recoverable error the next call reads the next frame.
    pub fn read_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        loop {
            if let Some(frame) = self.decoder.next_frame() {
                return frame.map(Some);
            }
            let n = match self.inner.read(&mut self.chunk) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            if n == 0 {
                return match self.decoder.pending() {
                    None => Ok(None),
                    Some((got, want)) => Err(FrameError::Truncated { got, want }),
                };
            }
            self.decoder.push(&self.chunk[..n]);
        }
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{HostRequest, Request};

    fn header(len: u32) -> [u8; 4] {
        len.to_le_bytes()
    }

    #[test]
    fn encode_then_decode_in_any_chunking() {
        let msgs: Vec<Request> = (0..5).map(|i| Request::new(i, HostRequest::Ping { nonce: i * 7 })).collect();
        let mut stream = Vec::new();
        for m in &msgs {
            stream.extend(encode(m).unwrap());
        }
        for chunk in [1, 2, 3, 7, 64, stream.len()] {
            let mut d = Decoder::new();
            let mut got = Vec::new();
            for c in stream.chunks(chunk) {
                d.push(c);
                while let Some(f) = d.next_frame() {
                    got.push(crate::message::decode_request(&f.unwrap()).unwrap());
                }
            }
            assert_eq!(got, msgs, "chunk size {chunk}");
        }
    }

    #[test]
    fn oversize_frames_are_skipped_and_the_stream_stays_in_step() {
        let big = MAX_FRAME + 10;
        let mut stream = header(big as u32).to_vec();
        stream.extend(std::iter::repeat_n(b'x', big));
        stream.extend(encode(&Request::new(1, HostRequest::Ping { nonce: 1 })).unwrap());
        let mut r = FrameReader::new(std::io::Cursor::new(stream));
        match r.read_frame() {
            Err(e @ FrameError::TooLarge { len }) => {
                assert_eq!(len, big);
                assert!(e.recoverable());
            }
            other => panic!("{other:?}"),
        }
        let next = r.read_frame().unwrap().unwrap();
        assert_eq!(crate::message::decode_request(&next).unwrap().id, 1);
        assert!(r.read_frame().unwrap().is_none());
    }

    #[test]
    fn discarding_never_buffers_the_payload() {
        let mut d = Decoder::new();
        d.push(&header(u32::MAX));
        assert!(matches!(d.next_frame(), Some(Err(FrameError::TooLarge { .. }))));
        for _ in 0..64 {
            d.push(&[0u8; 65536]);
            assert!(d.next_frame().is_none());
            assert!(d.buf.is_empty());
        }
    }

    #[test]
    fn empty_and_truncated_frames() {
        let mut r = FrameReader::new(std::io::Cursor::new(header(0).to_vec()));
        assert!(matches!(r.read_frame(), Err(FrameError::Empty)));
        assert!(r.read_frame().unwrap().is_none());
        let mut s = header(10).to_vec();
        s.extend(b"abc");
        let mut r = FrameReader::new(std::io::Cursor::new(s));
        assert!(matches!(r.read_frame(), Err(FrameError::Truncated { got: 3, want: 10 })));
        let mut r = FrameReader::new(std::io::Cursor::new(vec![1u8, 0]));
        assert!(matches!(r.read_frame(), Err(FrameError::Truncated { got: 2, want: 4 })));
    }

    #[test]
    fn encoding_refuses_oversize_messages() {
        let huge = "a".repeat(MAX_FRAME);
        assert!(matches!(encode(&huge), Err(FrameError::TooLarge { .. })));
    }
}

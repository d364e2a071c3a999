//! Arbitrary bytes on the command channel, in arbitrary chunks: the frame
//! decoder never panics, never returns a frame over the limit, never buffers
//! a skipped frame, and whatever it returns is decoded as a request or
//! refused with a typed error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rayos_contract::{decode_reply, decode_request, Decoder, MAX_FRAME};

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else { return };
    let chunk = (split as usize % 64) + 1;
    let mut d = Decoder::new();
    for c in rest.chunks(chunk) {
        d.push(c);
        while let Some(frame) = d.next_frame() {
            if let Ok(payload) = frame {
                assert!(payload.len() <= MAX_FRAME);
                match decode_request(&payload) {
                    Ok(req) => {
                        // What decodes must encode back to something that decodes the same.
                        let again = serde_json::to_vec(&req).unwrap();
                        assert_eq!(decode_request(&again).unwrap(), req);
                    }
                    Err(e) => assert!(!e.message.is_empty()),
                }
                let _ = decode_reply(&payload);
            }
        }
    }
});

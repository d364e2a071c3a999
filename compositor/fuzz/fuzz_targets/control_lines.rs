//! Arbitrary bytes on the compositor's control socket, in arbitrary chunks:
//! the line splitter never returns a line over the limit, every line gets
//! exactly one response, every response and event encodes as one line of
//! JSON, and the shell's window list stays consistent whatever the requests.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rayos_compositor::{encode_line, handle_line, LineSplitter, ServerMessage, Shell, Size, MAX_LINE};

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else { return };
    let chunk = (split as usize % 97) + 1;
    let mut shell = Shell::new(Size::new(1280, 800)).expect("a valid output size");
    let mut splitter = LineSplitter::new();
    for c in rest.chunks(chunk) {
        for line in splitter.push(c) {
            let handled = match line {
                Ok(line) => {
                    assert!(line.len() <= MAX_LINE);
                    handle_line(&mut shell, &line)
                }
                Err(_) => continue,
            };
            let reply = handled.reply.expect("one response per request");
            for msg in std::iter::once(reply).chain(handled.events.into_iter().map(ServerMessage::Event)) {
                let text = encode_line(&msg);
                assert!(text.ends_with('\n') && text.matches('\n').count() == 1);
                let _: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
            }
            // Every listed window can be looked up again.
            for w in shell.list() {
                assert!(shell.window(w.id).is_some());
            }
        }
    }
});

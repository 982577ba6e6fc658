//! Any text as an SDP offer: a parse error or a value that writes and parses back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_control::sdp::Sdp;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(sdp) = Sdp::parse(text) {
        let written = sdp.to_string();
        let again = Sdp::parse(&written).expect("our own output parses");
        assert_eq!(again, sdp);
    }
});

//! Data channels from a hostile peer: any bytes as a DCEP message (never a panic; what parses
//! writes back to itself), and any bytes, split into packets at 0xff, as SCTP input to a
//! server association, with a timeout between packets (counted or ignored, never a panic
//! out of the association).
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use sluice_control::webrtc::dcep::Dcep;
use sluice_control::webrtc::sctp::{SctpAssociation, SctpRole};

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = Dcep::parse(data) {
        assert_eq!(Dcep::parse(&d.to_bytes()), Ok(d));
    }
    let mut now = Instant::now();
    let mut a = SctpAssociation::new(SctpRole::Server, now, None, Default::default());
    for packet in data.split(|b| *b == 0xff) {
        a.handle_input(now, packet);
        now += Duration::from_millis(250);
        a.handle_timeout(now);
        while a.poll_transmit().is_some() {}
        while a.poll_event().is_some() {}
    }
});

//! Any datagram on any socket of a leg: never a panic, always forwarded or counted.
#![no_main]

use std::net::SocketAddr;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use sluice_dataplane::api::{Command, LegId, MediaKind, Pt, Remote, Rewrite, Ssrc};
use sluice_dataplane::batch::TxBatch;
use sluice_dataplane::forwarder::{Forwarder, SocketRef};

fuzz_target!(|data: &[u8]| {
    let addr: SocketAddr = "127.0.0.1:4000".parse().unwrap();
    let remote = Remote { rtp: Some(addr), rtcp: None, rtcp_mux: data.first() == Some(&0) };
    let mut fwd = Forwarder::new();
    let a = fwd.add_leg(LegId(1), MediaKind::Audio, remote, Arc::default());
    fwd.add_leg(LegId(2), MediaKind::Audio, remote, Arc::default());
    let rewrite = Rewrite { pt_map: vec![(Pt(0), Pt(8))], ssrc: Some(Ssrc(5)) };
    fwd.handle_command(Command::Connect { from: LegId(1), to: LegId(2), rewrite }).unwrap();
    fwd.handle_command(Command::Connect { from: LegId(1), to: LegId(1), rewrite: Rewrite::default() }).unwrap();
    let mut tx = TxBatch::new(4);
    for rtcp in [false, true] {
        fwd.handle_datagram(SocketRef { slot: a, rtcp }, addr, data, &mut tx);
        tx.clear();
    }
});

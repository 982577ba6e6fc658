//! Any datagram on either socket of a source, a listener (SSRC rewritten, NACK and RTX
//! negotiated) and an echo leg: never a panic, and every datagram is forwarded or counted.
#![no_main]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use sluice_dataplane::api::{
    Command, Feedback, LegId, LegStats, MediaKind, Pt, Remote, Rewrite, Ssrc, VideoCodec,
};
use sluice_dataplane::batch::TxBatch;
use sluice_dataplane::forwarder::{Forwarder, SocketRef};

/// Everything a leg can do with a received datagram, summed.
fn accounted(s: &LegStats) -> u64 {
    let s = s.snapshot();
    s.rx_packets + s.rtcp_rx_packets + s.slow_path_packets + s.drops_total()
}

fn rtp(pt: u8, seq: u16, ssrc: u32) -> [u8; 14] {
    let s = seq.to_be_bytes();
    let id = ssrc.to_be_bytes();
    [
        0x80, pt, s[0], s[1], 0, 0, 0, 160, id[0], id[1], id[2], id[3], 0x10, 0x00,
    ]
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, datagram)) = data.split_first() else {
        return;
    };
    let addr: SocketAddr = "127.0.0.1:4000".parse().expect("a literal address");
    let remote = Remote {
        rtp: Some(addr),
        rtcp: None,
        rtcp_mux: flags & 1 != 0,
    };
    let kind = if flags & 2 != 0 {
        MediaKind::Video
    } else {
        MediaKind::Audio
    };
    let t0 = Instant::now();
    let mut fwd = Forwarder::new();
    fwd.set_now(t0);
    let stats: [Arc<LegStats>; 3] = Default::default();
    let (source, listener, echo) = (LegId(1), LegId(2), LegId(3));
    let slots = [source, listener, echo].map(|id| {
        let s = Arc::clone(&stats[id.0 as usize - 1]);
        fwd.add_leg(id, kind, remote, s)
    });
    let mut tx = TxBatch::new(16);
    let run = |fwd: &mut Forwarder, cmd: Command, tx: &mut TxBatch| {
        // Every leg named exists: a command can only fail on an unknown leg.
        fwd.handle_command(cmd, tx).expect("known legs");
        tx.clear();
    };
    if flags & 4 != 0 {
        let feedback = Feedback {
            nack: true,
            rtx_pts: vec![(Pt(96), Pt(97)), (Pt(0), Pt(101))],
            rtx_ssrc: Some(Ssrc(77)),
            ..Feedback::default()
        };
        for leg in [source, listener] {
            let cmd = Command::SetFeedback {
                leg,
                kind,
                feedback: feedback.clone(),
            };
            run(&mut fwd, cmd, &mut tx);
        }
    }
    let rewrite = Rewrite {
        pt_map: vec![(Pt(0), Pt(8)), (Pt(96), Pt(96))],
        ssrc: Some(Ssrc(5)),
    };
    let connect = |from, to, rewrite| Command::Connect {
        from,
        to,
        kind,
        rewrite,
    };
    run(&mut fwd, connect(source, listener, rewrite), &mut tx);
    run(&mut fwd, connect(echo, echo, Rewrite::default()), &mut tx);
    if flags & 8 != 0 {
        run(
            &mut fwd,
            Command::SetBitrate {
                leg: source,
                bps: 64_000,
            },
            &mut tx,
        );
    }
    if flags & 16 != 0 && kind == MediaKind::Video {
        let hold = Command::HoldForKeyframe {
            to: listener,
            codec: VideoCodec::Vp8,
        };
        run(&mut fwd, hold, &mut tx);
    }
    // Media the listener's NACKs can name, from the cache.
    for seq in 1..=4 {
        let mut p = rtp(if kind == MediaKind::Video { 96 } else { 0 }, seq, 0xabc);
        fwd.handle_datagram(
            SocketRef {
                slot: slots[0],
                rtcp: false,
            },
            addr,
            &mut p,
            &mut tx,
        );
        tx.clear();
    }
    let mut buf = datagram.to_vec();
    for (i, &slot) in slots.iter().enumerate() {
        for rtcp in [false, true] {
            let before = accounted(&stats[i]);
            buf.copy_from_slice(datagram);
            fwd.set_now(t0 + Duration::from_millis(20));
            fwd.handle_datagram(SocketRef { slot, rtcp }, addr, &mut buf, &mut tx);
            assert!(
                accounted(&stats[i]) > before,
                "a datagram neither forwarded nor counted"
            );
            tx.clear();
        }
    }
    // Reports on what was received, sender reports included.
    let wallclock = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    // The data plane's own ticks, as a driver runs them: until the walk is done.
    let first = fwd.poll_timeout().expect("time is known");
    while let Some(due) = fwd.poll_timeout().filter(|&t| t <= first) {
        fwd.handle_timeout(due, wallclock + due.duration_since(t0), &mut tx);
        tx.clear();
    }
    while fwd.poll_event().is_some() {}
});

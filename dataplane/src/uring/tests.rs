//! io_uring driver scenarios on real loopback sockets; skipped where io_uring is refused.
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use crate::Dataplane;
use crate::api::{
    Command, Config, DropReason, Event, GroupId, IoMode, LegInfo, LegSpec, MediaKind, Remote,
    Rewrite, Ssrc,
};

/// Skips the test (with a message) where io_uring cannot be used, like io-uring's `require!`.
macro_rules! require_uring {
    () => {
        if let Err(why) = super::probe() {
            eprintln!("skipping: io_uring unavailable: {why}");
            return;
        }
    };
}

const GROUP: GroupId = GroupId(1);
const BURST: usize = 50;

fn start(port_lo: u16, port_hi: u16) -> (Dataplane, crossbeam_channel::Receiver<Event>) {
    let config = Config {
        media_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port_lo,
        port_hi,
        workers: 1,
        io: IoMode::Uring,
        pin: false,
        // Exercise adaptive batching: bursts of datagrams make the worker wait for more.
        batch_wait: std::time::Duration::from_micros(500),
        // Where the kernel allows it, these scenarios run over the steering socket and send
        // through the raw socket.
        steer: true,
        raw_send: true,
    };
    Dataplane::start(config).expect("probe passed, so the uring backend starts")
}

fn open(dp: &Dataplane, remote: Remote) -> LegInfo {
    dp.open_leg(LegSpec::plain(GROUP, MediaKind::Audio, remote))
        .expect("a free port pair")
}

/// Returns once the worker has applied every command sent before: `close_leg` waits for
/// the worker, which handles its queue in order.
fn barrier(dp: &Dataplane) {
    let leg = open(dp, Remote::default());
    dp.close_leg(leg.id).expect("the leg was just opened");
}

fn echo(dp: &Dataplane, leg: &LegInfo) {
    dp.send(Command::Connect {
        from: leg.id,
        to: leg.id,
        kind: MediaKind::Audio,
        rewrite: Rewrite::default(),
    })
    .expect("worker runs");
    barrier(dp);
}

fn peer() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").expect("loopback");
    // A bound on a broken test, not a synchronisation device.
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("valid timeout");
    s
}

fn rtp(seq: u16, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 0x00];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend(std::iter::repeat_n(seq as u8, 160));
    p
}

fn rtp_addr(leg: &LegInfo) -> SocketAddr {
    SocketAddr::new(leg.local_ip, leg.rtp_port)
}

fn recv(s: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = [0u8; 2048];
    loop {
        // A blocking read with a timeout returns EINTR rather than restarting when the thread
        // is notified (io_uring task work can do that): retry.
        match s.recv_from(&mut buf) {
            Ok((n, from)) => return (buf[..n].to_vec(), from),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("the worker forwarded the packet: {e}"),
        }
    }
}

/// Sends `count` packets in bursts and checks every one comes back unchanged, in order.
fn check_echo(peer: &UdpSocket, leg: &LegInfo, first_seq: u16, count: usize) {
    let to = rtp_addr(leg);
    for burst in 0..count.div_ceil(BURST) {
        let seqs: Vec<u16> = (burst * BURST..((burst + 1) * BURST).min(count))
            .map(|i| first_seq + i as u16)
            .collect();
        for &seq in &seqs {
            peer.send_to(&rtp(seq, 0xABCD), to).expect("loopback send");
        }
        for &seq in &seqs {
            let (data, from) = recv(peer);
            assert_eq!(from, to, "echo leaves the leg's RTP port");
            assert_eq!(data, rtp(seq, 0xABCD));
        }
    }
}

/// Sends RTP `seq` to an echo leg and waits for it back, skipping any RTCP the leg returns:
/// once it is back, every datagram sent before it to the same socket was handled. (A command
/// barrier would not say so: the worker may take its commands before a socket's datagrams.)
fn rtp_round_trip(peer: &UdpSocket, leg: &LegInfo, seq: u16) {
    peer.send_to(&rtp(seq, 0xABCD), rtp_addr(leg))
        .expect("loopback send");
    loop {
        let (data, _) = recv(peer);
        if data.get(1).is_some_and(|&pt| (200..=206).contains(&pt)) {
            continue;
        }
        assert_eq!(data, rtp(seq, 0xABCD));
        return;
    }
}

#[test]
fn echo_returns_every_packet_intact() {
    require_uring!();
    let (dp, _events) = start(31000, 31099);
    let leg = open(&dp, Remote::default());
    echo(&dp, &leg);
    let peer = peer();
    check_echo(&peer, &leg, 1, 500);
    let st = leg.stats.snapshot();
    assert_eq!(
        (st.rx_packets, st.tx_packets, st.drops_total()),
        (500, 500, 0)
    );
    dp.shutdown();
}

#[test]
fn garbage_is_counted_and_echo_continues() {
    require_uring!();
    let (dp, _events) = start(31100, 31199);
    let leg = open(&dp, Remote::default());
    echo(&dp, &leg);
    let peer = peer();
    let garbage: [&[u8]; 5] = [&[], &[0xff; 40], &[0x80, 0], &[23; 30], &[0x40; 20]];
    for round in 0..10u16 {
        for junk in garbage {
            peer.send_to(junk, rtp_addr(&leg)).expect("loopback send");
        }
        check_echo(&peer, &leg, round * 10, 10);
    }
    // The echoes came after the garbage on the same socket, so it has all been counted.
    let st = leg.stats.snapshot();
    assert_eq!(st.drops_total(), 50);
    assert_eq!(st.drop_count(DropReason::Malformed), 20);
    assert_eq!(st.rx_packets, 100);
    dp.shutdown();
}

#[test]
fn oversized_datagram_is_counted_as_truncated() {
    require_uring!();
    let (dp, _events) = start(31200, 31299);
    let leg = open(&dp, Remote::default());
    echo(&dp, &leg);
    let peer = peer();
    let mut big = rtp(1, 7);
    big.resize(1800, 0);
    peer.send_to(&big, rtp_addr(&leg)).expect("loopback send");
    check_echo(&peer, &leg, 2, 1);
    assert_eq!(leg.stats.snapshot().drop_count(DropReason::Truncated), 1);
    dp.shutdown();
}

#[test]
fn closed_leg_port_is_free_for_the_next_leg() {
    require_uring!();
    // One RTP/RTCP pair only: every open after the first needs the closed leg's ports.
    let (dp, _events) = start(31300, 31301);
    let peer = peer();
    for round in 0..20u16 {
        let leg = open(&dp, Remote::default());
        assert_eq!(leg.rtp_port, 31300);
        echo_without_barrier(&dp, &leg, &peer, round * 10);
        check_echo(&peer, &leg, round * 10 + 1, 5);
        dp.close_leg(leg.id).expect("open leg");
    }
    dp.shutdown();
}

/// `barrier` needs a spare port pair; with none, rely on ordering: the worker applies a
/// command posted before a datagram was sent before it forwards that datagram.
fn echo_without_barrier(dp: &Dataplane, leg: &LegInfo, peer: &UdpSocket, seq: u16) {
    dp.send(Command::Connect {
        from: leg.id,
        to: leg.id,
        kind: MediaKind::Audio,
        rewrite: Rewrite::default(),
    })
    .expect("worker runs");
    peer.send_to(&rtp(seq, 0xABCD), rtp_addr(leg))
        .expect("loopback send");
    let (data, _) = recv(peer);
    assert_eq!(
        data,
        rtp(seq, 0xABCD),
        "the first packet after Connect is echoed"
    );
}

#[test]
fn fanout_delivers_to_both_listeners_with_their_ssrc() {
    require_uring!();
    let (dp, _events) = start(31400, 31499);
    let (r1, r2) = (peer(), peer());
    let source = open(&dp, Remote::default());
    let mut listeners = Vec::new();
    for (r, ssrc) in [(&r1, 111), (&r2, 222)] {
        let remote = Remote {
            rtp: Some(r.local_addr().expect("bound")),
            rtcp: None,
            rtcp_mux: true,
        };
        let leg = open(&dp, remote);
        let rewrite = Rewrite {
            pt_map: vec![],
            ssrc: Some(Ssrc(ssrc)),
        };
        dp.send(Command::Connect {
            from: source.id,
            to: leg.id,
            kind: MediaKind::Audio,
            rewrite,
        })
        .expect("worker runs");
        listeners.push((r, ssrc, leg));
    }
    barrier(&dp);
    let publisher = peer();
    let mut last_seq = [None::<u16>; 2];
    for burst in 0..4u16 {
        for i in 0..BURST as u16 {
            publisher
                .send_to(&rtp(burst * BURST as u16 + i, 9), rtp_addr(&source))
                .expect("loopback send");
        }
        for (n, (r, ssrc, leg)) in listeners.iter().enumerate() {
            for i in 0..BURST as u16 {
                let (data, from) = recv(r);
                assert_eq!(from, rtp_addr(leg), "sent from the listener's own port");
                assert_eq!(
                    u32::from_be_bytes(data[8..12].try_into().expect("4 bytes")),
                    *ssrc
                );
                assert_eq!(
                    &data[12..],
                    &rtp(burst * BURST as u16 + i, 9)[12..],
                    "payload intact"
                );
                let seq = u16::from_be_bytes([data[2], data[3]]);
                if let Some(prev) = last_seq[n] {
                    assert_eq!(seq, prev.wrapping_add(1), "contiguous sequence numbers");
                }
                last_seq[n] = Some(seq);
            }
        }
    }
    assert_eq!(source.stats.snapshot().rx_packets, 200);
    for (_, _, leg) in &listeners {
        assert_eq!(leg.stats.snapshot().tx_packets, 200);
    }
    dp.shutdown();
}

/// Kernel 6.0 added destinations to IORING_OP_SEND; the driver uses them where the probe
/// says so (and sendmsg otherwise, which the other tests here exercise on older kernels).
#[test]
fn send_with_destination_is_detected_on_kernels_that_have_it() {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release.trim().split(['.', '-']);
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let mut ring = super::new_ring(8, 16).expect("io_uring is available where these tests run");
    let found = super::probe_send_to(&mut ring);
    if major >= 6 {
        assert!(
            found,
            "kernel {release} takes a destination on IORING_OP_SEND"
        );
    }
}

/// The send path writes an IPv6 destination too (sockaddr_in6, whichever send opcode the
/// probe chose): an echo leg on ::1 returns a packet to an IPv6 peer unchanged.
#[test]
fn echo_over_ipv6_loopback() {
    require_uring!();
    let Ok(peer) = UdpSocket::bind("[::1]:0") else {
        eprintln!("skipping: no IPv6 loopback here");
        return;
    };
    peer.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("valid timeout");
    let config = config_on(
        IoMode::Uring,
        IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        31500,
    );
    let (dp, _events) = Dataplane::start(config).expect("the uring backend starts");
    assert_eq!(dp.steered_datagrams(), None, "steering was not asked for");
    let leg = open(&dp, Remote::default());
    echo(&dp, &leg);
    let packet = rtp(7, 0x0bad_cafe);
    peer.send_to(&packet, rtp_addr(&leg))
        .expect("send to the leg");
    let (got, from) = recv(&peer);
    assert_eq!(got, packet);
    assert_eq!(from, rtp_addr(&leg));
}

/// A peer socket on `ip`'s loopback, or `None` (with a message) where there is none.
fn peer_on(ip: IpAddr) -> Option<UdpSocket> {
    let Ok(peer) = UdpSocket::bind(SocketAddr::new(ip, 0)) else {
        eprintln!("skipping: no loopback for {ip}");
        return None;
    };
    peer.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("valid timeout");
    Some(peer)
}

/// One worker on `io`, media on `ip`, 100 ports from `port_lo`, no batching, no steering.
fn config_on(io: IoMode, ip: IpAddr, port_lo: u16) -> Config {
    Config {
        media_ip: ip,
        port_lo,
        port_hi: port_lo + 99,
        workers: 1,
        io,
        pin: false,
        batch_wait: Duration::ZERO,
        steer: false,
        raw_send: false,
    }
}

/// A burst of one stream: runs of equal-sized datagrams to one destination leave as UDP GSO
/// sends (a shorter one may end a run; a larger one, or one over the GSO size limit, starts
/// a new send). The peer must get exactly the datagrams it sent, in order, on either backend
/// and address family.
fn mixed_burst_comes_back_datagram_by_datagram(io: IoMode, ip: IpAddr, port_lo: u16) {
    let Some(peer) = peer_on(ip) else { return };
    let config = Config {
        // Long enough that the burst is handled in a few rounds, so runs form.
        batch_wait: Duration::from_millis(2),
        ..config_on(io, ip, port_lo)
    };
    let (dp, _events) = Dataplane::start(config).expect("the backend starts");
    let leg = open(&dp, Remote::default());
    echo(&dp, &leg);
    let sizes = [
        (40, 160),
        (1, 100),
        (20, 160),
        (3, 1300),
        (1, 20),
        (10, 160),
        (5, 1200),
    ];
    let mut sent = Vec::new();
    let mut seq = 1u16;
    for (count, payload) in sizes {
        for _ in 0..count {
            let mut p = rtp(seq, 0x6501);
            p.resize(12 + payload, seq as u8);
            peer.send_to(&p, rtp_addr(&leg)).expect("send to the leg");
            sent.push(p);
            seq += 1;
        }
    }
    for (i, want) in sent.iter().enumerate() {
        let (got, from) = recv(&peer);
        assert_eq!(from, rtp_addr(&leg));
        assert_eq!(
            got.len(),
            want.len(),
            "datagram {i}: one datagram, its own size"
        );
        assert_eq!(&got, want, "datagram {i} intact and in order");
    }
    let stats = leg.stats.snapshot();
    assert_eq!(stats.tx_packets, sent.len() as u64);
    assert_eq!(
        stats.drops.iter().sum::<u64>(),
        0,
        "nothing dropped: {stats:?}"
    );
}

#[test]
fn mixed_burst_over_uring() {
    require_uring!();
    mixed_burst_comes_back_datagram_by_datagram(
        IoMode::Uring,
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        31600,
    );
}

#[test]
fn mixed_burst_over_uring_ipv6() {
    require_uring!();
    mixed_burst_comes_back_datagram_by_datagram(
        IoMode::Uring,
        IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        31700,
    );
}

/// The same burst through the recvmmsg/sendmmsg backend (its GSO grouping is its own code).
#[test]
fn mixed_burst_over_mmsg() {
    mixed_burst_comes_back_datagram_by_datagram(
        IoMode::Mmsg,
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        31800,
    );
}

#[test]
fn udp_gso_is_detected() {
    // UDP_SEGMENT is in every kernel since 4.18; without it, sends go one by one.
    assert!(crate::sys::udp_gso_supported());
}

/// RFC 5761: a leg whose peer multiplexes RTCP holds only its RTP socket. Opened for a
/// muxing peer, port + 1 is never bound; opened for an offer, it is bound until the answer
/// says the peer muxes. Either way the leg closes cleanly (`close_leg` returns).
fn muxed_leg_holds_one_socket(io: IoMode, port_lo: u16) {
    let config = config_on(io, IpAddr::V4(Ipv4Addr::LOCALHOST), port_lo);
    let (dp, _events) = Dataplane::start(config).expect("the backend starts");
    let rtcp_port_free = |leg: &LegInfo| UdpSocket::bind(("127.0.0.1", leg.rtcp_port)).is_ok();
    let muxed = Remote {
        rtcp_mux: true,
        ..Remote::default()
    };
    let leg = open(&dp, muxed);
    assert!(rtcp_port_free(&leg), "a muxed leg leaves port + 1 unbound");
    echo(&dp, &leg);
    let peer = peer();
    check_echo(&peer, &leg, 1, 60);
    // RTCP arrives on the RTP port and is counted as RTCP.
    let rr = [0x80, 201, 0, 1, 0, 0, 0, 9];
    peer.send_to(&rr, rtp_addr(&leg)).expect("send RTCP");
    rtp_round_trip(&peer, &leg, 61);
    assert_eq!(leg.stats.snapshot().rtcp_rx_packets, 1);
    dp.close_leg(leg.id)
        .expect("the leg closes with one socket");

    let offered = open(&dp, Remote::default());
    assert!(
        !rtcp_port_free(&offered),
        "until the answer, RTCP has its own port"
    );
    dp.send(Command::SetRemote {
        leg: offered.id,
        remote: muxed,
    })
    .expect("worker runs");
    barrier(&dp);
    assert!(
        rtcp_port_free(&offered),
        "the answer muxes: the RTCP socket is closed"
    );
    echo(&dp, &offered);
    // A fresh peer: the first may still get RTCP the echo leg sent back.
    check_echo(&self::peer(), &offered, 100, 5);
    dp.close_leg(offered.id)
        .expect("the leg closes after losing its RTCP socket");
    dp.shutdown();
}

#[test]
fn muxed_leg_holds_one_socket_over_uring() {
    require_uring!();
    muxed_leg_holds_one_socket(IoMode::Uring, 31900);
}

#[test]
fn muxed_leg_holds_one_socket_over_mmsg() {
    muxed_leg_holds_one_socket(IoMode::Mmsg, 32000);
}

/// Port steering: every datagram for a leg, RTP and RTCP, reaches it through the worker's one
/// steering socket, comes back from the leg's own port, and once the leg is closed its port
/// belongs to whoever binds it next (nothing is steered away from them).
fn steered_legs_echo_and_release_their_ports(io: IoMode, ip: IpAddr, port_lo: u16) {
    let Some(peer) = peer_on(ip) else { return };
    let config = Config {
        steer: true,
        ..config_on(io, ip, port_lo)
    };
    let (dp, _events) = Dataplane::start(config).expect("the backend starts");
    if dp.steered_datagrams().is_none() {
        eprintln!("skipping: sk_lookup steering refused here (needs CAP_NET_ADMIN + CAP_BPF)");
        return;
    }
    // Not muxed: the leg has an RTCP socket, and port + 1 is steered too.
    let leg = open(&dp, Remote::default());
    echo(&dp, &leg);
    check_echo(&peer, &leg, 1, 120);
    assert_eq!(
        dp.steered_datagrams(),
        Some(120),
        "every datagram came steered"
    );
    let rr = [0x80, 201, 0, 1, 0, 0, 0, 9];
    peer.send_to(&rr, SocketAddr::new(ip, leg.rtcp_port))
        .expect("send RTCP");
    // The RR and then one more RTP packet reach the same steering socket in that order.
    rtp_round_trip(&peer, &leg, 121);
    assert_eq!(leg.stats.snapshot().rtcp_rx_packets, 1);
    assert_eq!(dp.steered_datagrams(), Some(122));
    assert_eq!(leg.stats.snapshot().rx_packets, 121);

    dp.close_leg(leg.id).expect("open leg");
    for port in [leg.rtp_port, leg.rtcp_port] {
        let next = UdpSocket::bind(SocketAddr::new(ip, port)).expect("the port is free");
        next.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("valid timeout");
        peer.send_to(b"mine", SocketAddr::new(ip, port))
            .expect("send to the new owner");
        let mut buf = [0u8; 8];
        assert_eq!(next.recv(&mut buf).expect("not steered away"), 4);
    }
    assert_eq!(dp.steered_datagrams(), Some(122));
    dp.shutdown();
}

#[test]
fn steered_legs_echo_and_release_their_ports_over_uring() {
    require_uring!();
    steered_legs_echo_and_release_their_ports(
        IoMode::Uring,
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        32000,
    );
}

#[test]
fn steered_legs_echo_and_release_their_ports_over_uring_ipv6() {
    require_uring!();
    let ip = IpAddr::V6(std::net::Ipv6Addr::LOCALHOST);
    steered_legs_echo_and_release_their_ports(IoMode::Uring, ip, 32100);
}

#[test]
fn steered_legs_echo_and_release_their_ports_over_mmsg() {
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    steered_legs_echo_and_release_their_ports(IoMode::Mmsg, ip, 32200);
}

#[test]
fn steered_legs_echo_and_release_their_ports_over_mmsg_ipv6() {
    let ip = IpAddr::V6(std::net::Ipv6Addr::LOCALHOST);
    steered_legs_echo_and_release_their_ports(IoMode::Mmsg, ip, 32300);
}

/// Raw sending: a leg's echoes leave through the worker's raw socket yet reach the peer from
/// the leg's own address and port, checksummed (the kernel drops a bad one), in order, over
/// IPv4 and IPv6; what the raw socket must not carry (a GSO run, a datagram past
/// `RAW_MAX_PAYLOAD`) leaves from the leg's socket as before; nothing is counted lost.
fn raw_sent_echoes_come_from_the_leg(io: IoMode, ip: IpAddr, port_lo: u16) {
    let Some(peer) = peer_on(ip) else { return };
    let config = Config {
        raw_send: true,
        ..config_on(io, ip, port_lo)
    };
    let (dp, _events) = Dataplane::start(config).expect("the backend starts");
    let Some(before) = dp.raw_sent_datagrams() else {
        eprintln!("skipping: no raw socket here (needs CAP_NET_RAW)");
        return;
    };
    assert_eq!(before, 0);
    let leg = open(&dp, Remote::default());
    echo(&dp, &leg);
    // One at a time, each alone in its round: a single datagram, which goes raw.
    for seq in 1..=20 {
        check_echo(&peer, &leg, seq, 1);
    }
    assert_eq!(dp.raw_sent_datagrams(), Some(20), "each went raw");
    // Bursts: runs for one destination leave as GSO sends from the leg's socket, the rest raw.
    check_echo(&peer, &leg, 21, 100);
    let raw = dp.raw_sent_datagrams().expect("still on");
    assert!((20..=120).contains(&raw), "{raw}");
    let mut big = rtp(500, 0xABCD);
    big.resize(crate::rawsend::RAW_MAX_PAYLOAD + 1, 0x5a);
    peer.send_to(&big, rtp_addr(&leg))
        .expect("send a large datagram");
    let (got, from) = recv(&peer);
    assert_eq!((got, from), (big, rtp_addr(&leg)));
    assert_eq!(
        dp.raw_sent_datagrams(),
        Some(raw),
        "the leg's socket sent it"
    );
    let st = leg.stats.snapshot();
    assert_eq!((st.tx_packets, st.drops_total()), (121, 0));
    dp.shutdown();
}

#[test]
fn raw_sent_echoes_come_from_the_leg_over_uring() {
    require_uring!();
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    raw_sent_echoes_come_from_the_leg(IoMode::Uring, ip, 33000);
}

#[test]
fn raw_sent_echoes_come_from_the_leg_over_uring_ipv6() {
    require_uring!();
    let ip = IpAddr::V6(std::net::Ipv6Addr::LOCALHOST);
    raw_sent_echoes_come_from_the_leg(IoMode::Uring, ip, 33100);
}

#[test]
fn raw_sent_echoes_come_from_the_leg_over_mmsg() {
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    raw_sent_echoes_come_from_the_leg(IoMode::Mmsg, ip, 33200);
}

#[test]
fn raw_sent_echoes_come_from_the_leg_over_mmsg_ipv6() {
    let ip = IpAddr::V6(std::net::Ipv6Addr::LOCALHOST);
    raw_sent_echoes_come_from_the_leg(IoMode::Mmsg, ip, 33300);
}

/// Commands never wait for the batching bound. With a bound of an hour, a burst of datagrams
/// leaves the worker waiting (boundedly) for more; a command posted then (open and close a
/// leg) must end that wait at once, and a round holding a command must not start one: the
/// closing is confirmed (`Event::LegClosed`) long before the bound. Datagrams themselves may
/// wait for the bound here, so nothing is read back.
#[test]
fn commands_do_not_wait_for_the_batching_bound() {
    require_uring!();
    let mut config = config_on(IoMode::Uring, IpAddr::V4(Ipv4Addr::LOCALHOST), 33400);
    config.batch_wait = Duration::from_secs(3600);
    let (dp, events) = Dataplane::start(config).expect("probe passed");
    let leg = open(&dp, Remote::default());
    echo(&dp, &leg);
    let peer = peer();
    for round in 0..5u16 {
        for seq in 0..10 {
            peer.send_to(&rtp(round * 100 + seq, 0xABCD), rtp_addr(&leg))
                .expect("loopback send");
        }
        let other = open(&dp, Remote::default());
        dp.start_close(other.id).expect("just opened");
        // A bound on a broken test, far below the batching bound.
        let closed = loop {
            match events.recv_timeout(Duration::from_secs(60)) {
                Ok(Event::LegClosed { leg }) if leg == other.id => break true,
                Ok(_) => continue,
                Err(_) => break false,
            }
        };
        assert!(
            closed,
            "round {round}: the close waited for the batching bound"
        );
    }
    dp.shutdown();
}

//! Two associations wired back to back in memory, with simulated time.

use super::*;

use std::time::Duration;

struct Pair {
    client: SctpAssociation,
    server: SctpAssociation,
    now: Instant,
    /// Largest packet seen either way.
    largest: usize,
    /// Drop every packet from the client while set (loss simulation).
    drop_client: bool,
}

impl Pair {
    fn new() -> Pair {
        let now = Instant::now();
        Pair {
            client: SctpAssociation::new(SctpRole::Client, now, None),
            server: SctpAssociation::new(SctpRole::Server, now, None),
            now,
            largest: 0,
            drop_client: false,
        }
    }

    /// Moves packets both ways until both sides are quiet.
    fn exchange(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            while let Some(p) = self.client.poll_transmit() {
                self.largest = self.largest.max(p.len());
                moved = true;
                if !self.drop_client {
                    self.server.handle_input(self.now, &p);
                }
            }
            while let Some(p) = self.server.poll_transmit() {
                self.largest = self.largest.max(p.len());
                moved = true;
                self.client.handle_input(self.now, &p);
            }
            if !moved {
                return;
            }
        }
        panic!("packets kept flowing");
    }

    /// Advances simulated time to the earliest timer and fires it.
    fn advance(&mut self) {
        let next = [self.client.poll_timeout(), self.server.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        if let Some(t) = next {
            self.now = self.now.max(t);
        } else {
            self.now += Duration::from_millis(10);
        }
        self.client.handle_timeout(self.now);
        self.server.handle_timeout(self.now);
        self.exchange();
    }

    fn connected(mut self) -> Pair {
        self.exchange();
        for _ in 0..20 {
            if self.client.is_connected() && self.server.is_connected() {
                return self;
            }
            self.advance();
        }
        panic!("no association: {:?} {:?}", self.client, self.server);
    }
}

fn events(a: &mut SctpAssociation) -> Vec<SctpEvent> {
    std::iter::from_fn(|| a.poll_event()).collect()
}

fn messages(events: &[SctpEvent]) -> Vec<(u16, MessageKind, Vec<u8>)> {
    events
        .iter()
        .filter_map(|e| match e {
            SctpEvent::Message { sid, kind, data } => Some((*sid, *kind, data.clone())),
            _ => None,
        })
        .collect()
}

/// The server side of a pair with channel 1 opened by the client.
fn with_channel(spec: ChannelSpec) -> Pair {
    let mut p = Pair::new().connected();
    events(&mut p.client);
    events(&mut p.server);
    p.client
        .open_channel(p.now, 1, spec.clone())
        .expect("open channel");
    p.exchange();
    assert_eq!(
        events(&mut p.server),
        [SctpEvent::ChannelOpen {
            sid: 1,
            spec: spec.clone()
        }]
    );
    assert_eq!(
        events(&mut p.client),
        [SctpEvent::ChannelOpen { sid: 1, spec }]
    );
    p
}

#[test]
fn init_from_the_peer_makes_us_the_server_and_connects() {
    let mut p = Pair::new().connected();
    assert_eq!(events(&mut p.server), [SctpEvent::Connected]);
    assert_eq!(events(&mut p.client), [SctpEvent::Connected]);
    assert_eq!(p.server.role(), SctpRole::Server);
}

#[test]
fn a_peer_channel_is_acknowledged_and_messages_keep_kind_and_bytes() {
    let mut p = with_channel(ChannelSpec::reliable("chat"));
    let big: Vec<u8> = (0..60 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    let sent = [
        (MessageKind::Text, "héllo".as_bytes().to_vec()),
        (MessageKind::Binary, vec![0, 255, 1, 254]),
        (MessageKind::Text, Vec::new()),
        (MessageKind::Binary, Vec::new()),
        (MessageKind::Binary, big),
    ];
    for (kind, data) in &sent {
        p.client.send(p.now, 1, *kind, data).expect("send");
    }
    for _ in 0..50 {
        p.exchange();
        if p.server.stats().messages_in == sent.len() as u64 {
            break;
        }
        p.advance();
    }
    let got = messages(&events(&mut p.server));
    let want: Vec<_> = sent.iter().map(|(k, d)| (1, *k, d.clone())).collect();
    assert_eq!(got, want);
    assert!(
        p.largest <= MAX_SCTP_PACKET,
        "packet of {} bytes",
        p.largest
    );
    // And back: the server sends on the peer's channel.
    p.server
        .send(p.now, 1, MessageKind::Text, b"back")
        .expect("send back");
    p.exchange();
    assert_eq!(
        messages(&events(&mut p.client)),
        [(1, MessageKind::Text, b"back".to_vec())]
    );
}

#[test]
fn unordered_partially_reliable_channels_open_with_their_settings() {
    let spec = ChannelSpec {
        label: "state".into(),
        protocol: "v1".into(),
        ordered: false,
        reliability: Reliability::MaxRetransmits(0),
        priority: 256,
    };
    let p = with_channel(spec.clone());
    assert_eq!(p.server.channels().collect::<Vec<_>>(), [(1, &spec)]);
}

#[test]
fn lost_packets_are_retransmitted() {
    let mut p = with_channel(ChannelSpec::reliable("chat"));
    p.drop_client = true;
    p.client
        .send(p.now, 1, MessageKind::Text, b"again")
        .expect("send");
    p.exchange();
    assert!(messages(&events(&mut p.server)).is_empty());
    p.drop_client = false;
    for _ in 0..20 {
        p.advance();
        if p.server.stats().messages_in == 1 {
            break;
        }
    }
    assert_eq!(
        messages(&events(&mut p.server)),
        [(1, MessageKind::Text, b"again".to_vec())]
    );
}

#[test]
fn sending_on_unknown_channels_or_too_large_is_refused() {
    let mut p = with_channel(ChannelSpec::reliable("chat"));
    assert_eq!(
        p.server.send(p.now, 3, MessageKind::Text, b"x"),
        Err(SendError::NoChannel(3))
    );
    let big = vec![0; DEFAULT_REMOTE_MAX_MESSAGE_SIZE as usize + 1];
    assert!(matches!(
        p.server.send(p.now, 1, MessageKind::Binary, &big),
        Err(SendError::TooLarge { .. })
    ));
}

/// A peer that acknowledges nothing: messages are refused once 256 KiB wait, none panics,
/// and the queue drains once the peer listens again.
#[test]
fn a_silent_peer_fills_the_send_buffer_then_refuses() {
    let mut p = with_channel(ChannelSpec::reliable("chat"));
    let msg = vec![7u8; 16 * 1024];
    let mut sent = 0;
    while p.server.send(p.now, 1, MessageKind::Binary, &msg).is_ok() {
        sent += 1;
        assert!(sent <= MAX_BUFFERED / msg.len(), "never refused");
        // Packets vanish: the client hears nothing.
        while p.server.poll_transmit().is_some() {}
    }
    assert!(matches!(
        p.server.send(p.now, 1, MessageKind::Binary, &msg),
        Err(SendError::Full(_))
    ));
    assert!(sent >= MAX_BUFFERED / msg.len() - 1);
    for _ in 0..200 {
        p.advance();
        if p.client.stats().messages_in == sent as u64 {
            break;
        }
    }
    assert_eq!(p.client.stats().messages_in, sent as u64, "retransmitted");
    p.server
        .send(p.now, 1, MessageKind::Binary, &msg)
        .expect("room again");
}

#[test]
fn garbage_and_bad_dcep_are_counted_and_the_association_survives() {
    let mut p = with_channel(ChannelSpec::reliable("chat"));
    // Not SCTP at all, and an SCTP-looking header with a bad checksum.
    p.server.handle_input(p.now, b"garbage");
    p.server
        .handle_input(p.now, &[0x13, 0x88, 0x13, 0x88, 1, 2, 3, 4, 0, 0, 0, 0]);
    // A second OPEN on a channel in use, and a stray ACK on another stream.
    let assoc = p.client.assoc.as_mut().expect("assoc");
    let mut s = assoc.stream(1).expect("stream 1");
    s.write_with_ppi(
        &Dcep::Open(ChannelSpec::reliable("again")).to_bytes(),
        Ppid::Dcep,
    )
    .expect("write");
    let mut s = assoc.open_stream(5, Ppid::Unknown).expect("stream 5");
    s.write_with_ppi(&[0x02], Ppid::Dcep).expect("write");
    s.write_with_ppi(&[0x09, 1, 2], Ppid::Dcep).expect("write");
    s.write_with_ppi(b"no channel", Ppid::String)
        .expect("write");
    let now = p.now;
    p.client.drive(now);
    p.exchange();
    let stats = p.server.stats();
    assert_eq!((stats.bad_dcep, stats.no_channel), (3, 1), "{stats:?}");
    assert!(p.server.is_connected());
    p.client
        .send(p.now, 1, MessageKind::Text, b"still here")
        .expect("send");
    p.exchange();
    assert_eq!(
        messages(&events(&mut p.server)),
        [(1, MessageKind::Text, b"still here".to_vec())]
    );
}

#[test]
fn a_repeated_init_does_not_replace_the_association() {
    let now = Instant::now();
    let mut client = SctpAssociation::new(SctpRole::Client, now, None);
    let mut server = SctpAssociation::new(SctpRole::Server, now, None);
    let init = client.poll_transmit().expect("INIT");
    server.handle_input(now, &init);
    let first = server.poll_transmit().expect("INIT ACK");
    server.handle_input(now, &init);
    // The association is the same: the COOKIE ECHO for the first INIT ACK is accepted.
    client.handle_input(now, &first);
    let mut p = Pair {
        client,
        server,
        now,
        largest: 0,
        drop_client: false,
    }
    .connected();
    assert!(events(&mut p.server).contains(&SctpEvent::Connected));
}

#[test]
fn channels_beyond_the_limit_are_refused() {
    let mut p = Pair::new().connected();
    for i in 0..=MAX_CHANNELS as u16 {
        p.client
            .open_channel(p.now, 2 * i, ChannelSpec::reliable(&format!("c{i}")))
            .ok();
    }
    p.exchange();
    assert_eq!(p.server.channels().count(), MAX_CHANNELS);
    assert_eq!(
        p.server.stats().refused_channels,
        0,
        "our own open is refused locally"
    );
    // The peer's OPEN beyond the limit: written raw, as a peer with a higher limit would.
    let assoc = p.client.assoc.as_mut().expect("assoc");
    let mut s = assoc.open_stream(1001, Ppid::Unknown).expect("stream");
    s.write_with_ppi(
        &Dcep::Open(ChannelSpec::reliable("over")).to_bytes(),
        Ppid::Dcep,
    )
    .expect("write");
    let now = p.now;
    p.client.drive(now);
    p.exchange();
    assert_eq!(p.server.stats().refused_channels, 1);
    assert_eq!(p.server.channels().count(), MAX_CHANNELS);
    assert!(p.server.is_connected());
}

/// Both sides send INIT (a peer that takes its SCTP role from ICE while we are the DTLS
/// client). Our client ignores the peer's INIT (sctp-proto would panic on it) and relies on
/// the peer answering ours, as RFC 9260 §5.2.1 asks; here the peer is sctp-proto too, which
/// does not, so nothing connects — but nothing panics and the INITs are counted.
#[test]
fn init_collision_does_not_panic() {
    let now = Instant::now();
    let mut p = Pair {
        client: SctpAssociation::new(SctpRole::Client, now, None),
        server: SctpAssociation::new(SctpRole::Client, now, None),
        now,
        largest: 0,
        drop_client: false,
    };
    p.exchange();
    p.advance();
    assert!(p.client.stats().ignored_inits >= 1);
    assert!(p.server.stats().ignored_inits >= 1);
    assert!(!p.client.is_connected());
}

/// CRC32c (RFC 9260 Appendix A), so that corrupted packets get past the checksum and reach
/// the chunk parsers.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn with_checksum(mut p: Vec<u8>) -> Vec<u8> {
    if p.len() >= 12 {
        p[8..12].fill(0);
        let c = crc32c(&p);
        p[8..12].copy_from_slice(&c.to_le_bytes());
    }
    p
}

/// Thousands of corrupted (but checksummed) packets from a connected peer: no panic leaves
/// the association; a panic inside sctp-proto would only lose this association.
#[test]
fn corrupted_packets_never_panic() {
    let mut seed = 0x5c7e_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    // Real packets to mutate: a channel open and some messages.
    let mut p = Pair::new();
    let mut corpus = Vec::new();
    for _ in 0..5 {
        while let Some(pk) = p.client.poll_transmit() {
            corpus.push(pk.clone());
            p.server.handle_input(p.now, &pk);
        }
        while let Some(pk) = p.server.poll_transmit() {
            p.client.handle_input(p.now, &pk);
        }
    }
    p.client
        .open_channel(p.now, 0, ChannelSpec::reliable("x"))
        .expect("open");
    for i in 0..5u8 {
        p.client
            .send(p.now, 0, MessageKind::Binary, &vec![i; 2000])
            .expect("send");
    }
    while let Some(pk) = p.client.poll_transmit() {
        corpus.push(pk);
    }
    assert!(corpus.len() > 3);
    let mut lost = 0;
    for round in 0..4000 {
        let mut pk = corpus[next() as usize % corpus.len()].clone();
        for _ in 0..1 + next() % 4 {
            let at = 12 + next() as usize % (pk.len() - 12).max(1);
            if at < pk.len() {
                pk[at] = next() as u8;
            }
        }
        if round % 7 == 0 {
            pk.truncate(12 + next() as usize % pk.len().max(13));
        }
        p.server.handle_input(p.now, &with_checksum(pk));
        if round % 100 == 0 {
            p.now += Duration::from_millis(300);
            p.server.handle_timeout(p.now);
        }
        while p.server.poll_transmit().is_some() {}
        if events(&mut p.server)
            .iter()
            .any(|e| matches!(e, SctpEvent::Lost(r) if r.contains("panicked")))
        {
            lost += 1;
            p = Pair::new().connected();
        }
    }
    eprintln!("associations lost to an sctp-proto panic: {lost}");
}

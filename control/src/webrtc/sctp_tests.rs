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
        Pair::with_server_limits(DataLimits::default())
    }

    /// A pair whose server side has `limits`; the client's are the defaults, except that it
    /// sends up to 1 MiB (a peer that ignores our `a=max-message-size`).
    fn with_server_limits(limits: DataLimits) -> Pair {
        let now = Instant::now();
        Pair {
            client: SctpAssociation::new(
                SctpRole::Client,
                now,
                Some(1 << 20),
                DataLimits::default(),
            ),
            server: SctpAssociation::new(SctpRole::Server, now, None, limits),
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
    with_channel_limited(spec, DataLimits::default())
}

/// As [`with_channel`], the server side with `limits`.
fn with_channel_limited(spec: ChannelSpec, limits: DataLimits) -> Pair {
    let mut p = Pair::with_server_limits(limits).connected();
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
        assert!(
            sent <= DataLimits::default().max_buffered / msg.len(),
            "never refused"
        );
        // Packets vanish: the client hears nothing.
        while p.server.poll_transmit().is_some() {}
    }
    assert!(matches!(
        p.server.send(p.now, 1, MessageKind::Binary, &msg),
        Err(SendError::Full(_))
    ));
    assert!(sent >= DataLimits::default().max_buffered / msg.len() - 1);
    assert_eq!(p.server.stats().buffer_full, 2, "each refusal counted");
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
    let mut client = SctpAssociation::new(SctpRole::Client, now, None, DataLimits::default());
    let mut server = SctpAssociation::new(SctpRole::Server, now, None, DataLimits::default());
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
    let max = 3;
    let mut p = Pair::with_server_limits(DataLimits {
        max_channels: max,
        ..DataLimits::default()
    })
    .connected();
    for i in 0..max as u16 {
        p.client
            .open_channel(p.now, 2 * i, ChannelSpec::reliable(&format!("c{i}")))
            .ok();
    }
    p.exchange();
    assert_eq!(p.server.channels().count(), max);
    // Our own open beyond the limit is refused locally, and counted.
    assert!(
        p.server
            .open_channel(p.now, 1, ChannelSpec::reliable("ours"))
            .is_err()
    );
    assert_eq!(p.server.stats().refused_channels, 1);
    // The peer's OPEN beyond the limit.
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
    assert_eq!(p.server.stats().refused_channels, 2);
    assert_eq!(p.server.channels().count(), max);
    assert!(p.server.is_connected());
}

/// Runs the pair until the server has dealt with `n` messages (accepted or dropped).
fn until_server_saw(p: &mut Pair, n: u64) {
    for _ in 0..50 {
        p.exchange();
        let s = p.server.stats();
        if s.messages_in + s.too_large + s.rate_limited + s.bytes_limited >= n {
            return;
        }
        p.advance();
    }
    panic!("server saw too little: {:?}", p.server.stats());
}

#[test]
fn a_message_larger_than_we_accept_is_dropped_and_counted() {
    let mut p = with_channel_limited(
        ChannelSpec::reliable("chat"),
        DataLimits {
            max_message_size: 1000,
            ..DataLimits::default()
        },
    );
    for len in [1000, 1001, 200_000, 5] {
        p.client
            .send(p.now, 1, MessageKind::Binary, &vec![1; len])
            .expect("send");
    }
    until_server_saw(&mut p, 4);
    let got: Vec<usize> = messages(&events(&mut p.server))
        .iter()
        .map(|(_, _, d)| d.len())
        .collect();
    assert_eq!(got, [1000, 5], "the association goes on");
    assert_eq!(p.server.stats().too_large, 2);
    assert!(p.server.is_connected());
}

#[test]
fn messages_beyond_the_rates_are_dropped_and_counted() {
    let mut p = with_channel_limited(
        ChannelSpec::reliable("chat"),
        DataLimits {
            rate: 0.001,
            burst: 5,
            ..DataLimits::default()
        },
    );
    for i in 0..8u8 {
        p.client
            .send(p.now, 1, MessageKind::Binary, &[i])
            .expect("send");
    }
    until_server_saw(&mut p, 8);
    let got: Vec<Vec<u8>> = messages(&events(&mut p.server))
        .into_iter()
        .map(|(_, _, d)| d)
        .collect();
    assert_eq!(got, (0..5u8).map(|i| vec![i]).collect::<Vec<_>>());
    assert_eq!(p.server.stats().rate_limited, 3, "exactly the excess");

    let mut p = with_channel_limited(
        ChannelSpec::reliable("chat"),
        DataLimits {
            bytes_rate: 1,
            max_message_size: 3000,
            ..DataLimits::default()
        },
    );
    for _ in 0..3 {
        p.client
            .send(p.now, 1, MessageKind::Binary, &[0; 2000])
            .expect("send");
    }
    until_server_saw(&mut p, 3);
    assert_eq!(
        p.server.stats().messages_in,
        1,
        "one largest message fits the burst"
    );
    assert_eq!(p.server.stats().bytes_limited, 2);
}

#[test]
fn a_smaller_send_buffer_drops_and_counts_sooner() {
    let mut p = with_channel_limited(
        ChannelSpec::reliable("chat"),
        DataLimits {
            max_buffered: 4096,
            ..DataLimits::default()
        },
    );
    let mut refused = 0;
    for _ in 0..10 {
        if p.server
            .send(p.now, 1, MessageKind::Binary, &[0; 1000])
            .is_err()
        {
            refused += 1;
        }
        // The peer acknowledges nothing.
        while p.server.poll_transmit().is_some() {}
    }
    assert_eq!(refused, 6, "4 KiB hold four messages");
    assert_eq!(p.server.stats().buffer_full, 6);
}

/// Both sides send INIT (a peer that takes its SCTP role from ICE while we are the DTLS
/// client). Our client ignores the peer's INIT (sctp-proto would panic on it) and relies on
/// the peer answering ours, as RFC 9260 §5.2.1 asks; here the peer is sctp-proto too, which
/// does not, so nothing connects — but nothing panics and the INITs are counted.
#[test]
fn init_collision_does_not_panic() {
    let now = Instant::now();
    let mut p = Pair {
        client: SctpAssociation::new(SctpRole::Client, now, None, DataLimits::default()),
        server: SctpAssociation::new(SctpRole::Client, now, None, DataLimits::default()),
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

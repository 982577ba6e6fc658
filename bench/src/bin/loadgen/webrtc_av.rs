//! `webrtc-echo` and `webrtc-room`: browser-like audio + video WebRTC sessions (ICE, DTLS-SRTP,
//! Opus 50 pkt/s + VP8 30 pkt/s per sender, one socket each), against Sluice's API or, with
//! `--janus URL`, against Janus's own API (EchoTest and VideoRoom plugins): the same client,
//! the same SDP, the same load.

use super::*;
use serde_json::Value;
use sluice_bench::av::{self, AvSrtp, Local};
use sluice_bench::janus::Janus;

/// The server under test and what was created on it (for the teardown).
enum Server {
    Sluice {
        api: Api,
        ids: Vec<String>,
    },
    /// `room`: the admin handle, the room id and the publisher's feed id.
    Janus {
        janus: Janus,
        room: Option<(u64, u64, u64)>,
    },
}

/// One connected peer of ours.
struct Conn {
    creds: IceCredentials,
    tie_breaker: u64,
    server: ServerTransport,
    keys: SessionKeys,
    ice: Duration,
    dtls: Duration,
}

/// `n` sockets on `--local-ip`.
fn bind_at(args: &Args, n: usize) -> anyhow::Result<Vec<UdpSocket>> {
    (0..n)
        .map(|_| {
            sys::bind_udp(SocketAddr::new(args.local_ip, 0), SOCKET_BUFFER)
                .with_context(|| format!("binding a UDP socket on {}", args.local_ip))
        })
        .collect()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

impl Server {
    fn open(args: &Args, api_url: &str) -> anyhow::Result<Server> {
        Ok(match &args.janus {
            Some(url) => Server::Janus {
                janus: Janus::connect(url).with_context(|| format!("Janus at {url}"))?,
                room: None,
            },
            None => Server::Sluice {
                api: Api::connect(api_url)?,
                ids: Vec::new(),
            },
        })
    }

    fn name(&self) -> &'static str {
        match self {
            Server::Sluice { .. } => "sluice",
            Server::Janus { .. } => "janus",
        }
    }

    /// An echo session for `offer`; returns the server's answer.
    fn echo(&mut self, offer: &str) -> anyhow::Result<String> {
        match self {
            Server::Sluice { api, ids } => {
                let d = api.request(
                    "session",
                    "create",
                    json!({"type": "echo", "sdp_type": "webrtc",
                           "offer": {"sdp": offer, "sdp_type": "webrtc"}}),
                )?;
                ids.push(str_of(&d, "session_id")?);
                sdp_of(&d, "answer")
            }
            Server::Janus { janus, .. } => {
                let h = janus.attach("janus.plugin.echotest")?;
                let r = janus.message(
                    h,
                    json!({"audio": true, "video": true}),
                    Some(("offer", offer)),
                )?;
                janus.trickle_completed(h)?;
                r.jsep.context("EchoTest answered without JSEP")
            }
        }
    }

    /// The publisher of a new room; returns the server's answer.
    fn publish(&mut self, offer: &str) -> anyhow::Result<String> {
        match self {
            Server::Sluice { api, ids } => {
                let d = api.request(
                    "session",
                    "create",
                    json!({"type": "publish", "sdp_type": "webrtc",
                           "offer": {"sdp": offer, "sdp_type": "webrtc"},
                           "room_audio_codec": "opus", "room_video_codec": "vp8"}),
                )?;
                ids.push(str_of(&d, "session_id")?);
                sdp_of(&d, "answer")
            }
            Server::Janus { janus, room } => {
                let admin = janus.attach("janus.plugin.videoroom")?;
                let id = 1_000_000 + webrtc::random_u64() % 1_000_000_000;
                janus.message(
                    admin,
                    json!({"request": "create", "room": id, "publishers": 1,
                           "audiocodec": "opus", "videocodec": "vp8", "bitrate": 0,
                           "is_private": true, "notify_joining": false}),
                    None,
                )?;
                let h = janus.attach("janus.plugin.videoroom")?;
                let joined = janus.message(
                    h,
                    json!({"request": "join", "ptype": "publisher", "room": id,
                           "display": "loadgen"}),
                    None,
                )?;
                let feed = joined.data["id"]
                    .as_u64()
                    .with_context(|| format!("join: no publisher id in {}", joined.data))?;
                let r = janus.message(
                    h,
                    json!({"request": "publish", "audio": true, "video": true}),
                    Some(("offer", offer)),
                )?;
                janus.trickle_completed(h)?;
                *room = Some((admin, id, feed));
                r.jsep
                    .context("VideoRoom answered the publisher without JSEP")
            }
        }
    }

    /// A listener of the room's publisher: the server's offer, answered by `answer_for`.
    fn listen(
        &mut self,
        answer_for: impl FnOnce(&str) -> anyhow::Result<String>,
    ) -> anyhow::Result<String> {
        match self {
            Server::Sluice { api, ids } => {
                let publisher = ids.first().context("no publisher")?.clone();
                let d = api.request(
                    "session",
                    "create",
                    json!({"type": "listen", "publisher_id": publisher, "sdp_type": "webrtc"}),
                )?;
                let id = str_of(&d, "session_id")?;
                ids.push(id.clone());
                let offer = sdp_of(&d, "offer")?;
                let answer = answer_for(&offer)?;
                api.request(
                    "session",
                    "set_answer",
                    json!({"session_id": id, "answer": {"sdp": answer, "sdp_type": "webrtc"}}),
                )?;
                Ok(offer)
            }
            Server::Janus { janus, room } => {
                let (_, id, feed) = room.context("no room")?;
                let h = janus.attach("janus.plugin.videoroom")?;
                let join = json!({"request": "join", "ptype": "subscriber", "room": id,
                                  "streams": [{"feed": feed}]});
                // A feed can be subscribed once Janus has seen its PeerConnection up, which
                // may come a little after our side of the handshake finished.
                let mut tries = 0;
                let r = loop {
                    match janus.message(h, join.clone(), None) {
                        Err(e) if tries < 50 && format!("{e}").contains("No such feed") => {
                            tries += 1;
                            thread::sleep(Duration::from_millis(100));
                        }
                        r => break r?,
                    }
                };
                let offer = r.jsep.context("VideoRoom gave the subscriber no offer")?;
                let answer = answer_for(&offer)?;
                janus.message(h, json!({"request": "start"}), Some(("answer", &answer)))?;
                janus.trickle_completed(h)?;
                Ok(offer)
            }
        }
    }

    fn keepalive(&mut self) {
        if let Server::Janus { janus, .. } = self
            && let Err(e) = janus.keepalive()
        {
            eprintln!("loadgen: Janus keepalive: {e:#}");
        }
    }

    fn close(self) {
        match self {
            Server::Sluice { mut api, mut ids } => {
                // Listeners first, so none is torn down as a side effect of the publisher.
                ids.reverse();
                let failed = api.destroy_all(&ids);
                if failed > 0 {
                    eprintln!("loadgen: {failed} sessions could not be destroyed");
                }
                api.close();
            }
            Server::Janus { mut janus, room } => {
                if let Some((admin, id, _)) = room {
                    let _ = janus.message(admin, json!({"request": "destroy", "room": id}), None);
                }
                janus.close();
            }
        }
    }
}

fn str_of(v: &Value, key: &str) -> anyhow::Result<String> {
    match &v[key] {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        _ => bail!("reply has no {key:?}: {v}"),
    }
}

fn sdp_of(v: &Value, key: &str) -> anyhow::Result<String> {
    v[key]["sdp"]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("reply has no {key}.sdp: {v}"))
}

/// Our side of session `i` on `sock`, with fresh ICE credentials.
fn local<'a>(
    sock: &UdpSocket,
    i: usize,
    creds: &'a IceCredentials,
    cert: &'a Certificate,
) -> anyhow::Result<Local<'a>> {
    Ok(Local {
        addr: sock.local_addr()?,
        id: i as u64 + 1,
        ice_ufrag: &creds.ufrag,
        ice_pwd: &creds.pwd,
        fingerprint: cert.fingerprint_sha256(),
    })
}

/// ICE + DTLS on `sock` with the server described by its SDP `remote` (its answer, or its
/// offer that we answered `active`).
fn connect(
    sock: &UdpSocket,
    cert: &Certificate,
    creds: IceCredentials,
    remote: &str,
) -> anyhow::Result<Conn> {
    let (server, role) = ServerTransport::from_sdp(remote)?;
    let peer = Peer {
        sock,
        cert,
        creds: &creds,
        tie_breaker: webrtc::random_u64(),
    };
    let c = peer.connect_as(&server, role, HANDSHAKE_TIMEOUT)?;
    let tie_breaker = peer.tie_breaker;
    Ok(Conn {
        creds,
        tie_breaker,
        server,
        keys: c.keys,
        ice: c.ice,
        dtls: c.dtls,
    })
}

/// One line about the handshakes (p50 and max ICE and DTLS times) to stderr.
fn report_setup(name: &str, conns: &[Conn], setup: Duration) {
    let sorted = |f: fn(&Conn) -> Duration| {
        let mut v: Vec<Duration> = conns.iter().map(f).collect();
        v.sort_unstable();
        v
    };
    let (ice, dtls) = (sorted(|c| c.ice), sorted(|c| c.dtls));
    let q = |v: &[Duration], q: f64| {
        v.get(((v.len() - 1) as f64 * q) as usize)
            .map_or(0.0, |d| ms(*d))
    };
    if !conns.is_empty() {
        eprintln!(
            "loadgen: {name}: {} peers up in {:.1} s, ICE p50 {:.2} ms (max {:.2}), DTLS p50 {:.2} ms (max {:.2})",
            conns.len(),
            setup.as_secs_f64(),
            q(&ice, 0.5),
            q(&ice, 1.0),
            q(&dtls, 0.5),
            q(&dtls, 1.0)
        );
    }
}

/// The load of `senders` A/V senders at 80 pkt/s each (0: `--rate`, whose default is that
/// for `--sessions` or one publisher); probes of `--video-size` bytes (audio cut to `--size`).
fn av_args(args: &Args, senders: usize) -> Args {
    let mut a = args.clone();
    a.rate = if senders == 0 {
        args.rate
    } else {
        av::SENDER_PPS * senders as u64
    };
    a.size = args.video_size;
    a
}

fn cpu_of(cpu: Option<&CpuSource>, name: &str) -> Option<CpuSource> {
    if cpu.is_some() {
        return cpu.cloned();
    }
    match find_pids(name).as_slice() {
        [pid] => Some(CpuSource::Process(*pid)),
        _ => None,
    }
}

#[allow(clippy::too_many_arguments)]
fn measure_av(
    name: &str,
    mode: &str,
    args: &Args,
    streams: usize,
    copies: u64,
    send: &[UdpSocket],
    recv: &[UdpSocket],
    targets: &[Target],
    cpu: Option<&CpuSource>,
    gen_cpu: Option<usize>,
    srtp: &mut AvSrtp,
) -> anyhow::Result<Row> {
    let mut row = measure(
        name,
        args,
        streams,
        copies,
        send,
        recv,
        targets,
        cpu,
        gen_cpu,
        Some(srtp),
    )?;
    row.mode = mode.into();
    Ok(row)
}

/// `webrtc-echo`: `--sessions` A/V echo sessions (EchoTest on Janus); with `--saturate`,
/// the most sessions held loss-free, searched by doubling then bisecting (sessions are
/// added as the search grows; a smaller step uses the first k of them).
pub(super) fn echo(
    args: &Args,
    api_url: &str,
    cpu: Option<&CpuSource>,
    gen_cpu: Option<usize>,
) -> anyhow::Result<Vec<Row>> {
    let cert = Certificate::generate().map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut server = Server::open(args, api_url)?;
    let name = server.name();
    let cpu = cpu_of(cpu, name);
    let mut socks: Vec<UdpSocket> = Vec::new();
    let mut conns: Vec<Conn> = Vec::new();
    // One SRTP state for every run: sequence numbers and replay windows carry over.
    let mut srtp = AvSrtp::new([], [], args.size)?;
    let result = (|| -> anyhow::Result<Vec<Row>> {
        let start = Instant::now();
        let open = |n: usize,
                    server: &mut Server,
                    socks: &mut Vec<UdpSocket>,
                    conns: &mut Vec<Conn>,
                    srtp: &mut AvSrtp|
         -> anyhow::Result<()> {
            while conns.len() < n {
                let i = conns.len();
                socks.extend(bind_at(args, 1)?);
                let creds = IceCredentials::random();
                let offer = av::offer(&local(&socks[i], i, &creds, &cert)?, i);
                let answer = server
                    .echo(&offer)
                    .with_context(|| format!("creating echo session {i}"))?;
                let c = connect(&socks[i], &cert, creds, &answer)
                    .with_context(|| format!("connecting echo session {i}"))?;
                srtp.push_echo(&c.keys)?;
                conns.push(c);
            }
            Ok(())
        };
        eprintln!(
            "loadgen: {name}: opening {} A/V echo sessions",
            args.sessions
        );
        open(
            args.sessions,
            &mut server,
            &mut socks,
            &mut conns,
            &mut srtp,
        )?;
        report_setup(name, &conns, start.elapsed());
        let run = |k: usize,
                   a: &Args,
                   label: &str,
                   socks: &[UdpSocket],
                   conns: &[Conn],
                   server: &mut Server,
                   srtp: &mut AvSrtp|
         -> anyhow::Result<Row> {
            server.keepalive();
            srtp.set_active(k);
            let dests: Vec<(SocketAddr, usize)> = conns[..k]
                .iter()
                .enumerate()
                .map(|(i, c)| (c.server.addr, i))
                .collect();
            let targets = av::targets(&dests);
            let peers: Vec<(Peer, &ServerTransport)> = conns[..k]
                .iter()
                .zip(socks)
                .map(|(c, sock)| {
                    let peer = Peer {
                        sock,
                        cert: &cert,
                        creds: &c.creds,
                        tie_breaker: c.tie_breaker,
                    };
                    (peer, &c.server)
                })
                .collect();
            srtp_echo::with_consent(&peers, gen_cpu, || {
                measure_av(
                    label,
                    "webrtc-echo",
                    a,
                    k,
                    1,
                    &socks[..k],
                    &socks[..k],
                    &targets,
                    cpu.as_ref(),
                    gen_cpu,
                    srtp,
                )
            })
        };
        let mut rows = Vec::new();
        if !args.saturate {
            let a = av_args(args, 0);
            rows.push(run(
                args.sessions,
                &a,
                name,
                &socks,
                &conns,
                &mut server,
                &mut srtp,
            )?);
            return Ok(rows);
        }
        // The search: steps of --step seconds at 80 pkt/s per session.
        let ok = |r: &Row| {
            r.outcome.loss_pct(1) <= args.loss_free_pct && !r.outcome.generator_limited(r.rate)
        };
        let step = |k: usize,
                    server: &mut Server,
                    socks: &[UdpSocket],
                    conns: &[Conn],
                    srtp: &mut AvSrtp|
         -> anyhow::Result<Row> {
            let mut a = av_args(args, k);
            a.duration = args.step;
            let r = run(k, &a, name, socks, conns, server, srtp)?;
            eprintln!(
                "loadgen: {name}: search: {k} sessions, {:.0} pkt/s: loss {:.3} %{}, cpu {:.0} %",
                r.outcome.offered_pps(),
                r.outcome.loss_pct(1),
                if r.outcome.generator_limited(r.rate) {
                    " (generator fell behind)"
                } else {
                    ""
                },
                r.cpu_pct().unwrap_or(0.0)
            );
            Ok(r)
        };
        let cap = sluice_bench::cli::MAX_SRTP_SESSIONS;
        let (mut good, mut bad) = (0usize, None);
        let mut k = args.sessions;
        loop {
            open(k, &mut server, &mut socks, &mut conns, &mut srtp)?;
            let r = step(k, &mut server, &socks, &conns, &mut srtp)?;
            if r.outcome.generator_limited(r.rate) {
                eprintln!(
                    "loadgen: {name}: the generator fell behind at {k} sessions: it, not the target, is the limit"
                );
                bad = Some(k);
                break;
            }
            if !ok(&r) {
                bad = Some(k);
                break;
            }
            good = k;
            if k >= cap {
                eprintln!("loadgen: {name}: {cap} sessions (loadgen's cap) held loss-free");
                break;
            }
            k = (k * 2).min(cap);
        }
        if let Some(mut hi) = bad {
            while hi - good > (good / 10).max(1) {
                let mid = (good + hi) / 2;
                let r = step(mid, &mut server, &socks, &conns, &mut srtp)?;
                if ok(&r) {
                    good = mid;
                } else {
                    hi = mid;
                }
            }
        }
        if good == 0 {
            bail!(
                "{name}: not even {} sessions were loss-free (at most {} % loss)",
                args.sessions,
                args.loss_free_pct
            );
        }
        let a = av_args(args, good);
        rows.push(run(
            good,
            &a,
            &format!("{name}@max"),
            &socks,
            &conns,
            &mut server,
            &mut srtp,
        )?);
        Ok(rows)
    })();
    server.close();
    result
}

/// `webrtc-room`: one A/V publisher, `--listeners` listeners (a VideoRoom subscriber each on
/// Janus), each its own PeerConnection and socket; egress counted at the listeners.
pub(super) fn room(
    args: &Args,
    api_url: &str,
    cpu: Option<&CpuSource>,
    gen_cpu: Option<usize>,
) -> anyhow::Result<Row> {
    let cert = Certificate::generate().map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut server = Server::open(args, api_url)?;
    let name = server.name();
    let cpu = cpu_of(cpu, name);
    let result = (|| -> anyhow::Result<Row> {
        let publisher = bind_at(args, 1)?;
        let listeners = bind_at(args, args.listeners)?;
        let start = Instant::now();
        let creds = IceCredentials::random();
        let offer = av::offer(&local(&publisher[0], 0, &creds, &cert)?, 0);
        let answer = server.publish(&offer).context("creating the publisher")?;
        let pubc =
            connect(&publisher[0], &cert, creds, &answer).context("connecting the publisher")?;
        eprintln!(
            "loadgen: {name}: subscribing {} A/V listeners",
            args.listeners
        );
        let mut subs = Vec::with_capacity(args.listeners);
        for (i, sock) in listeners.iter().enumerate() {
            let creds = IceCredentials::random();
            let me = local(sock, i + 1, &creds, &cert)?;
            let offer = server
                .listen(|offer| av::answer(offer, &me))
                .with_context(|| format!("creating listener {i}"))?;
            subs.push(
                connect(sock, &cert, creds, &offer)
                    .with_context(|| format!("connecting listener {i}"))?,
            );
            if i % 200 == 199 {
                server.keepalive();
            }
        }
        report_setup(name, &subs, start.elapsed());
        server.keepalive();
        let mut srtp = AvSrtp::new([&pubc.keys], subs.iter().map(|c| &c.keys), args.size)?;
        let targets = av::targets(&[(pubc.server.addr, 0)]);
        let mut peers: Vec<(Peer, &ServerTransport)> = vec![(
            Peer {
                sock: &publisher[0],
                cert: &cert,
                creds: &pubc.creds,
                tie_breaker: pubc.tie_breaker,
            },
            &pubc.server,
        )];
        peers.extend(subs.iter().zip(&listeners).map(|(c, sock)| {
            (
                Peer {
                    sock,
                    cert: &cert,
                    creds: &c.creds,
                    tie_breaker: c.tie_breaker,
                },
                &c.server,
            )
        }));
        let a = av_args(args, 0);
        srtp_echo::with_consent(&peers, gen_cpu, || {
            measure_av(
                name,
                "webrtc-room",
                &a,
                args.listeners,
                args.listeners as u64,
                &publisher,
                &listeners,
                &targets,
                cpu.as_ref(),
                gen_cpu,
                &mut srtp,
            )
        })
    })();
    server.close();
    result
}

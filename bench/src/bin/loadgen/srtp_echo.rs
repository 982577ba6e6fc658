//! `srtp-echo`: WebRTC echo sessions, each with its own ICE + DTLS-SRTP handshake.

use super::*;

/// One connected WebRTC echo session.
pub(super) struct SrtpSession {
    creds: IceCredentials,
    tie_breaker: u64,
    server: ServerTransport,
    profile: Profile,
    keys: SessionKeys,
    ice: Duration,
    dtls: Duration,
}

/// How the WebRTC sessions came up.
#[derive(Debug)]
pub(super) struct SrtpInfo {
    profiles: Vec<Profile>,
    /// Per-session ICE and DTLS handshake times.
    ice: Vec<Duration>,
    dtls: Vec<Duration>,
    /// Creating, connecting and keying every session, one after the other.
    setup: Duration,
}

impl SrtpInfo {
    fn new(sessions: &[SrtpSession], setup: Duration) -> SrtpInfo {
        let mut profiles: Vec<Profile> = sessions.iter().map(|s| s.profile).collect();
        profiles.dedup();
        let sorted = |f: fn(&SrtpSession) -> Duration| {
            let mut v: Vec<Duration> = sessions.iter().map(f).collect();
            v.sort_unstable();
            v
        };
        SrtpInfo {
            profiles,
            ice: sorted(|s| s.ice),
            dtls: sorted(|s| s.dtls),
            setup,
        }
    }

    fn ms(v: &[Duration], q: f64) -> f64 {
        let i = ((v.len() as f64 - 1.0) * q).round() as usize;
        v.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e3)
    }

    fn profiles(&self) -> String {
        let names: Vec<String> = self.profiles.iter().map(|p| format!("{p:?}")).collect();
        names.join(",")
    }

    pub(super) fn to_json(&self) -> serde_json::Value {
        json!({
            "profiles": self.profiles(),
            "sessions": self.ice.len(),
            "ice_ms_p50": Self::ms(&self.ice, 0.5), "ice_ms_max": Self::ms(&self.ice, 1.0),
            "dtls_ms_p50": Self::ms(&self.dtls, 0.5), "dtls_ms_max": Self::ms(&self.dtls, 1.0),
            "setup_seconds": self.setup.as_secs_f64(),
        })
    }

    pub(super) fn line(&self) -> String {
        format!(
            "srtp:    {} sessions, profile {}, ICE p50 {:.2} ms (max {:.2}), DTLS p50 {:.2} ms (max {:.2}), {:.1} s to set all up",
            self.ice.len(),
            self.profiles(),
            Self::ms(&self.ice, 0.5),
            Self::ms(&self.ice, 1.0),
            Self::ms(&self.dtls, 0.5),
            Self::ms(&self.dtls, 1.0),
            self.setup.as_secs_f64()
        )
    }
}

pub(super) fn srtp_echo_sluice(
    args: &Args,
    api_url: &str,
    cpu: Option<&CpuSource>,
    gen_cpu: Option<usize>,
) -> anyhow::Result<(Row, SrtpInfo)> {
    let cert = Certificate::generate().map_err(|e| anyhow::anyhow!("{e}"))?;
    // One socket per session: ICE latches one 5-tuple per session.
    let socks = bind_sockets(args.sessions)?;
    let mut api = Api::connect(api_url)?;
    eprintln!(
        "loadgen: creating {} WebRTC echo sessions (ICE + DTLS each)",
        args.sessions
    );
    let mut ids = Vec::with_capacity(args.sessions);
    let start = Instant::now();
    let result = open_srtp_echo(&mut api, &socks, &cert, &mut ids).and_then(|sessions| {
        let info = SrtpInfo::new(&sessions, start.elapsed());
        eprintln!("loadgen: {}", info.line());
        let mut streams = SrtpStreams::new(sessions.iter().map(|s| &s.keys))?;
        let targets: Vec<Target> = sessions
            .iter()
            .enumerate()
            .map(|(i, s)| Target {
                dest: s.server.addr,
                socket: i,
            })
            .collect();
        let peers: Vec<(Peer, &ServerTransport)> = sessions
            .iter()
            .zip(&socks)
            .map(|(s, sock)| {
                let peer = Peer {
                    sock,
                    cert: &cert,
                    creds: &s.creds,
                    tie_breaker: s.tie_breaker,
                };
                (peer, &s.server)
            })
            .collect();
        let row = with_consent(&peers, gen_cpu, || {
            measure(
                "sluice-srtp",
                args,
                args.sessions,
                1,
                &socks,
                &socks,
                &targets,
                cpu,
                gen_cpu,
                Some(&mut streams),
            )
        })?;
        Ok((row, info))
    });
    let failed = api.destroy_all(&ids);
    api.close();
    if failed > 0 {
        eprintln!("loadgen: {failed} sessions could not be destroyed");
    }
    result
}

/// Creates and connects one WebRTC echo session per socket, one after the other.
pub(super) fn open_srtp_echo(
    api: &mut Api,
    socks: &[UdpSocket],
    cert: &Certificate,
    ids: &mut Vec<String>,
) -> anyhow::Result<Vec<SrtpSession>> {
    let mut sessions = Vec::with_capacity(socks.len());
    for (i, sock) in socks.iter().enumerate() {
        let creds = IceCredentials::random();
        let offer = sdp::webrtc_offer(&sdp::WebrtcOffer {
            addr: sock.local_addr()?,
            id: i as u64 + 1,
            ice_ufrag: &creds.ufrag,
            ice_pwd: &creds.pwd,
            fingerprint: cert.fingerprint_sha256(),
            ssrc: 0x5100_0000 + i as u32,
        });
        let created = api
            .create_echo_webrtc(&offer)
            .with_context(|| format!("creating WebRTC echo session {i}"))?;
        ids.push(created.session_id);
        let server = ServerTransport::from_answer(&created.sdp)
            .with_context(|| format!("the answer of session {i}"))?;
        let peer = Peer {
            sock,
            cert,
            creds: &creds,
            tie_breaker: webrtc::random_u64(),
        };
        let c = peer
            .connect(&server, HANDSHAKE_TIMEOUT)
            .with_context(|| format!("connecting session {i}"))?;
        let tie_breaker = peer.tie_breaker;
        sessions.push(SrtpSession {
            creds,
            tie_breaker,
            server,
            profile: c.profile,
            keys: c.keys,
            ice: c.ice,
            dtls: c.dtls,
        });
    }
    Ok(sessions)
}

/// Runs `f` while a thread (on the generator's core) sends every peer a consent check
/// every `CONSENT_INTERVAL`, so that runs longer than 30 s keep their media flowing.
pub(super) fn with_consent<T: Send>(
    peers: &[(Peer<'_>, &ServerTransport)],
    cpu: Option<usize>,
    f: impl FnOnce() -> T + Send,
) -> T {
    let stop = AtomicBool::new(false);
    thread::scope(|s| {
        s.spawn(|| {
            if let Some(cpu) = cpu {
                let _ = sys::pin_current_thread(cpu);
            }
            let mut last = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                thread::sleep(Duration::from_millis(50));
                if last.elapsed() < CONSENT_INTERVAL {
                    continue;
                }
                last = Instant::now();
                for (peer, server) in peers {
                    if let Err(e) = peer.consent_check(server) {
                        eprintln!("loadgen: consent check to {}: {e:#}", server.addr);
                    }
                }
            }
        });
        let out = f();
        stop.store(true, Ordering::Relaxed);
        out
    })
}

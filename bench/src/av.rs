//! Audio + video WebRTC load, as a browser call sends it: per sender, Opus audio at 50
//! packets/s and VP8 video at 30 packets/s (one packet per frame), bundled on one socket.
//! The SDP of `webrtc-echo` and `webrtc-room` (the same for Sluice and Janus), and
//! [`AvSrtp`], the load loop's [`Transform`] that turns the generator's probes into those
//! two SRTP streams per sender.
//!
//! The generator sends `--video-size` bytes per probe; five of every eight packets of a
//! sender are audio and are cut to `--size` bytes (the probe sits in the first
//! [`traffic::MIN_SIZE`](crate::traffic::MIN_SIZE) bytes, so both kinds are measured alike).

use std::fmt::Write as _;
use std::net::SocketAddr;

use anyhow::Context;
use sluice_control::sdp::{MediaKind, Sdp};
use sluice_dataplane::srtp::{SessionKeys, SrtpContext};

use crate::sdp::{HOST_PRIORITY, OPUS};
use crate::traffic::{Target, Transform, Unprotected};

/// VP8's payload type in our offers (as browsers number it).
pub const VP8: u8 = 96;
/// Of every `SLOTS` packets of a sender, the first `AUDIO_SLOTS` are audio: 50 + 30 pkt/s.
pub const SLOTS: usize = 8;
pub const AUDIO_SLOTS: usize = 5;
/// Packets per second of one sender: 50 audio + 30 video.
pub const SENDER_PPS: u64 = 80;

/// The SSRCs of sender `i`: audio, video.
pub fn ssrcs(i: usize) -> [u32; 2] {
    let base = 0x5200_0000u32.wrapping_add(2 * i as u32);
    [base, base + 1]
}

/// What our SDP says about our side.
#[derive(Clone, Debug)]
pub struct Local<'a> {
    /// The one socket: RTP, RTCP (muxed), STUN and DTLS.
    pub addr: SocketAddr,
    pub id: u64,
    pub ice_ufrag: &'a str,
    pub ice_pwd: &'a str,
    /// SHA-256 of our DTLS certificate.
    pub fingerprint: &'a str,
}

fn session_header(o: &Local<'_>, mids: &str) -> String {
    let ip = o.addr.ip();
    format!(
        "v=0\r\no=loadgen {id} 1 IN IP4 {ip}\r\ns=-\r\nt=0 0\r\na=group:BUNDLE {mids}\r\n\
         a=msid-semantic: WMS loadgen\r\n",
        id = o.id
    )
}

fn transport(s: &mut String, o: &Local<'_>, setup: &str, mid: &str) {
    let (ip, port) = (o.addr.ip(), o.addr.port());
    let _ = write!(
        s,
        "c=IN IP4 {ip}\r\na=rtcp:{port} IN IP4 {ip}\r\na=ice-ufrag:{u}\r\na=ice-pwd:{p}\r\n\
         a=fingerprint:sha-256 {fp}\r\na=setup:{setup}\r\na=mid:{mid}\r\na=rtcp-mux\r\n",
        u = o.ice_ufrag,
        p = o.ice_pwd,
        fp = o.fingerprint,
    );
}

fn candidate(s: &mut String, o: &Local<'_>) {
    let (ip, port) = (o.addr.ip(), o.addr.port());
    let _ = write!(
        s,
        "a=candidate:1 1 udp {HOST_PRIORITY} {ip} {port} typ host\r\na=end-of-candidates\r\n"
    );
}

fn audio_codec(s: &mut String, pt: u8) {
    let _ = write!(
        s,
        "a=rtpmap:{pt} opus/48000/2\r\na=rtcp-fb:{pt} transport-cc\r\n\
         a=fmtp:{pt} minptime=10;useinbandfec=1\r\n"
    );
}

fn video_codec(s: &mut String, pt: u8) {
    let _ = write!(
        s,
        "a=rtpmap:{pt} VP8/90000\r\na=rtcp-fb:{pt} goog-remb\r\na=rtcp-fb:{pt} ccm fir\r\n\
         a=rtcp-fb:{pt} nack\r\na=rtcp-fb:{pt} nack pli\r\n"
    );
}

/// A browser-like offer (JSEP): Opus audio (mid 0) and VP8 video (mid 1), bundled,
/// sendrecv, `UDP/TLS/RTP/SAVPF`, rtcp-mux, full ICE with one host candidate,
/// `a=setup:actpass`, the SSRCs of sender `sender` announced.
pub fn offer(o: &Local<'_>, sender: usize) -> String {
    let port = o.addr.port();
    let [a, v] = ssrcs(sender);
    let mut s = session_header(o, "0 1");
    let _ = write!(s, "m=audio {port} UDP/TLS/RTP/SAVPF {OPUS}\r\n");
    transport(&mut s, o, "actpass", "0");
    s.push_str("a=sendrecv\r\na=msid:loadgen audio0\r\n");
    audio_codec(&mut s, OPUS);
    let _ = write!(
        s,
        "a=ssrc:{a} cname:loadgen\r\na=ssrc:{a} msid:loadgen audio0\r\n"
    );
    candidate(&mut s, o);
    let _ = write!(s, "m=video {port} UDP/TLS/RTP/SAVPF {VP8}\r\n");
    transport(&mut s, o, "actpass", "1");
    s.push_str("a=sendrecv\r\na=msid:loadgen video0\r\n");
    video_codec(&mut s, VP8);
    let _ = write!(
        s,
        "a=ssrc:{v} cname:loadgen\r\na=ssrc:{v} msid:loadgen video0\r\n"
    );
    candidate(&mut s, o);
    s
}

/// A receive-only answer to a server's offer (a room listener / subscriber): every audio
/// m-line with Opus, every video m-line with VP8 accepted `recvonly` under the offer's
/// mids and payload types, the rest rejected; `a=setup:active` (we are the DTLS client).
pub fn answer(offer_sdp: &str, o: &Local<'_>) -> anyhow::Result<String> {
    let parsed = Sdp::parse(offer_sdp).map_err(|e| anyhow::anyhow!("offer SDP: {e}"))?;
    let mut body = String::new();
    let mut mids = Vec::new();
    for (i, m) in parsed.media.iter().enumerate() {
        let mid = m.mid.clone().unwrap_or_else(|| i.to_string());
        let want = match m.kind {
            MediaKind::Audio => "opus",
            MediaKind::Video => "vp8",
            _ => "",
        };
        let codec = m
            .codecs
            .iter()
            .find(|c| !want.is_empty() && c.name.eq_ignore_ascii_case(want));
        let Some(c) = codec.filter(|_| m.port != 0) else {
            let _ = write!(
                body,
                "m={} 0 {} {}\r\na=mid:{mid}\r\n",
                m.kind.as_str(),
                m.proto.as_str(),
                m.formats.first().map_or("0", String::as_str)
            );
            continue;
        };
        let _ = write!(
            body,
            "m={} {} {} {}\r\n",
            m.kind.as_str(),
            o.addr.port(),
            m.proto.as_str(),
            c.pt.0
        );
        transport(&mut body, o, "active", &mid);
        body.push_str("a=recvonly\r\n");
        if m.kind == MediaKind::Audio {
            audio_codec(&mut body, c.pt.0);
        } else {
            video_codec(&mut body, c.pt.0);
        }
        candidate(&mut body, o);
        mids.push(mid);
    }
    anyhow::ensure!(!mids.is_empty(), "the offer has no Opus or VP8 stream");
    Ok(session_header(o, &mids.join(" ")) + &body)
}

/// The load of `senders` senders whose packets go to `dests[i]` from socket `socks[i]`:
/// `SLOTS` targets each, interleaved so that every sender's packets are spread evenly in
/// time. Target `t` belongs to sender `t % senders`, slot `t / senders`.
pub fn targets(dests: &[(SocketAddr, usize)]) -> Vec<Target> {
    (0..SLOTS)
        .flat_map(|_| dests.iter().map(|&(dest, socket)| Target { dest, socket }))
        .collect()
}

/// SRTP for audio + video senders: target `t` of the first `active` senders is protected
/// with sender `t % active`'s keys as audio (`t / active < AUDIO_SLOTS`: Opus, cut to
/// `audio_size`) or video (VP8, the full size, marker set); what arrives on socket `i` is
/// unprotected with receiver `i`'s keys.
pub struct AvSrtp {
    tx: Vec<SrtpContext>,
    rx: Vec<SrtpContext>,
    /// Next RTP sequence number per sender and kind, kept across runs (replay protection).
    seq: Vec<[u16; 2]>,
    active: usize,
    audio_size: usize,
    overhead: usize,
}

impl AvSrtp {
    /// `senders`: our keys of each sending session (their `local` half protects);
    /// `receivers`: of each receiving socket (their `remote` half unprotects).
    pub fn new<'k>(
        senders: impl IntoIterator<Item = &'k SessionKeys>,
        receivers: impl IntoIterator<Item = &'k SessionKeys>,
        audio_size: usize,
    ) -> anyhow::Result<AvSrtp> {
        let mut overhead = 0;
        let mut tx = Vec::new();
        for k in senders {
            tx.push(SrtpContext::new(&k.local).context("SRTP context")?);
            overhead = k.local.profile().rtp_overhead().max(overhead);
        }
        let rx = receivers
            .into_iter()
            .map(|k| SrtpContext::new(&k.remote).context("SRTP context"))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(AvSrtp {
            seq: vec![[1, 1]; tx.len()],
            active: tx.len(),
            tx,
            rx,
            audio_size,
            overhead,
        })
    }

    /// One more session that both sends and receives (an echo session): its `local` keys
    /// protect sender `i`, its `remote` keys unprotect socket `i`.
    pub fn push_echo(&mut self, keys: &SessionKeys) -> anyhow::Result<()> {
        self.tx
            .push(SrtpContext::new(&keys.local).context("SRTP context")?);
        self.rx
            .push(SrtpContext::new(&keys.remote).context("SRTP context")?);
        self.seq.push([1, 1]);
        self.overhead = keys.local.profile().rtp_overhead().max(self.overhead);
        self.active = self.tx.len();
        Ok(())
    }

    /// Only the first `n` senders send (targets built from `n` destinations).
    pub fn set_active(&mut self, n: usize) {
        self.active = n.clamp(1, self.tx.len().max(1));
    }
}

impl Transform for AvSrtp {
    fn overhead(&self) -> usize {
        self.overhead
    }

    fn protect(&mut self, stream: usize, buf: &mut [u8], len: usize) -> Option<usize> {
        let sender = stream % self.active;
        let video = (stream / self.active) % SLOTS >= AUDIO_SLOTS;
        let kind = usize::from(video);
        let seq = &mut self.seq.get_mut(sender)?[kind];
        let (pt, len) = if video {
            (0x80 | VP8, len)
        } else {
            (OPUS, len.min(self.audio_size))
        };
        buf[1] = pt;
        buf[2..4].copy_from_slice(&seq.to_be_bytes());
        *seq = seq.wrapping_add(1);
        buf[8..12].copy_from_slice(&ssrcs(sender)[kind].to_be_bytes());
        self.tx[sender].protect_rtp(buf, len).ok()
    }

    fn unprotect(&mut self, socket: usize, buf: &mut [u8]) -> Unprotected {
        crate::webrtc::unprotect_media(self.rx.get_mut(socket), buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> Local<'static> {
        Local {
            addr: "127.0.0.1:41000".parse().unwrap(),
            id: 1,
            ice_ufrag: "uFrG",
            ice_pwd: "0123456789abcdefghijkl",
            fingerprint: "AB:CD",
        }
    }

    #[test]
    fn offer_has_bundled_audio_and_video() {
        let text = offer(&local(), 3);
        let sdp = Sdp::parse(&text).unwrap();
        assert_eq!(sdp.bundle, vec!["0".to_string(), "1".to_string()]);
        assert_eq!(sdp.media.len(), 2);
        assert_eq!(sdp.media[0].codecs[0].pt.0, OPUS);
        assert_eq!(sdp.media[1].codecs[0].name, "VP8");
        assert!(text.contains(&format!("a=ssrc:{} cname", ssrcs(3)[1])));
    }

    #[test]
    fn answer_takes_the_offers_mids_and_payload_types() {
        let server = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE a v d\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 109\r\nc=IN IP4 127.0.0.1\r\na=mid:a\r\na=sendonly\r\n\
            a=rtpmap:109 opus/48000/2\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 100 101\r\nc=IN IP4 127.0.0.1\r\na=mid:v\r\na=sendonly\r\n\
            a=rtpmap:100 VP8/90000\r\na=rtpmap:101 rtx/90000\r\n\
            m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 127.0.0.1\r\na=mid:d\r\n";
        let text = answer(server, &local()).unwrap();
        let sdp = Sdp::parse(&text).unwrap();
        assert_eq!(sdp.bundle, vec!["a".to_string(), "v".to_string()]);
        assert_eq!(sdp.media[0].codecs[0].pt.0, 109);
        assert_eq!(sdp.media[1].codecs[0].pt.0, 100);
        assert_eq!(sdp.media[2].port, 0);
        assert!(text.contains("a=setup:active") && text.contains("a=recvonly"));
    }

    #[test]
    fn targets_interleave_senders() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let t = targets(&[(a, 0), (b, 1)]);
        assert_eq!(t.len(), 2 * SLOTS);
        assert_eq!((t[0].dest, t[1].dest, t[2].dest), (a, b, a));
        assert_eq!((t[0].socket, t[1].socket), (0, 1));
    }
}

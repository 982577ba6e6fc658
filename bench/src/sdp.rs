//! Just enough SDP (RFC 8866) for plain-RTP load: a PCMU offer from a local port, an answer to
//! the server's offer, and where the server's audio stream lives.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use anyhow::{Context, bail};

/// Static payload type of PCMU (RFC 3551 §6).
pub const PCMU: u8 = 0;

fn lines(sdp: &str) -> impl Iterator<Item = &str> {
    sdp.lines().map(str::trim_end).filter(|l| !l.is_empty())
}

fn header(addr: SocketAddr, id: u64) -> String {
    let family = if addr.is_ipv4() { "IP4" } else { "IP6" };
    let ip = addr.ip();
    format!(
        "v=0\r\no=loadgen {id} 1 IN {family} {ip}\r\ns=loadgen\r\nc=IN {family} {ip}\r\nt=0 0\r\n"
    )
}

/// A plain RTP/AVP offer: PCMU audio from `addr`, RTCP on the next port.
pub fn offer(addr: SocketAddr, id: u64) -> String {
    let mut s = header(addr, id);
    let _ = write!(
        s,
        "m=audio {} RTP/AVP {PCMU}\r\na=rtpmap:{PCMU} PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n",
        addr.port()
    );
    s
}

/// One `m=` section of a parsed SDP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Media {
    pub kind: String,
    pub port: u16,
    pub proto: String,
    pub formats: Vec<u8>,
    pub addr: Option<IpAddr>,
    pub direction: Option<String>,
    /// `a=rtpmap:` lines, without the `a=` prefix.
    pub rtpmaps: Vec<String>,
}

const DIRECTIONS: [&str; 4] = ["sendrecv", "sendonly", "recvonly", "inactive"];

fn parse_c(value: &str) -> anyhow::Result<IpAddr> {
    // c=IN IP4 203.0.113.1[/ttl]
    let addr = value
        .split_whitespace()
        .nth(2)
        .context("c= line without address")?;
    let addr = addr.split('/').next().unwrap_or(addr);
    addr.parse()
        .with_context(|| format!("bad c= address {addr:?}"))
}

/// The media sections, each with its effective connection address and direction (the media
/// level overrides the session level).
pub fn media(sdp: &str) -> anyhow::Result<Vec<Media>> {
    let mut session_addr = None;
    let mut session_dir = None;
    let mut out: Vec<Media> = Vec::new();
    for line in lines(sdp) {
        let (key, value) = line
            .split_once('=')
            .with_context(|| format!("bad SDP line {line:?}"))?;
        match (key, out.last_mut()) {
            ("m", _) => {
                let mut f = value.split_whitespace();
                let kind = f.next().context("empty m= line")?.to_string();
                let port = f.next().context("m= line without port")?;
                let port = port.split('/').next().unwrap_or(port);
                let port = port
                    .parse()
                    .with_context(|| format!("bad m= port {port:?}"))?;
                let proto = f.next().context("m= line without protocol")?.to_string();
                let formats = f.filter_map(|p| p.parse().ok()).collect();
                out.push(Media {
                    kind,
                    port,
                    proto,
                    formats,
                    addr: session_addr,
                    direction: session_dir.clone(),
                    rtpmaps: Vec::new(),
                });
            }
            ("c", None) => session_addr = Some(parse_c(value)?),
            ("c", Some(m)) => m.addr = Some(parse_c(value)?),
            ("a", m) if DIRECTIONS.contains(&value) => match m {
                None => session_dir = Some(value.to_string()),
                Some(m) => m.direction = Some(value.to_string()),
            },
            ("a", Some(m)) if value.starts_with("rtpmap:") => m.rtpmaps.push(value.to_string()),
            _ => {}
        }
    }
    Ok(out)
}

/// Where the first audio stream of `sdp` goes: `c=` address and `m=audio` port.
pub fn audio_addr(sdp: &str) -> anyhow::Result<SocketAddr> {
    let audio = media(sdp)?
        .into_iter()
        .find(|m| m.kind == "audio")
        .context("no m=audio in SDP")?;
    let ip = audio.addr.context("no c= line for the audio stream")?;
    if audio.port == 0 {
        bail!("audio stream rejected (port 0)");
    }
    Ok(SocketAddr::new(ip, audio.port))
}

/// A plain answer to `offer`: the first audio stream received on `addr` with the offer's first
/// payload type, every other stream rejected (port 0).
pub fn answer(offer: &str, addr: SocketAddr, id: u64) -> anyhow::Result<String> {
    let sections = media(offer)?;
    let mut s = header(addr, id);
    let mut audio_done = false;
    for m in &sections {
        let first = m.formats.first().copied().unwrap_or(PCMU);
        if m.kind != "audio" || audio_done || m.port == 0 {
            let _ = write!(s, "m={} 0 {} {first}\r\n", m.kind, m.proto);
            continue;
        }
        audio_done = true;
        let _ = write!(s, "m=audio {} {} {first}\r\n", addr.port(), m.proto);
        let prefix = format!("rtpmap:{first} ");
        match m.rtpmaps.iter().find(|r| r.starts_with(&prefix)) {
            Some(r) => {
                let _ = write!(s, "a={r}\r\n");
            }
            None if first == PCMU => s.push_str("a=rtpmap:0 PCMU/8000\r\n"),
            None => {}
        }
        let dir = match m.direction.as_deref() {
            Some("sendonly") => "recvonly",
            Some("recvonly") => "sendonly",
            Some("inactive") => "inactive",
            _ => "sendrecv",
        };
        let _ = write!(s, "a={dir}\r\n");
    }
    if !audio_done {
        bail!("the offer has no audio stream to answer");
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn own_offer_parses_back() {
        let o = offer(a("127.0.0.1:40000"), 7);
        assert_eq!(audio_addr(&o).unwrap(), a("127.0.0.1:40000"));
        let m = &media(&o).unwrap()[0];
        assert_eq!(
            (m.proto.as_str(), m.formats.as_slice()),
            ("RTP/AVP", &[0u8][..])
        );
        assert!(o.ends_with("\r\n") && o.contains("c=IN IP4 127.0.0.1\r\n"));
    }

    #[test]
    fn media_level_connection_overrides_session_level() {
        let sdp = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
                   m=video 5000 RTP/AVP 96\r\nc=IN IP4 10.0.0.3\r\n\
                   m=audio 4000/2 RTP/AVP 8 0\r\nc=IN IP4 10.0.0.2/127\r\na=sendonly\r\n";
        assert_eq!(audio_addr(sdp).unwrap(), a("10.0.0.2:4000"));
        let m = media(sdp).unwrap();
        assert_eq!(m[0].addr, Some("10.0.0.3".parse().unwrap()));
        assert_eq!(m[1].formats, vec![8, 0]);
    }

    #[test]
    fn answer_takes_first_audio_format_and_rejects_the_rest() {
        let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\na=sendonly\r\n\
                   m=audio 20000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
                   m=video 20002 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n";
        let ans = answer(sdp, a("127.0.0.1:41000"), 1).unwrap();
        let m = media(&ans).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!((m[0].port, m[0].formats.as_slice()), (41000, &[0u8][..]));
        assert_eq!(m[0].direction.as_deref(), Some("recvonly"));
        assert_eq!(m[0].rtpmaps, vec!["rtpmap:0 PCMU/8000".to_string()]);
        assert_eq!((m[1].kind.as_str(), m[1].port), ("video", 0));
        assert_eq!(audio_addr(&ans).unwrap(), a("127.0.0.1:41000"));
    }

    #[test]
    fn missing_pieces_are_errors() {
        assert!(audio_addr("v=0\r\nm=audio 4000 RTP/AVP 0\r\n").is_err());
        assert!(audio_addr("v=0\r\nc=IN IP4 1.2.3.4\r\nm=video 4000 RTP/AVP 96\r\n").is_err());
        assert!(audio_addr("v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 0 RTP/AVP 0\r\n").is_err());
        assert!(answer("v=0\r\nm=video 1 RTP/AVP 96\r\n", a("127.0.0.1:1"), 1).is_err());
        assert!(media("garbage").is_err());
    }
}

//! SDP text → [`Sdp`] (RFC 8866 §5, §9).
//!
//! Lenient like browsers: `\n` or `\r\n`, blank lines skipped, unknown attributes and
//! unknown line types kept or ignored. Strict, with a line number, where a wrong value would
//! send media to the wrong place: `v=`, `o=`, `c=`, `m=` and `a=rtpmap`.

use std::net::IpAddr;

use sluice_dataplane::api::Pt;

use super::model::{Attribute, Codec, Direction, Media, MediaKind, Origin, Proto, Sdp};

/// Why an SDP text was refused. The message is shown to API users as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    #[error("SDP is empty")]
    Empty,
    #[error("line {line}: SDP must start with \"v=0\", found {found:?}")]
    MissingVersion { line: usize, found: String },
    #[error("SDP has no m= line (no media)")]
    NoMedia,
    #[error("line {line}: not an SDP line ({reason}): {text:?}")]
    MalformedLine {
        line: usize,
        reason: &'static str,
        text: String,
    },
    #[error("line {line}: malformed o= line: {reason}")]
    MalformedOrigin { line: usize, reason: String },
    #[error("line {line}: malformed c= line: {reason}")]
    MalformedConnection { line: usize, reason: String },
    #[error("line {line}: malformed m= line: {reason}")]
    MalformedMedia { line: usize, reason: String },
    #[error("line {line}: malformed a=rtpmap: {reason}")]
    MalformedRtpmap { line: usize, reason: String },
}

impl Sdp {
    /// Parses an SDP text (RFC 8866 §5).
    pub fn parse(text: &str) -> Result<Sdp, SdpError> {
        if text.trim().is_empty() {
            return Err(SdpError::Empty);
        }
        let mut lines = text
            .split('\n')
            .enumerate()
            .map(|(i, l)| (i + 1, l.trim_end()))
            .filter(|(_, l)| !l.is_empty());

        // RFC 8866 §5.1: the description starts with "v=0".
        match lines.next() {
            Some((_, l)) if l.strip_prefix("v=").map(str::trim) == Some("0") => {}
            Some((line, l)) => {
                return Err(SdpError::MissingVersion {
                    line,
                    found: l.chars().take(40).collect(),
                });
            }
            None => return Err(SdpError::Empty),
        }

        let mut session = SessionBuilder::default();
        let mut media: Vec<MediaBuilder> = Vec::new();
        for (line, l) in lines {
            // RFC 8866 §9: no value holds NUL or CR. A CR inside a line would end it for
            // whoever reads what we write from this value.
            if l.contains(['\r', '\0']) {
                return Err(SdpError::MalformedLine {
                    line,
                    reason: "NUL or CR inside a line",
                    text: l.chars().take(40).collect(),
                });
            }
            let (kind, value) = split_line(line, l)?;
            if kind == 'm' {
                media.push(MediaBuilder::new(parse_media_line(line, value)?));
                continue;
            }
            match media.last_mut() {
                None => session.line(line, kind, value)?,
                Some(m) => m.line(line, kind, value)?,
            }
        }
        if media.is_empty() {
            return Err(SdpError::NoMedia);
        }
        let session_direction = session.direction;
        let mut sdp = session.sdp;
        sdp.media = media
            .into_iter()
            .map(|m| m.finish(session_direction))
            .collect();
        Ok(sdp)
    }
}

/// `<type>=<value>` where type is one letter (RFC 8866 §5).
fn split_line(line: usize, l: &str) -> Result<(char, &str), SdpError> {
    let mut chars = l.chars();
    match (chars.next(), chars.next()) {
        (Some(kind), Some('=')) if kind.is_ascii_alphabetic() => Ok((kind, &l[2..])),
        _ => Err(SdpError::MalformedLine {
            line,
            reason: "expected <letter>=<value>",
            text: l.chars().take(40).collect(),
        }),
    }
}

/// `a=<name>` or `a=<name>:<value>` (RFC 8866 §5.13).
fn split_attribute(value: &str) -> (&str, Option<&str>) {
    match value.split_once(':') {
        Some((name, v)) => (name, Some(v)),
        None => (value, None),
    }
}

/// Values that name a payload type first: `a=fmtp:<pt> <params>`, `a=rtcp-fb:<pt> <fb>`.
fn split_pt(value: &str) -> Option<(Pt, &str)> {
    let (pt, rest) = value.split_once(' ')?;
    let rest = rest.trim();
    if rest.is_empty() {
        return None;
    }
    Some((Pt(pt.parse().ok()?), rest))
}

struct SessionBuilder {
    sdp: Sdp,
    direction: Option<Direction>,
}

impl Default for SessionBuilder {
    fn default() -> Self {
        SessionBuilder {
            sdp: Sdp {
                origin: Origin::default(),
                session_name: "-".to_owned(),
                connection: None,
                attributes: Vec::new(),
                media: Vec::new(),
                ..Default::default()
            },
            direction: None,
        }
    }
}

impl SessionBuilder {
    fn line(&mut self, line: usize, kind: char, value: &str) -> Result<(), SdpError> {
        let sdp = &mut self.sdp;
        match kind {
            'o' => sdp.origin = parse_origin(line, value)?,
            's' => sdp.session_name = value.trim().to_owned(),
            'c' => sdp.connection = Some(parse_connection(line, value)?),
            'a' => {
                let (name, v) = split_attribute(value);
                match (name, v) {
                    ("group", Some(g)) if g.starts_with("BUNDLE ") => {
                        sdp.bundle = g.split_whitespace().skip(1).map(str::to_owned).collect();
                    }
                    ("ice-lite", None) => sdp.ice_lite = true,
                    ("ice-ufrag", Some(v)) if sdp.ice_ufrag.is_none() => {
                        sdp.ice_ufrag = Some(v.to_owned());
                    }
                    ("ice-pwd", Some(v)) if sdp.ice_pwd.is_none() => {
                        sdp.ice_pwd = Some(v.to_owned());
                    }
                    ("fingerprint", Some(v)) if sdp.fingerprint.is_none() => {
                        sdp.fingerprint = Some(v.to_owned());
                    }
                    ("setup", Some(v)) if sdp.setup.is_none() => sdp.setup = Some(v.to_owned()),
                    _ => {
                        // RFC 8866 §6.7: a session-level direction is the default for every
                        // media description; it is also kept verbatim.
                        if let (Some(d), None) = (Direction::parse(name), v) {
                            self.direction = Some(d);
                        }
                        sdp.attributes.push(Attribute::new(name, v));
                    }
                }
            }
            // t=, r=, z=, i=, u=, e=, p=, b=, k= and unknown types: ignored (RFC 8866 §5).
            _ => {}
        }
        Ok(())
    }
}

/// An `a=` line of a media description that may become part of a [`Codec`]; which one
/// depends on `m=` formats, so it is resolved in [`MediaBuilder::finish`].
enum Pending {
    Attribute(Attribute),
    Rtpmap(Codec, Attribute),
    Fmtp(Pt, String, Attribute),
    RtcpFb(Pt, String, Attribute),
}

struct MediaBuilder {
    media: Media,
    has_direction: bool,
    pending: Vec<Pending>,
}

impl MediaBuilder {
    fn new(media: Media) -> Self {
        MediaBuilder {
            media,
            has_direction: false,
            pending: Vec::new(),
        }
    }

    fn line(&mut self, line: usize, kind: char, value: &str) -> Result<(), SdpError> {
        match kind {
            'c' => self.media.connection = Some(parse_connection(line, value)?),
            'a' => self.attribute(line, value)?,
            // i=, b=, k= and unknown types: ignored (RFC 8866 §5).
            _ => {}
        }
        Ok(())
    }

    fn attribute(&mut self, line: usize, value: &str) -> Result<(), SdpError> {
        let m = &mut self.media;
        let (name, v) = split_attribute(value);
        let keep = Attribute::new(name, v);
        match (name, v) {
            ("rtpmap", Some(v)) => {
                let codec = parse_rtpmap(line, v)?;
                self.pending.push(Pending::Rtpmap(codec, keep));
            }
            ("fmtp", Some(v)) => match split_pt(v) {
                Some((pt, p)) => self.pending.push(Pending::Fmtp(pt, p.to_owned(), keep)),
                None => self.pending.push(Pending::Attribute(keep)),
            },
            ("rtcp-fb", Some(v)) => match split_pt(v) {
                Some((pt, fb)) => self.pending.push(Pending::RtcpFb(pt, fb.to_owned(), keep)),
                None => self.pending.push(Pending::Attribute(keep)),
            },
            ("rtcp", Some(v)) if m.rtcp.is_none() && parse_rtcp(v).is_some() => {
                m.rtcp = parse_rtcp(v);
            }
            ("rtcp-mux", None) => m.rtcp_mux = true,
            ("mid", Some(v)) if m.mid.is_none() => {
                // RFC 5888 §4: a token. BUNDLE groups list mids separated by spaces.
                if v.is_empty() || !v.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(SdpError::MalformedLine {
                        line,
                        reason: "a=mid must be a token",
                        text: value.chars().take(40).collect(),
                    });
                }
                m.mid = Some(v.to_owned());
            }
            ("ice-ufrag", Some(v)) if m.ice_ufrag.is_none() => m.ice_ufrag = Some(v.to_owned()),
            ("ice-pwd", Some(v)) if m.ice_pwd.is_none() => m.ice_pwd = Some(v.to_owned()),
            ("fingerprint", Some(v)) if m.fingerprint.is_none() => {
                m.fingerprint = Some(v.to_owned());
            }
            ("setup", Some(v)) if m.setup.is_none() => m.setup = Some(v.to_owned()),
            ("candidate", Some(v)) => m.candidates.push(v.to_owned()),
            ("end-of-candidates", None) => m.end_of_candidates = true,
            ("ssrc", Some(v)) => m.ssrcs.push(v.to_owned()),
            ("extmap", Some(v)) => m.extmaps.push(v.to_owned()),
            (name, None) if !self.has_direction && Direction::parse(name).is_some() => {
                m.direction = Direction::parse(name).unwrap_or_default();
                self.has_direction = true;
            }
            _ => self.pending.push(Pending::Attribute(keep)),
        }
        Ok(())
    }

    /// Builds one codec per RTP payload type of `m=`, in its order (RFC 8866 §6.6); the
    /// static ones of RFC 3551 §6 need no rtpmap. Lines that match no codec stay verbatim.
    fn finish(mut self, session_direction: Option<Direction>) -> Media {
        let m = &mut self.media;
        if !self.has_direction {
            m.direction = session_direction.unwrap_or_default();
        }
        let mut used = vec![false; self.pending.len()];
        if m.proto.is_rtp() {
            for format in &m.formats {
                let Ok(pt) = format.parse().map(Pt) else {
                    continue;
                };
                if m.codecs.iter().any(|c| c.pt == pt) {
                    continue;
                }
                let mapped = self.pending.iter().enumerate().find_map(|(i, p)| match p {
                    Pending::Rtpmap(c, _) if c.pt == pt && !used[i] => Some((i, c)),
                    _ => None,
                });
                if let Some((i, codec)) = mapped {
                    used[i] = true;
                    m.codecs.push(codec.clone());
                } else if let Some(codec) = Codec::from_static(pt) {
                    m.codecs.push(codec);
                }
            }
        }
        for (p, used) in self.pending.into_iter().zip(used) {
            let attribute = match p {
                Pending::Attribute(a) => a,
                Pending::Rtpmap(..) if used => continue,
                Pending::Rtpmap(_, a) => a,
                Pending::Fmtp(pt, fmtp, a) => {
                    match m.codecs.iter_mut().find(|c| c.pt == pt && c.fmtp.is_none()) {
                        Some(c) => {
                            c.fmtp = Some(fmtp);
                            continue;
                        }
                        None => a,
                    }
                }
                Pending::RtcpFb(pt, fb, a) => match m.codecs.iter_mut().find(|c| c.pt == pt) {
                    Some(c) => {
                        c.rtcp_fb.push(fb);
                        continue;
                    }
                    None => a,
                },
            };
            m.attributes.push(attribute);
        }
        self.media
    }
}

/// `o=<username> <sess-id> <sess-version> <nettype> <addrtype> <unicast-address>`
/// (RFC 8866 §5.2).
fn parse_origin(line: usize, value: &str) -> Result<Origin, SdpError> {
    let fields: Vec<&str> = value.split_whitespace().collect();
    let err = |reason: String| SdpError::MalformedOrigin { line, reason };
    let [username, id, version, _nettype, _addrtype, addr] = fields[..] else {
        return Err(err(format!("expected 6 fields, found {}", fields.len())));
    };
    let number = |field: &str, what: &str| {
        field
            .parse::<u64>()
            .map_err(|_| err(format!("{what} {field:?} is not a number")))
    };
    Ok(Origin {
        username: username.to_owned(),
        session_id: number(id, "session id")?,
        session_version: number(version, "session version")?,
        addr: addr.to_owned(),
    })
}

/// `c=IN IP4 <address>[/<ttl>][/<count>]` (RFC 8866 §5.7). Multicast TTL and counts are
/// dropped: the server forwards unicast only.
fn parse_connection(line: usize, value: &str) -> Result<IpAddr, SdpError> {
    let err = |reason: String| SdpError::MalformedConnection { line, reason };
    let fields: Vec<&str> = value.split_whitespace().collect();
    let [nettype, addrtype, addr] = fields[..] else {
        return Err(err(format!(
            "expected \"IN IP4 <address>\", found {} fields",
            fields.len()
        )));
    };
    if nettype != "IN" {
        return Err(err(format!("network type {nettype:?} is not IN")));
    }
    let addr = addr.split('/').next().unwrap_or(addr);
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| err(format!("{addr:?} is not an IP address")))?;
    match (addrtype, ip) {
        ("IP4", IpAddr::V4(_)) | ("IP6", IpAddr::V6(_)) => Ok(ip),
        _ => Err(err(format!(
            "address type {addrtype:?} does not match {addr:?}"
        ))),
    }
}

/// `m=<media> <port>[/<count>] <proto> <fmt> ...` (RFC 8866 §5.14).
fn parse_media_line(line: usize, value: &str) -> Result<Media, SdpError> {
    let err = |reason: String| SdpError::MalformedMedia { line, reason };
    let fields: Vec<&str> = value.split_whitespace().collect();
    let [kind, port, proto, formats @ ..] = &fields[..] else {
        return Err(err(format!(
            "expected \"<media> <port> <proto> <format>...\", found {} fields",
            fields.len()
        )));
    };
    if formats.is_empty() {
        return Err(err("no format after the protocol".to_owned()));
    }
    let port_text = port.split('/').next().unwrap_or(port);
    let port: u16 = port_text.parse().map_err(|_| {
        err(format!(
            "port {port_text:?} is not a number from 0 to 65535"
        ))
    })?;
    let mut media = Media::new(MediaKind::parse(kind), port, Proto::parse(proto));
    media.formats = formats.iter().map(|f| (*f).to_owned()).collect();
    Ok(media)
}

/// `a=rtpmap:<pt> <encoding name>/<clock rate>[/<channels>]` (RFC 8866 §6.6).
fn parse_rtpmap(line: usize, value: &str) -> Result<Codec, SdpError> {
    let err = |reason: String| SdpError::MalformedRtpmap { line, reason };
    let Some((pt, encoding)) = value.split_once(' ') else {
        return Err(err(format!(
            "expected \"<payload type> <name>/<clock rate>\", found {value:?}"
        )));
    };
    let pt: u8 = pt
        .parse()
        .map_err(|_| err(format!("payload type {pt:?} is not a number from 0 to 255")))?;
    let mut parts = encoding.trim().split('/');
    let name = parts.next().unwrap_or_default();
    if name.is_empty() {
        return Err(err("empty encoding name".to_owned()));
    }
    let Some(rate) = parts.next() else {
        return Err(err(format!("no clock rate after {name:?}")));
    };
    let clock_rate: u32 = rate
        .parse()
        .map_err(|_| err(format!("clock rate {rate:?} is not a number")))?;
    let channels = match parts.next() {
        None => None,
        Some(ch) => Some(
            ch.parse::<u8>()
                .map_err(|_| err(format!("channel count {ch:?} is not a number")))?,
        ),
    };
    if parts.next().is_some() {
        return Err(err(format!("too many '/' fields in {encoding:?}")));
    }
    Ok(Codec::new(Pt(pt), name, clock_rate, channels))
}

/// `a=rtcp:<port> [IN IP4 <address>]` (RFC 3605 §2.1). `None` when malformed: the line is
/// then kept verbatim and RTCP goes to RTP port + 1.
fn parse_rtcp(value: &str) -> Option<(u16, Option<IpAddr>)> {
    let fields: Vec<&str> = value.split_whitespace().collect();
    match fields[..] {
        [port] => Some((port.parse().ok()?, None)),
        [port, "IN", "IP4" | "IP6", addr] => Some((port.parse().ok()?, Some(addr.parse().ok()?))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "v=0\r\no=- 1 2 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\n\
        t=0 0\r\nm=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n\
        a=fmtp:101 0-16\r\n";

    #[test]
    fn parses_crlf_and_lf_alike() {
        let crlf = Sdp::parse(MINIMAL).expect("valid");
        let lf = Sdp::parse(&MINIMAL.replace("\r\n", "\n")).expect("valid");
        assert_eq!(crlf, lf);
        assert_eq!(crlf.origin.session_id, 1);
        assert_eq!(crlf.origin.session_version, 2);
        assert_eq!(crlf.connection, Some("192.0.2.1".parse().expect("valid")));
    }

    #[test]
    fn static_payload_types_get_codecs_without_rtpmap() {
        let sdp = Sdp::parse(MINIMAL).expect("valid");
        let names: Vec<(Pt, &str)> = sdp.media[0]
            .codecs
            .iter()
            .map(|c| (c.pt, c.name.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                (Pt(0), "PCMU"),
                (Pt(8), "PCMA"),
                (Pt(101), "telephone-event")
            ]
        );
        assert_eq!(sdp.media[0].codecs[2].fmtp.as_deref(), Some("0-16"));
    }

    #[test]
    fn empty_input_is_an_error() {
        assert_eq!(Sdp::parse(""), Err(SdpError::Empty));
        assert_eq!(Sdp::parse(" \r\n\n"), Err(SdpError::Empty));
    }

    #[test]
    fn missing_version_names_the_line() {
        let err = Sdp::parse("o=- 1 2 IN IP4 192.0.2.1\nm=audio 1 RTP/AVP 0\n").unwrap_err();
        assert!(matches!(err, SdpError::MissingVersion { line: 1, .. }));
        assert!(err.to_string().contains("v=0"), "{err}");
    }

    #[test]
    fn no_media_is_an_error() {
        let err = Sdp::parse("v=0\no=- 1 2 IN IP4 192.0.2.1\ns=-\nt=0 0\n").unwrap_err();
        assert_eq!(err, SdpError::NoMedia);
    }

    #[test]
    fn media_line_with_bad_port_reports_line_and_port() {
        let err = Sdp::parse("v=0\ns=-\nm=audio abc RTP/AVP 0\n").unwrap_err();
        assert!(matches!(err, SdpError::MalformedMedia { line: 3, .. }));
        assert!(err.to_string().contains("\"abc\""), "{err}");
        let err = Sdp::parse("v=0\ns=-\nm=audio 70000 RTP/AVP 0\n").unwrap_err();
        assert!(matches!(err, SdpError::MalformedMedia { line: 3, .. }));
    }

    #[test]
    fn media_line_with_too_few_fields_is_an_error() {
        let err = Sdp::parse("v=0\ns=-\nm=audio 4000 RTP/AVP\n").unwrap_err();
        assert!(matches!(err, SdpError::MalformedMedia { line: 3, .. }));
        let err = Sdp::parse("v=0\ns=-\nm=audio\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 3: malformed m= line: expected \"<media> <port> <proto> <format>...\", \
             found 1 fields"
        );
    }

    #[test]
    fn bad_connection_is_an_error() {
        for c in [
            "c=IN IP4",
            "c=IN IP4 nowhere",
            "c=XX IP4 1.2.3.4",
            "c=IN IP6 1.2.3.4",
        ] {
            let text = format!("v=0\ns=-\n{c}\nm=audio 1 RTP/AVP 0\n");
            let err = Sdp::parse(&text).unwrap_err();
            assert!(
                matches!(err, SdpError::MalformedConnection { line: 3, .. }),
                "{c}: {err}"
            );
        }
    }

    #[test]
    fn multicast_ttl_is_dropped_from_connection() {
        let sdp =
            Sdp::parse("v=0\ns=-\nc=IN IP4 233.252.0.1/127\nm=audio 1 RTP/AVP 0\n").expect("valid");
        assert_eq!(sdp.connection, Some("233.252.0.1".parse().expect("valid")));
    }

    #[test]
    fn bad_rtpmap_is_an_error() {
        for a in [
            "a=rtpmap:x PCMU/8000",
            "a=rtpmap:96",
            "a=rtpmap:96 opus",
            "a=rtpmap:96 opus/fast",
            "a=rtpmap:96 opus/48000/two",
            "a=rtpmap:96 /48000",
        ] {
            let text = format!("v=0\ns=-\nm=audio 1 RTP/AVP 96\n{a}\n");
            let err = Sdp::parse(&text).unwrap_err();
            assert!(
                matches!(err, SdpError::MalformedRtpmap { line: 4, .. }),
                "{a}: {err}"
            );
        }
    }

    /// Found by the `sdp` fuzz target: a mid with a CR, NULs and spaces parsed, and the answer's
    /// `a=group:BUNDLE` (mids separated by spaces) read back as other mids.
    #[test]
    fn mid_must_be_a_token() {
        let offer = "v=0\r\ns=-\r\na=group:BUNDLE 0 1\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n";
        for mid in [
            "0\r\0\0p:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
            "0 1",
            "",
            "0\t1",
        ] {
            let text = format!("{offer}a=mid:{mid}\r\n");
            let err = Sdp::parse(&text).unwrap_err();
            assert!(
                matches!(err, SdpError::MalformedLine { line: 5, .. }),
                "{mid:?}: {err}"
            );
        }
        let sdp = Sdp::parse(&format!("{offer}a=mid:audio-0\r\n")).expect("a token");
        assert_eq!(sdp.media[0].mid.as_deref(), Some("audio-0"));
    }

    #[test]
    fn nul_or_cr_inside_a_line_is_an_error() {
        for line in ["s=a\rb", "a=x-free:a\0b", "a=ice-ufrag:ab\rc"] {
            let text = format!("v=0\n{line}\nm=audio 1 RTP/AVP 0\n");
            let err = Sdp::parse(&text).unwrap_err();
            assert!(
                matches!(err, SdpError::MalformedLine { line: 2, .. }),
                "{line:?}: {err}"
            );
        }
        // A CR ending a line is its CRLF.
        Sdp::parse("v=0\r\ns=-\r\nm=audio 1 RTP/AVP 0\r\n").expect("CRLF lines");
    }

    #[test]
    fn garbage_line_is_an_error() {
        let err = Sdp::parse("v=0\nhello\nm=audio 1 RTP/AVP 0\n").unwrap_err();
        assert!(matches!(err, SdpError::MalformedLine { line: 2, .. }));
    }

    #[test]
    fn unknown_attributes_are_kept_in_order() {
        let text = "v=0\ns=-\na=msid-semantic: WMS\na=extmap-allow-mixed\n\
            m=video 1 RTP/AVP 96\na=x-google-flag:conference\na=rtpmap:96 VP8/90000\n\
            a=rtcp-fb:* nack\na=fmtp:97 apt=96\na=rtcp-rsize\n";
        let sdp = Sdp::parse(text).expect("valid");
        assert_eq!(
            sdp.attributes,
            [
                Attribute::new("msid-semantic", Some(" WMS")),
                Attribute::new("extmap-allow-mixed", None)
            ]
        );
        assert_eq!(
            sdp.media[0].attributes,
            [
                Attribute::new("x-google-flag", Some("conference")),
                Attribute::new("rtcp-fb", Some("* nack")),
                Attribute::new("fmtp", Some("97 apt=96")),
                Attribute::new("rtcp-rsize", None),
            ]
        );
    }

    #[test]
    fn dynamic_payload_type_without_rtpmap_has_no_codec() {
        let sdp = Sdp::parse("v=0\ns=-\nm=video 1 RTP/AVP 96 34\n").expect("valid");
        let pts: Vec<Pt> = sdp.media[0].codecs.iter().map(|c| c.pt).collect();
        assert_eq!(pts, [Pt(34)]);
    }

    #[test]
    fn session_direction_applies_to_media_without_one() {
        let text = "v=0\ns=-\na=sendonly\nm=audio 1 RTP/AVP 0\nm=audio 2 RTP/AVP 0\na=inactive\n";
        let sdp = Sdp::parse(text).expect("valid");
        assert_eq!(sdp.media[0].direction, Direction::SendOnly);
        assert_eq!(sdp.media[1].direction, Direction::Inactive);
    }

    #[test]
    fn rtcp_attribute_with_address_is_typed() {
        let text = "v=0\ns=-\nm=audio 1 RTP/AVP 0\na=rtcp:53020 IN IP4 192.0.2.4\n";
        let sdp = Sdp::parse(text).expect("valid");
        assert_eq!(
            sdp.media[0].rtcp,
            Some((53020, Some("192.0.2.4".parse().expect("valid"))))
        );
    }

    #[test]
    fn non_rtp_formats_are_not_payload_types() {
        let text = "v=0\ns=-\nm=application 9 UDP/DTLS/SCTP 0\na=sctp-port:5000\n";
        let sdp = Sdp::parse(text).expect("valid");
        assert!(sdp.media[0].codecs.is_empty());
    }
}

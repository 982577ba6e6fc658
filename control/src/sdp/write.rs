//! [`Sdp`] → SDP text, `\r\n` line endings, lines in the order of RFC 8866 §5.

use std::fmt::{self, Write};
use std::net::IpAddr;

use super::model::{Attribute, Codec, Media, Sdp};

impl fmt::Display for Sdp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // RFC 8866 §5: v, o, s, (i, u, e, p), c, (b), t, (r, z), (k), a, then media.
        f.write_str("v=0\r\n")?;
        let o = &self.origin;
        let addrtype = if o.addr.contains(':') { "IP6" } else { "IP4" };
        write!(
            f,
            "o={} {} {} IN {addrtype} {}\r\n",
            o.username, o.session_id, o.session_version, o.addr
        )?;
        // RFC 8866 §5.3: an empty session name is written as a single space.
        let name = if self.session_name.is_empty() {
            " "
        } else {
            &self.session_name
        };
        write!(f, "s={name}\r\n")?;
        if let Some(ip) = self.connection {
            connection(f, ip)?;
        }
        f.write_str("t=0 0\r\n")?;
        if !self.bundle.is_empty() {
            write!(f, "a=group:BUNDLE {}\r\n", self.bundle.join(" "))?;
        }
        if self.ice_lite {
            f.write_str("a=ice-lite\r\n")?;
        }
        value(f, "ice-ufrag", self.ice_ufrag.as_deref())?;
        value(f, "ice-pwd", self.ice_pwd.as_deref())?;
        value(f, "fingerprint", self.fingerprint.as_deref())?;
        value(f, "setup", self.setup.as_deref())?;
        for a in &self.attributes {
            attribute(f, a)?;
        }
        for m in &self.media {
            media(f, m)?;
        }
        Ok(())
    }
}

fn media(f: &mut fmt::Formatter<'_>, m: &Media) -> fmt::Result {
    write!(f, "m={} {} {}", m.kind, m.port, m.proto)?;
    for format in &m.formats {
        write!(f, " {format}")?;
    }
    f.write_str("\r\n")?;
    if let Some(ip) = m.connection {
        connection(f, ip)?;
    }
    value(f, "mid", m.mid.as_deref())?;
    write!(f, "a={}\r\n", m.direction)?;
    value(f, "ice-ufrag", m.ice_ufrag.as_deref())?;
    value(f, "ice-pwd", m.ice_pwd.as_deref())?;
    value(f, "fingerprint", m.fingerprint.as_deref())?;
    value(f, "setup", m.setup.as_deref())?;
    for e in &m.extmaps {
        write!(f, "a=extmap:{e}\r\n")?;
    }
    match m.rtcp {
        Some((port, None)) => write!(f, "a=rtcp:{port}\r\n")?,
        Some((port, Some(ip))) => write!(f, "a=rtcp:{port} IN {} {ip}\r\n", addrtype(ip))?,
        None => {}
    }
    if m.rtcp_mux {
        f.write_str("a=rtcp-mux\r\n")?;
    }
    for c in &m.codecs {
        codec(f, c)?;
    }
    for a in &m.attributes {
        attribute(f, a)?;
    }
    for s in &m.ssrcs {
        write!(f, "a=ssrc:{s}\r\n")?;
    }
    for c in &m.candidates {
        write!(f, "a=candidate:{c}\r\n")?;
    }
    if m.end_of_candidates {
        f.write_str("a=end-of-candidates\r\n")?;
    }
    Ok(())
}

/// `a=rtpmap` (RFC 8866 §6.6), `a=fmtp` (§6.15), `a=rtcp-fb` (RFC 4585 §4.2).
fn codec(f: &mut fmt::Formatter<'_>, c: &Codec) -> fmt::Result {
    write!(f, "a=rtpmap:{} {}/{}", c.pt.0, c.name, c.clock_rate)?;
    if let Some(ch) = c.channels {
        write!(f, "/{ch}")?;
    }
    f.write_str("\r\n")?;
    if let Some(fmtp) = &c.fmtp {
        write!(f, "a=fmtp:{} {fmtp}\r\n", c.pt.0)?;
    }
    for fb in &c.rtcp_fb {
        write!(f, "a=rtcp-fb:{} {fb}\r\n", c.pt.0)?;
    }
    Ok(())
}

fn connection(f: &mut fmt::Formatter<'_>, ip: IpAddr) -> fmt::Result {
    write!(f, "c=IN {} {ip}\r\n", addrtype(ip))
}

fn addrtype(ip: IpAddr) -> &'static str {
    match ip {
        IpAddr::V4(_) => "IP4",
        IpAddr::V6(_) => "IP6",
    }
}

fn value(f: &mut fmt::Formatter<'_>, name: &str, v: Option<&str>) -> fmt::Result {
    match v {
        Some(v) => write!(f, "a={name}:{v}\r\n"),
        None => Ok(()),
    }
}

fn attribute(f: &mut fmt::Formatter<'_>, a: &Attribute) -> fmt::Result {
    f.write_str("a=")?;
    f.write_str(&a.name)?;
    if let Some(v) = &a.value {
        f.write_char(':')?;
        f.write_str(v)?;
    }
    f.write_str("\r\n")
}

#[cfg(test)]
mod tests {
    use super::super::model::{Direction, MediaKind, Origin, Proto};
    use super::*;
    use sluice_dataplane::api::Pt;

    fn sample() -> Sdp {
        let mut audio = Media::new(MediaKind::Audio, 4000, Proto::RtpAvp);
        audio.formats = vec!["0".into(), "101".into()];
        audio.codecs = vec![Codec::new(Pt(0), "PCMU", 8000, None), {
            let mut c = Codec::new(Pt(101), "telephone-event", 8000, None);
            c.fmtp = Some("0-16".into());
            c
        }];
        audio.rtcp = Some((4001, None));
        audio.direction = Direction::SendOnly;
        audio.mid = Some("a".into());
        Sdp {
            origin: Origin {
                username: "-".into(),
                session_id: 7,
                session_version: 8,
                addr: "2001:db8::1".into(),
            },
            session_name: String::new(),
            connection: Some("2001:db8::1".parse().expect("valid")),
            attributes: vec![Attribute::new("tool", Some("sluice"))],
            media: vec![audio],
            ..Default::default()
        }
    }

    #[test]
    fn writes_rfc_order_with_crlf() {
        let text = sample().to_string();
        assert_eq!(
            text,
            "v=0\r\no=- 7 8 IN IP6 2001:db8::1\r\ns= \r\nc=IN IP6 2001:db8::1\r\nt=0 0\r\n\
             a=tool:sluice\r\nm=audio 4000 RTP/AVP 0 101\r\na=mid:a\r\na=sendonly\r\n\
             a=rtcp:4001\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
             a=fmtp:101 0-16\r\n"
        );
    }

    #[test]
    fn written_text_parses_back_to_the_same_value() {
        let sdp = sample();
        assert_eq!(Sdp::parse(&sdp.to_string()), Ok(sdp));
    }
}

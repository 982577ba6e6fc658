//! rtpengine's NG control protocol: one UDP datagram per request, `COOKIE SP bencode-dict`,
//! answered by `COOKIE SP bencode-dict` with `result` = `ok` (or `error` + `error-reason`).
//! loadgen needs `ping`, `offer`, `answer` and `delete`, so this is a minimal bencode (byte
//! strings, integers, lists, dictionaries) and a blocking client with bounded retries.

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};

/// One attempt's wait for the reply; a lost datagram is retried with the same cookie, which
/// rtpengine answers from its cookie cache instead of executing the command twice.
const ATTEMPT: Duration = Duration::from_millis(500);
/// Upper bound on one request, retries included.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A bencoded value. Dictionary keys are byte strings, kept sorted as bencode requires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bencode {
    Int(i64),
    Bytes(Vec<u8>),
    List(Vec<Bencode>),
    Dict(BTreeMap<Vec<u8>, Bencode>),
}

impl Bencode {
    pub fn str(s: &str) -> Bencode {
        Bencode::Bytes(s.as_bytes().to_vec())
    }

    /// A dictionary of string values.
    pub fn dict<'a>(pairs: impl IntoIterator<Item = (&'a str, Bencode)>) -> Bencode {
        Bencode::Dict(
            pairs
                .into_iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v))
                .collect(),
        )
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Bencode::Int(i) => out.extend_from_slice(format!("i{i}e").as_bytes()),
            Bencode::Bytes(b) => {
                out.extend_from_slice(format!("{}:", b.len()).as_bytes());
                out.extend_from_slice(b);
            }
            Bencode::List(items) => {
                out.push(b'l');
                items.iter().for_each(|i| i.encode(out));
                out.push(b'e');
            }
            Bencode::Dict(map) => {
                out.push(b'd');
                for (k, v) in map {
                    Bencode::Bytes(k.clone()).encode(out);
                    v.encode(out);
                }
                out.push(b'e');
            }
        }
    }

    /// Decodes one value that must span all of `input`.
    pub fn decode(input: &[u8]) -> anyhow::Result<Bencode> {
        let (v, rest) = Self::decode_prefix(input, 0)?;
        if !rest.is_empty() {
            bail!("{} bytes after the bencoded value", rest.len());
        }
        Ok(v)
    }

    fn decode_prefix(input: &[u8], depth: usize) -> anyhow::Result<(Bencode, &[u8])> {
        if depth > 32 {
            bail!("bencode nested too deeply");
        }
        match input.first() {
            Some(b'i') => {
                let end = input
                    .iter()
                    .position(|&c| c == b'e')
                    .context("unterminated integer")?;
                let n = std::str::from_utf8(&input[1..end])?
                    .parse()
                    .context("bad integer")?;
                Ok((Bencode::Int(n), &input[end + 1..]))
            }
            Some(b'l') => {
                let mut rest = &input[1..];
                let mut items = Vec::new();
                while rest.first() != Some(&b'e') {
                    let (v, r) = Self::decode_prefix(rest, depth + 1)?;
                    items.push(v);
                    rest = r;
                }
                Ok((Bencode::List(items), &rest[1..]))
            }
            Some(b'd') => {
                let mut rest = &input[1..];
                let mut map = BTreeMap::new();
                while rest.first() != Some(&b'e') {
                    let (k, r) = Self::decode_prefix(rest, depth + 1)?;
                    let Bencode::Bytes(k) = k else {
                        bail!("dictionary key is not a string");
                    };
                    let (v, r) = Self::decode_prefix(r, depth + 1)?;
                    map.insert(k, v);
                    rest = r;
                }
                Ok((Bencode::Dict(map), &rest[1..]))
            }
            Some(c) if c.is_ascii_digit() => {
                let colon = input
                    .iter()
                    .position(|&c| c == b':')
                    .context("string without length")?;
                let len: usize = std::str::from_utf8(&input[..colon])?
                    .parse()
                    .context("bad string length")?;
                let body = input
                    .get(colon + 1..colon + 1 + len)
                    .context("string shorter than its length")?;
                Ok((Bencode::Bytes(body.to_vec()), &input[colon + 1 + len..]))
            }
            Some(c) => bail!("unexpected byte {c:#04x} in bencode"),
            None => bail!("bencode ends early"),
        }
    }

    /// The string value under `key` of a dictionary.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        match self {
            Bencode::Dict(map) => match map.get(key.as_bytes())? {
                Bencode::Bytes(b) => std::str::from_utf8(b).ok(),
                _ => None,
            },
            _ => None,
        }
    }
}

/// A blocking NG client over one UDP socket.
pub struct NgClient {
    sock: UdpSocket,
    server: SocketAddr,
    next_cookie: u64,
}

impl NgClient {
    pub fn connect(server: SocketAddr) -> anyhow::Result<NgClient> {
        let sock = UdpSocket::bind(SocketAddr::new(server.ip(), 0))?;
        sock.set_read_timeout(Some(ATTEMPT))?;
        Ok(NgClient {
            sock,
            server,
            next_cookie: u64::from(std::process::id()) << 32,
        })
    }

    /// Sends `command` with `fields`, returns the reply dictionary of a `result: ok`.
    pub fn request(
        &mut self,
        command: &str,
        fields: impl IntoIterator<Item = (&'static str, Bencode)>,
    ) -> anyhow::Result<Bencode> {
        self.next_cookie += 1;
        let cookie = format!("{:x}", self.next_cookie);
        let mut msg = format!("{cookie} ").into_bytes();
        let mut dict: Vec<(&str, Bencode)> = fields.into_iter().collect();
        dict.push(("command", Bencode::str(command)));
        Bencode::dict(dict).encode(&mut msg);
        let deadline = Instant::now() + TIMEOUT;
        let mut buf = vec![0u8; 65_536];
        while Instant::now() < deadline {
            self.sock.send_to(&msg, self.server)?;
            let sent = Instant::now();
            while sent.elapsed() < ATTEMPT {
                let n = match self.sock.recv(&mut buf) {
                    Ok(n) => n,
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        break;
                    }
                    Err(e) => return Err(e.into()),
                };
                let reply = &buf[..n];
                let Some(body) = reply
                    .strip_prefix(cookie.as_bytes())
                    .and_then(|r| r.strip_prefix(b" "))
                else {
                    continue; // a late reply to an earlier cookie
                };
                let v = Bencode::decode(body).context("decoding an NG reply")?;
                return match v.get_str("result") {
                    Some("ok" | "pong") => Ok(v),
                    Some(other) => Err(anyhow!(
                        "rtpengine {command}: {other}: {}",
                        v.get_str("error-reason").unwrap_or("no reason given")
                    )),
                    None => Err(anyhow!("rtpengine {command}: reply without result")),
                };
            }
        }
        bail!(
            "rtpengine {command}: no reply from {} within {TIMEOUT:?}",
            self.server
        )
    }

    pub fn ping(&mut self) -> anyhow::Result<()> {
        self.request("ping", []).map(drop)
    }

    /// `offer` from the caller (`from-tag`) with its SDP; returns the SDP for the callee.
    pub fn offer(&mut self, call_id: &str, from_tag: &str, sdp: &str) -> anyhow::Result<String> {
        let v = self.request(
            "offer",
            [
                ("call-id", Bencode::str(call_id)),
                ("from-tag", Bencode::str(from_tag)),
                ("sdp", Bencode::str(sdp)),
            ],
        )?;
        v.get_str("sdp")
            .map(str::to_string)
            .context("offer reply without sdp")
    }

    /// `answer` from the callee (`to-tag`) with its SDP; returns the SDP for the caller.
    pub fn answer(
        &mut self,
        call_id: &str,
        from_tag: &str,
        to_tag: &str,
        sdp: &str,
    ) -> anyhow::Result<String> {
        let v = self.request(
            "answer",
            [
                ("call-id", Bencode::str(call_id)),
                ("from-tag", Bencode::str(from_tag)),
                ("to-tag", Bencode::str(to_tag)),
                ("sdp", Bencode::str(sdp)),
            ],
        )?;
        v.get_str("sdp")
            .map(str::to_string)
            .context("answer reply without sdp")
    }

    pub fn delete(&mut self, call_id: &str) -> anyhow::Result<()> {
        self.request(
            "delete",
            [
                ("call-id", Bencode::str(call_id)),
                ("delete delay", Bencode::Int(0)),
            ],
        )
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bencode_round_trips_nested_values() {
        let v = Bencode::dict([
            ("command", Bencode::str("offer")),
            (
                "flags",
                Bencode::List(vec![Bencode::str("a"), Bencode::Int(-3)]),
            ),
            ("sdp", Bencode::str("v=0\r\n")),
        ]);
        let mut out = Vec::new();
        v.encode(&mut out);
        assert_eq!(
            out,
            b"d7:command5:offer5:flagsl1:ai-3ee3:sdp5:v=0\r\ne".to_vec()
        );
        assert_eq!(Bencode::decode(&out).unwrap(), v);
        assert_eq!(v.get_str("command"), Some("offer"));
        assert_eq!(v.get_str("flags"), None);
    }

    #[test]
    fn broken_bencode_is_an_error() {
        for bad in [
            &b"d3:abc"[..],
            b"5:ab",
            b"i12",
            b"x",
            b"",
            b"d1:ae",
            b"i1ei2e",
        ] {
            assert!(Bencode::decode(bad).is_err(), "{:?}", bad);
        }
    }

    #[test]
    fn client_retries_and_matches_its_cookie() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            // Drop the first attempt, answer the retry after a stray reply.
            let (_, _) = server.recv_from(&mut buf).unwrap();
            let (n, from) = server.recv_from(&mut buf).unwrap();
            let msg = &buf[..n];
            let sp = msg.iter().position(|&c| c == b' ').unwrap();
            let cookie = &msg[..sp];
            let req = Bencode::decode(&msg[sp + 1..]).unwrap();
            assert_eq!(req.get_str("command"), Some("ping"));
            server.send_to(b"stale d6:result4:ponge", from).unwrap();
            let mut reply = cookie.to_vec();
            reply.extend_from_slice(b" d6:result4:ponge");
            server.send_to(&reply, from).unwrap();
        });
        NgClient::connect(addr).unwrap().ping().unwrap();
        t.join().unwrap();
    }
}

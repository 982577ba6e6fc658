//! SRTP keyed by SDES (RFC 4568) for plain-RTP peers, e.g. SIP phones: an `RTP/SAVP` offer with
//! `a=crypto` gets an `RTP/SAVP` answer with the server's own key of the same suite, and media
//! both ways is SRTP. The test peer protects and unprotects with the data plane's SRTP (the
//! RFC 3711 / RFC 7714 implementation the SRTP test vectors check).

use serde_json::json;
use sluice_dataplane::srtp::{MasterKey, Profile, SrtpContext};
use sluice_tests::*;

/// An offer for one PCMU m-line at `port`, secured with `crypto` lines.
fn savp_offer(port: u16, crypto: &[&str]) -> String {
    let mut sdp = format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\na=rtcp-mux\r\na=sendrecv\r\n"
    );
    for c in crypto {
        sdp.push_str(&format!("a=crypto:{c}\r\n"));
    }
    sdp
}

/// The key of the answer's `a=crypto` line (tag, suite, key||salt).
fn answer_key(answer: &str) -> (u32, String, Vec<u8>) {
    let line = answer
        .lines()
        .find_map(|l| l.strip_prefix("a=crypto:"))
        .unwrap_or_else(|| panic!("no a=crypto in {answer}"));
    let f: Vec<&str> = line.split_whitespace().collect();
    let inline = f[2].strip_prefix("inline:").expect("inline key");
    let b64 = inline.split('|').next().expect("key");
    (
        f[0].parse().expect("tag"),
        f[1].to_string(),
        decode_base64(b64),
    )
}

fn decode_base64(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::new();
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= val(c) << (18 - 6 * i);
        }
        for i in 0..chunk.len().saturating_sub(1) {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

fn encode_base64(b: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &c)| n | u32::from(c) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn master(profile: Profile, key_salt: &[u8]) -> MasterKey {
    let (k, s) = key_salt.split_at(profile.key_len());
    MasterKey::new(profile, k, s).expect("a master key")
}

fn sdes_echo(server: &Server, profile: Profile, suite: &str) {
    let mut c = server.client();
    let peer = Peer::new();
    let ours: Vec<u8> = (0..(profile.key_len() + profile.salt_len()) as u8)
        .map(|i| i.wrapping_mul(37).wrapping_add(11))
        .collect();
    // An unusable line first (an MKI): the server takes the next one.
    let crypto = [
        format!("1 {suite} inline:{}|2^20|1:4", encode_base64(&ours)),
        format!("2 {suite} inline:{}", encode_base64(&ours)),
    ];
    let offer = savp_offer(peer.port(), &[&crypto[0], &crypto[1]]);
    let reply = c
        .session(
            "create",
            json!({"type": "echo", "offer": {"sdp": offer, "sdp_type": "rtp"}}),
        )
        .expect("create an SDES echo");
    let answer = sdp_in(&reply, "answer");
    assert!(answer.contains("RTP/SAVP 0"), "secure answer: {answer}");
    let (tag, answered_suite, theirs) = answer_key(&answer);
    assert_eq!((tag, answered_suite.as_str()), (2, suite), "{answer}");
    assert_ne!(theirs, ours, "the server's own key");

    let mut tx = SrtpContext::new(&master(profile, &ours)).expect("our context");
    let mut rx = SrtpContext::new(&master(profile, &theirs)).expect("the server's context");
    let to = server_addr(&answer, 0);
    for seq in 0..20u16 {
        let plain = Rtp::new(
            0,
            500 + seq,
            u32::from(seq) * 160,
            0x5de5,
            &[seq as u8; 160],
        );
        let bytes = plain.to_bytes();
        let mut buf = vec![0u8; bytes.len() + 64];
        buf[..bytes.len()].copy_from_slice(&bytes);
        let n = tx.protect_rtp(&mut buf, bytes.len()).expect("protect");
        peer.send(to, &buf[..n]);
        let (mut got, _) = peer.recv().expect("an echoed packet");
        assert_ne!(&got[12..], &bytes[12..], "encrypted on the wire");
        let n = rx
            .unprotect_rtp(&mut got)
            .expect("the echo is SRTP under the server's key");
        assert_eq!(&got[..n], &bytes[..], "echoed intact");
    }
    let id = str_of(&reply, "session_id");
    let info = c.info(&id);
    assert_eq!(info["media"][0]["rx_packets"], 20, "{info}");
    assert_eq!(info["media"][0]["drops"]["srtp_auth"], 0);

    // A packet under a wrong key is dropped, not echoed.
    let mut wrong = SrtpContext::new(&master(profile, &theirs)).expect("a wrong context");
    let bytes = Rtp::new(0, 600, 0, 0x5de5, &[1; 160]).to_bytes();
    let mut buf = vec![0u8; bytes.len() + 64];
    buf[..bytes.len()].copy_from_slice(&bytes);
    let n = wrong.protect_rtp(&mut buf, bytes.len()).expect("protect");
    peer.send(to, &buf[..n]);
    let info = c.info_until(&id, |i| i["media"][0]["drops"]["srtp_auth"] == 1);
    assert_eq!(info["media"][0]["rx_packets"], 20);
}

fn sdes_echo_aes_cm(server: &Server) {
    sdes_echo(
        server,
        Profile::AesCm128HmacSha1_80,
        "AES_CM_128_HMAC_SHA1_80",
    );
}
both_backends!(sdes_echo_aes_cm);

fn sdes_echo_gcm(server: &Server) {
    sdes_echo(server, Profile::AeadAes256Gcm, "AEAD_AES_256_GCM");
}
both_backends!(sdes_echo_gcm);

/// A secure offer without a key the server can use is refused (port 0), not answered in the
/// clear.
fn savp_without_a_usable_key_is_refused(server: &Server) {
    let mut c = server.client();
    let offer = savp_offer(
        4000,
        &["1 AES_CM_128_HMAC_SHA1_32 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR"],
    );
    let r = c.session(
        "create",
        json!({"type": "echo", "offer": {"sdp": offer, "sdp_type": "rtp"}}),
    );
    let e = r.expect_err("nothing usable");
    assert_eq!(e.code, 100041, "{e:?}");
}
both_backends!(savp_without_a_usable_key_is_refused);

/// The server offers SRTP (`sdp_type: "srtp"`): a key per suite, GCM first; the answer picks
/// one by its tag and brings its own, and the listener gets SRTP under the offered key.
fn srtp_listener_of_a_plain_publisher(server: &Server) {
    let mut c = server.client();
    let publisher = Peer::new();
    let r = c
        .session(
            "create",
            json!({"type": "publish", "room_audio_codec": "pcmu",
                "offer": {"sdp": phone_sdp(publisher.port()), "sdp_type": "rtp"}}),
        )
        .expect("a plain publisher");
    let pid = str_of(&r, "session_id");
    let to = server_addr(&sdp_in(&r, "answer"), 0);

    let r = c
        .session(
            "create",
            json!({"type": "listen", "publisher_id": pid, "sdp_type": "srtp"}),
        )
        .expect("an SRTP listener");
    assert_eq!(r["offer"]["sdp_type"], "srtp");
    let offer = sdp_in(&r, "offer");
    assert!(offer.contains("RTP/SAVP 0"), "{offer}");
    let keys: Vec<&str> = offer
        .lines()
        .filter_map(|l| l.strip_prefix("a=crypto:"))
        .collect();
    assert_eq!(keys.len(), 2, "{offer}");
    assert!(keys[0].starts_with("1 AEAD_AES_128_GCM inline:"), "{offer}");
    assert!(
        keys[1].starts_with("2 AES_CM_128_HMAC_SHA1_80 inline:"),
        "{offer}"
    );
    let lid = str_of(&r, "session_id");

    let listener = Peer::new();
    let profile = Profile::AesCm128HmacSha1_80;
    let ours: Vec<u8> = (0..30u8).map(|i| i ^ 0x5a).collect();
    let answer = |crypto: &str| {
        format!(
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio {} RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\na=recvonly\r\na=crypto:{crypto}\r\n",
            listener.port()
        )
    };
    // A key of a suite the server did not offer under that tag: refused.
    let bad = c.session(
        "set_answer",
        json!({"session_id": lid, "answer": {"sdp": answer(&format!(
            "1 AES_CM_128_HMAC_SHA1_80 inline:{}", encode_base64(&ours))), "sdp_type": "srtp"}}),
    );
    assert_eq!(bad.expect_err("no matching crypto").code, 100041);
    c.session(
        "set_answer",
        json!({"session_id": lid, "answer": {"sdp": answer(&format!(
            "2 AES_CM_128_HMAC_SHA1_80 inline:{}", encode_base64(&ours))), "sdp_type": "srtp"}}),
    )
    .expect("set_answer with tag 2");
    let (_, _, server_key) = answer_key(&format!("a=crypto:{}", keys[1]));
    let mut rx = SrtpContext::new(&master(profile, &server_key)).expect("the server's context");

    let sent = blast(&publisher, to, 0, 0x1234, 100, 10);
    for want in &sent {
        let (mut got, _) = listener.recv().expect("an SRTP packet");
        let n = rx
            .unprotect_rtp(&mut got)
            .expect("SRTP under the offered key");
        let got = Rtp::parse(&got[..n]).expect("RTP");
        assert_eq!(got.payload, want.payload);
    }
}
both_backends!(srtp_listener_of_a_plain_publisher);

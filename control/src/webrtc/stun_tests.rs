use super::*;

const PWD: &str = "VOkJxbRl1RmTxUk/WvJxBt";
const TID: TransactionId = [
    0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
];

/// RFC 5769 §2.1 sample request.
const REQUEST: [u8; 108] = [
    0x00, 0x01, 0x00, 0x58, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86,
    0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x10, 0x53, 0x54, 0x55, 0x4e, 0x20, 0x74, 0x65, 0x73,
    0x74, 0x20, 0x63, 0x6c, 0x69, 0x65, 0x6e, 0x74, 0x00, 0x24, 0x00, 0x04, 0x6e, 0x00, 0x01, 0xff,
    0x80, 0x29, 0x00, 0x08, 0x93, 0x2f, 0xf9, 0xb1, 0x51, 0x26, 0x3b, 0x36, 0x00, 0x06, 0x00, 0x09,
    0x65, 0x76, 0x74, 0x6a, 0x3a, 0x68, 0x36, 0x76, 0x59, 0x20, 0x20, 0x20, 0x00, 0x08, 0x00, 0x14,
    0x9a, 0xea, 0xa7, 0x0c, 0xbf, 0xd8, 0xcb, 0x56, 0x78, 0x1e, 0xf2, 0xb5, 0xb2, 0xd3, 0xf2, 0x49,
    0xc1, 0xb5, 0x71, 0xa2, 0x80, 0x28, 0x00, 0x04, 0xe5, 0x7a, 0x3b, 0xcf,
];

/// RFC 5769 §2.2 sample IPv4 response.
const RESPONSE_V4: [u8; 80] = [
    0x01, 0x01, 0x00, 0x3c, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86,
    0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74, 0x20, 0x76, 0x65, 0x63,
    0x74, 0x6f, 0x72, 0x20, 0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43,
    0x00, 0x08, 0x00, 0x14, 0x2b, 0x91, 0xf5, 0x99, 0xfd, 0x9e, 0x90, 0xc3, 0x8c, 0x74, 0x89, 0xf9,
    0x2a, 0xf9, 0xba, 0x53, 0xf0, 0x6b, 0xe7, 0xd7, 0x80, 0x28, 0x00, 0x04, 0xc0, 0x7d, 0x4c, 0x96,
];

/// RFC 5769 §2.3 sample IPv6 response.
const RESPONSE_V6: [u8; 92] = [
    0x01, 0x01, 0x00, 0x48, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86,
    0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74, 0x20, 0x76, 0x65, 0x63,
    0x74, 0x6f, 0x72, 0x20, 0x00, 0x20, 0x00, 0x14, 0x00, 0x02, 0xa1, 0x47, 0x01, 0x13, 0xa9, 0xfa,
    0xa5, 0xd3, 0xf1, 0x79, 0xbc, 0x25, 0xf4, 0xb5, 0xbe, 0xd2, 0xb9, 0xd9, 0x00, 0x08, 0x00, 0x14,
    0xa3, 0x82, 0x95, 0x4e, 0x4b, 0xe6, 0x7b, 0xf1, 0x17, 0x84, 0xc9, 0x7c, 0x82, 0x92, 0xc2, 0x75,
    0xbf, 0xe3, 0xed, 0x41, 0x80, 0x28, 0x00, 0x04, 0xc8, 0xfb, 0x0b, 0x4c,
];

fn rfc_response(mapped: SocketAddr) -> Vec<u8> {
    let mut buf = [0u8; 256];
    let mut w = MessageWriter::new(&mut buf, Class::Success, Method::Binding, &TID)
        .expect("room")
        .padding(b' ');
    w.software("test vector").expect("room");
    w.xor_mapped_address(mapped).expect("room");
    w.message_integrity(PWD.as_bytes()).expect("room");
    w.fingerprint().expect("room");
    let n = w.finish();
    buf[..n].to_vec()
}

#[test]
fn rfc5769_request_parses_and_verifies() {
    let m = StunMessage::parse(&REQUEST).expect("valid vector");
    assert!(m.is_binding_request());
    assert_eq!(m.transaction_id, TID);
    assert_eq!(m.username, Some("evtj:h6vY"));
    assert_eq!(m.software, Some("STUN test client"));
    assert_eq!(m.priority, Some(0x6e00_01ff));
    assert_eq!(m.ice_controlled, Some(0x932f_f9b1_5126_3b36));
    assert_eq!(m.ice_controlling, None);
    assert!(!m.use_candidate);
    assert!(m.has_fingerprint);
    assert!(m.verify_integrity(PWD.as_bytes()));
    assert!(!m.verify_integrity(b"VOkJxbRl1RmTxUk/WvJxBT"));
}

#[test]
fn rfc5769_responses_parse_and_verify() {
    for (bytes, addr) in [
        (&RESPONSE_V4[..], "192.0.2.1:32853"),
        (
            &RESPONSE_V6[..],
            "[2001:db8:1234:5678:11:2233:4455:6677]:32853",
        ),
    ] {
        let m = StunMessage::parse(bytes).expect("valid vector");
        assert_eq!((m.class, m.method), (Class::Success, Method::Binding));
        assert_eq!(m.software, Some("test vector"));
        assert_eq!(m.xor_mapped_address, Some(addr.parse().expect("valid")));
        assert!(m.verify_integrity(PWD.as_bytes()));
    }
}

#[test]
fn writer_reproduces_rfc5769_request() {
    let mut buf = [0u8; 256];
    let mut w = MessageWriter::new(&mut buf, Class::Request, Method::Binding, &TID)
        .expect("room")
        .padding(b' ');
    w.software("STUN test client").expect("room");
    w.priority(0x6e00_01ff).expect("room");
    w.ice_controlled(0x932f_f9b1_5126_3b36).expect("room");
    w.username("evtj:h6vY").expect("room");
    w.message_integrity(PWD.as_bytes()).expect("room");
    w.fingerprint().expect("room");
    let n = w.finish();
    assert_eq!(&buf[..n], &REQUEST[..]);
}

#[test]
fn writer_reproduces_rfc5769_responses() {
    let v4 = rfc_response("192.0.2.1:32853".parse().expect("valid"));
    assert_eq!(v4, RESPONSE_V4);
    let v6 = rfc_response(
        "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
            .parse()
            .expect("valid"),
    );
    assert_eq!(v6, RESPONSE_V6);
}

#[test]
fn binding_success_round_trips() {
    let mut buf = [0u8; MAX_RESPONSE_LEN];
    let from: SocketAddr = "[2001:db8::7]:50000".parse().expect("valid");
    let n = binding_success(&mut buf, &TID, from, "secretpassword").expect("room");
    let m = StunMessage::parse(&buf[..n]).expect("our output parses");
    assert_eq!((m.class, m.method), (Class::Success, Method::Binding));
    assert_eq!(m.transaction_id, TID);
    assert_eq!(m.xor_mapped_address, Some(from));
    assert!(m.verify_integrity(b"secretpassword"));
    assert!(m.has_fingerprint);
}

#[test]
fn binding_error_carries_code_without_integrity() {
    let mut buf = [0u8; MAX_RESPONSE_LEN];
    let n = binding_error(&mut buf, &TID, 401).expect("room");
    let m = StunMessage::parse(&buf[..n]).expect("our output parses");
    assert_eq!(m.class, Class::Error);
    assert_eq!(m.error_code, Some((401, "Unauthorized")));
    assert!(!m.has_integrity());
    let n = binding_error(&mut buf, &TID, 400).expect("room");
    let m = StunMessage::parse(&buf[..n]).expect("our output parses");
    assert_eq!(m.error_code, Some((400, "Bad Request")));
}

#[test]
fn message_type_interleaves_class_bits() {
    assert_eq!(message_type(Class::Request, Method::Binding), 0x0001);
    assert_eq!(message_type(Class::Success, Method::Binding), 0x0101);
    assert_eq!(message_type(Class::Error, Method::Binding), 0x0111);
    assert_eq!(message_type(Class::Error, Method::Other(0x003)), 0x0113);
    for t in [0x0001, 0x0011, 0x0101, 0x0111, 0x0113, 0x0009] {
        let (c, m) = split_type(t);
        assert_eq!(message_type(c, m), t);
    }
}

#[test]
fn tampered_fingerprint_is_rejected() {
    let mut bytes = REQUEST;
    bytes[107] ^= 1;
    assert_eq!(
        StunMessage::parse(&bytes),
        Err(StunError::FingerprintMismatch)
    );
}

#[test]
fn tampered_body_fails_integrity() {
    let mut bytes = REQUEST;
    // Flip a SOFTWARE byte and fix the fingerprint so that only integrity can catch it.
    bytes[30] ^= 1;
    let crc = crc32fast::hash(&bytes[..100]) ^ FINGERPRINT_XOR;
    bytes[104..].copy_from_slice(&crc.to_be_bytes());
    let m = StunMessage::parse(&bytes).expect("still well-formed");
    assert!(!m.verify_integrity(PWD.as_bytes()));
}

#[test]
fn garbage_never_panics() {
    // Every truncation and a deterministic byte walk over the vector.
    for n in 0..REQUEST.len() {
        let _ = StunMessage::parse(&REQUEST[..n]);
    }
    let mut state = 0x1234_5678_u32;
    for _ in 0..2000 {
        let mut bytes = REQUEST;
        for _ in 0..4 {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let i = state as usize % bytes.len();
            bytes[i] = (state >> 8) as u8;
        }
        if let Ok(m) = StunMessage::parse(&bytes) {
            let _ = m.verify_integrity(PWD.as_bytes());
        }
    }
    assert_eq!(StunMessage::parse(&[0u8; 3]), Err(StunError::TooShort));
    assert_eq!(StunMessage::parse(&[0x80; 20]), Err(StunError::NotStun));
}

#[test]
fn attribute_overrunning_the_message_is_malformed() {
    let mut bytes = [0u8; 28];
    bytes[..20].copy_from_slice(&REQUEST[..20]);
    bytes[3] = 8;
    bytes[20..24].copy_from_slice(&[0x00, 0x20, 0x00, 0x40]);
    assert_eq!(
        StunMessage::parse(&bytes),
        Err(StunError::MalformedAttribute(0x0020))
    );
}

#[test]
fn length_field_must_match_datagram() {
    let mut bytes = REQUEST.to_vec();
    bytes.push(0);
    assert_eq!(StunMessage::parse(&bytes), Err(StunError::BadLength));
}

#[test]
fn small_buffer_is_an_error_not_a_panic() {
    let mut buf = [0u8; 40];
    let from: SocketAddr = "192.0.2.1:1".parse().expect("valid");
    assert_eq!(
        binding_success(&mut buf, &TID, from, "pwd"),
        Err(StunError::BufferTooSmall)
    );
    assert!(MessageWriter::new(&mut buf[..10], Class::Request, Method::Binding, &TID).is_err());
}

/// Found by the `stun` fuzz target: a reason longer than 128 bytes was cut inside a
/// character, and the reader then saw no reason at all (not UTF-8).
#[test]
fn long_error_reason_is_cut_at_a_character_boundary() {
    let reason = format!("a{}", "é".repeat(70));
    let mut buf = [0u8; 256];
    let mut w = MessageWriter::new(&mut buf, Class::Error, Method::Binding, &TID).expect("room");
    w.error_code(400, &reason).expect("room");
    let n = w.finish();
    let m = StunMessage::parse(&buf[..n]).expect("parses");
    let (code, read) = m.error_code.expect("an ERROR-CODE");
    assert_eq!(code, 400);
    assert_eq!(read, &reason[..127], "'a' and 63 two-byte characters");
}

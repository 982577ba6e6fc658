//! Any datagram as RTP: classification (RFC 7983), the header and its extension (RFC 3550
//! §5.1, §5.3.1) and the keyframe detectors a listener switch waits on. Never a panic; a
//! header read and written back is the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_dataplane::api::VideoCodec;
use sluice_dataplane::keyframe::{rtp_payload, starts_keyframe};
use sluice_dataplane::packet::{Class, RTP_HEADER_LEN, RtpHeader, classify, rtp_header_len};

fuzz_target!(|data: &[u8]| {
    let class = classify(data);
    if class == Class::Rtp {
        assert!(data.len() >= RTP_HEADER_LEN);
    }
    if let Some(len) = rtp_header_len(data) {
        // The fixed header, 4 bytes per CSRC and the extension, all inside the packet.
        let csrcs = 4 * usize::from(data[0] & 0x0f);
        assert!(len >= RTP_HEADER_LEN + csrcs && len <= data.len());
        assert_eq!(data[0] & 0x10 != 0, len > RTP_HEADER_LEN + csrcs);
        assert_eq!(rtp_payload(data).map(<[u8]>::len), Some(data.len() - len));
    } else {
        assert_eq!(rtp_payload(data), None);
    }
    if let Some(h) = RtpHeader::read(data) {
        let mut again = data.to_vec();
        h.write(&mut again);
        assert_eq!(again, data, "read then written: the same header");
        assert_eq!(RtpHeader::read(&again), Some(h));
    }
    for codec in [VideoCodec::Vp8, VideoCodec::Vp9, VideoCodec::H264] {
        starts_keyframe(codec, data);
        if let Some(payload) = rtp_payload(data) {
            starts_keyframe(codec, payload);
        }
    }
});

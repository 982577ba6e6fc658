//! Any file as a Janus `.mjr` recording: the in-memory parser and the streaming scanner (which
//! lists files it did not make) agree, and the frames read write back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_dataplane::record::mjr::{self, FRAME_HEADER_LEN, MAGIC, MAX_FRAME};

fuzz_target!(|data: &[u8]| {
    let parsed = mjr::parse(data);
    let scanned = mjr::scan(data);
    let (file, summary) = match (parsed, scanned) {
        (Ok(f), Ok(s)) => (f, s),
        (Err(_), Err(_)) => return,
        (p, s) => panic!("parse {p:?} but scan {s:?}"),
    };
    assert_eq!(summary.info_json, file.info_json);
    assert_eq!(summary.frames, file.frames.len() as u64);
    let last = file.frames.last().map_or(0, |f| f.offset_ms);
    assert_eq!(summary.last_offset_ms, last);
    let mut out = Vec::with_capacity(data.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(file.info_json.len() as u16).to_be_bytes());
    out.extend_from_slice(file.info_json.as_bytes());
    for f in &file.frames {
        if f.rtp.len() <= MAX_FRAME {
            mjr::write_frame(f.offset_ms, &f.rtp, &mut out);
        } else {
            // Longer than we ever write, but read all the same.
            out.extend_from_slice(&data[out.len()..out.len() + FRAME_HEADER_LEN + f.rtp.len()]);
        }
    }
    assert_eq!(out.len() + file.trailing, data.len());
    assert_eq!(out, data[..out.len()]);
});

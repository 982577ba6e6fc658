//! Janus's `.mjr` recording format, version 2, so that Janus's `janus-pp-rec` converts our files.
//!
//! Layout, every integer big-endian (as Janus's `record.c` writes it and `janus-pp-rec.c` reads
//! it):
//! - `MJR00002`, a u16 length, then that many bytes of JSON info:
//!   `{"t":"a"|"v","c":CODEC,"s":CREATED_US,"u":FIRST_PACKET_US}` (`s` and `u` are wall-clock
//!   microseconds, integers; `c` is Janus's lowercase codec name: `opus`, `pcmu`, `vp8`, ...);
//! - per packet: `MEET`, a u32 offset in milliseconds from the first packet, a u16 length, then
//!   the (decrypted) RTP packet.
//!
//! A data-channel recording (Janus's `-data.mjr`) has the info `{"t":"d","c":"text",...}` and
//! frames whose length counts an 8-byte big-endian wall-clock time in µs before the message,
//! as Janus's `janus_recorder_save_frame` writes them; `janus-pp-rec` turns it into a `.srt`
//! file, one cue per message, timed by those 8 bytes.
//!
//! The post-processor stops at the first frame that is not whole, and so does [`parse`]: a file
//! cut short by a crash is readable up to its last complete frame.
//!
//! The data plane never parses JSON: the info header is written here from typed fields and
//! handed back by the parsers as raw text, for whoever speaks JSON to read.

use std::io::{self, Read};

use crate::api::MediaKind;

/// File magic of version 2 (millisecond offsets in every frame header).
pub const MAGIC: &[u8; 8] = b"MJR00002";
/// Frame magic.
pub const FRAME_MAGIC: &[u8; 4] = b"MEET";
/// Bytes of a frame header: magic, offset, length.
pub const FRAME_HEADER_LEN: usize = 10;
/// `janus-pp-rec` skips longer frames as "not RTP".
pub const MAX_FRAME: usize = 1500;

/// Longest message a data frame holds: its length field also counts the 8-byte time.
pub const MAX_DATA_FRAME: usize = u16::MAX as usize - 8;

/// What the info header says about a recording.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MjrInfo {
    pub kind: MediaKind,
    /// Janus's codec name (`opus`, `pcmu`, `pcma`, `g722`, `vp8`, `vp9`, `h264`, ...).
    pub codec: String,
    /// Wall-clock creation time, µs since the Unix epoch.
    pub created_us: u64,
    /// Wall-clock time of the first packet, µs since the Unix epoch.
    pub first_us: u64,
}

impl MjrInfo {
    /// The JSON info object. The codec is restricted to `[a-z0-9._-]` so it needs no escaping.
    pub fn to_json(&self) -> String {
        let t = match self.kind {
            MediaKind::Audio => "a",
            MediaKind::Video => "v",
        };
        let codec: String = self
            .codec
            .chars()
            .map(|c| c.to_ascii_lowercase())
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            .collect();
        format!(
            "{{\"t\":\"{t}\",\"c\":\"{codec}\",\"s\":{},\"u\":{}}}",
            self.created_us, self.first_us
        )
    }
}

/// Appends the file header (magic and info) to `out`.
pub fn write_header(info: &MjrInfo, out: &mut Vec<u8>) {
    let json = info.to_json();
    out.extend_from_slice(MAGIC);
    // The info is a few dozen bytes; u16 cannot overflow.
    out.extend_from_slice(&(json.len() as u16).to_be_bytes());
    out.extend_from_slice(json.as_bytes());
}

/// Appends one frame to `out`. Packets longer than [`MAX_FRAME`] must be filtered by the caller.
pub fn write_frame(offset_ms: u32, rtp: &[u8], out: &mut Vec<u8>) {
    debug_assert!(rtp.len() <= MAX_FRAME);
    out.extend_from_slice(FRAME_MAGIC);
    out.extend_from_slice(&offset_ms.to_be_bytes());
    out.extend_from_slice(&(rtp.len().min(MAX_FRAME) as u16).to_be_bytes());
    out.extend_from_slice(&rtp[..rtp.len().min(MAX_FRAME)]);
}

/// Appends the header of a data-channel recording (Janus's codec `text`, which
/// `janus-pp-rec` converts to `.srt`).
pub fn write_data_header(created_us: u64, first_us: u64, out: &mut Vec<u8>) {
    let json = format!("{{\"t\":\"d\",\"c\":\"text\",\"s\":{created_us},\"u\":{first_us}}}");
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(json.len() as u16).to_be_bytes());
    out.extend_from_slice(json.as_bytes());
}

/// Appends one data-channel message as Janus writes it: the frame header, whose length counts
/// the 8-byte wall-clock time `at_us` (µs since the epoch) that precedes the message. Messages
/// longer than [`MAX_DATA_FRAME`] must be split by the caller.
pub fn write_data_frame(offset_ms: u32, at_us: u64, msg: &[u8], out: &mut Vec<u8>) {
    debug_assert!(msg.len() <= MAX_DATA_FRAME);
    let msg = &msg[..msg.len().min(MAX_DATA_FRAME)];
    out.extend_from_slice(FRAME_MAGIC);
    out.extend_from_slice(&offset_ms.to_be_bytes());
    out.extend_from_slice(&((msg.len() + 8) as u16).to_be_bytes());
    out.extend_from_slice(&at_us.to_be_bytes());
    out.extend_from_slice(msg);
}

#[derive(Debug, thiserror::Error)]
pub enum MjrError {
    #[error("not an MJR00002 file")]
    NotMjr,
    #[error("the info header is cut short")]
    ShortInfo,
    #[error("the info header is not UTF-8")]
    InfoNotText,
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
}

/// One recorded packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MjrFrame {
    pub offset_ms: u32,
    pub rtp: Vec<u8>,
}

/// A whole file, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MjrFile {
    /// The info header, raw JSON text.
    pub info_json: String,
    pub frames: Vec<MjrFrame>,
    /// Bytes after the last complete frame (a crash cut the file there).
    pub trailing: usize,
}

/// Parses a file held in memory, up to its last complete frame.
pub fn parse(bytes: &[u8]) -> Result<MjrFile, MjrError> {
    let info_json = parse_info(bytes)?;
    let mut pos = MAGIC.len() + 2 + info_json.len();
    let mut frames = Vec::new();
    while let Some(h) = bytes.get(pos..pos + FRAME_HEADER_LEN) {
        if &h[..4] != FRAME_MAGIC {
            break;
        }
        let offset_ms = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
        let len = usize::from(u16::from_be_bytes([h[8], h[9]]));
        let start = pos + FRAME_HEADER_LEN;
        let Some(rtp) = bytes.get(start..start + len) else {
            break;
        };
        frames.push(MjrFrame {
            offset_ms,
            rtp: rtp.to_vec(),
        });
        pos = start + len;
    }
    Ok(MjrFile {
        info_json,
        frames,
        trailing: bytes.len() - pos,
    })
}

fn parse_info(bytes: &[u8]) -> Result<String, MjrError> {
    if bytes.get(..MAGIC.len()) != Some(&MAGIC[..]) {
        return Err(MjrError::NotMjr);
    }
    let len = bytes
        .get(MAGIC.len()..MAGIC.len() + 2)
        .ok_or(MjrError::ShortInfo)?;
    let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
    let start = MAGIC.len() + 2;
    let info = bytes.get(start..start + len).ok_or(MjrError::ShortInfo)?;
    String::from_utf8(info.to_vec()).map_err(|_| MjrError::InfoNotText)
}

/// What a listing needs to know about a file without holding it in memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MjrSummary {
    pub info_json: String,
    pub frames: u64,
    /// Offset of the last complete frame: the recording's duration in ms.
    pub last_offset_ms: u32,
}

/// Reads frame headers only (payloads are skipped), up to the last complete frame.
pub fn scan(mut r: impl Read) -> Result<MjrSummary, MjrError> {
    let mut head = [0u8; 10];
    r.read_exact(&mut head).map_err(|_| MjrError::NotMjr)?;
    if &head[..8] != MAGIC {
        return Err(MjrError::NotMjr);
    }
    let mut info = vec![0u8; usize::from(u16::from_be_bytes([head[8], head[9]]))];
    r.read_exact(&mut info).map_err(|_| MjrError::ShortInfo)?;
    let info_json = String::from_utf8(info).map_err(|_| MjrError::InfoNotText)?;
    let mut summary = MjrSummary {
        info_json,
        frames: 0,
        last_offset_ms: 0,
    };
    let mut h = [0u8; FRAME_HEADER_LEN];
    loop {
        if r.read_exact(&mut h).is_err() || &h[..4] != FRAME_MAGIC {
            return Ok(summary);
        }
        let len = u64::from(u16::from_be_bytes([h[8], h[9]]));
        if io::copy(&mut r.by_ref().take(len), &mut io::sink())? != len {
            return Ok(summary);
        }
        summary.frames += 1;
        summary.last_offset_ms = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> MjrInfo {
        MjrInfo {
            kind: MediaKind::Audio,
            codec: "opus".into(),
            created_us: 1_700_000_000_000_000,
            first_us: 1_700_000_000_020_000,
        }
    }

    #[test]
    fn header_is_what_janus_pp_rec_reads() {
        let mut out = Vec::new();
        write_header(&info(), &mut out);
        let json = r#"{"t":"a","c":"opus","s":1700000000000000,"u":1700000000020000}"#;
        assert_eq!(&out[..8], b"MJR00002");
        assert_eq!(u16::from_be_bytes([out[8], out[9]]) as usize, json.len());
        assert_eq!(&out[10..], json.as_bytes());
    }

    #[test]
    fn codec_names_cannot_break_the_json() {
        let mut i = info();
        i.codec = "PCMU\",\"x\":\"y".into();
        assert!(i.to_json().contains(r#""c":"pcmuxy""#), "{}", i.to_json());
    }

    #[test]
    fn frames_round_trip_and_a_cut_tail_is_ignored() {
        let mut out = Vec::new();
        write_header(&info(), &mut out);
        let packets: Vec<(u32, Vec<u8>)> = (0..20u32)
            .map(|i| {
                (
                    i * 20,
                    vec![0x80, 111, 0, i as u8, 1, 2, 3, 4, 5, 6, 7, 8, i as u8],
                )
            })
            .collect();
        for (at, p) in &packets {
            write_frame(*at, p, &mut out);
        }
        let whole = parse(&out).expect("parses");
        assert_eq!(whole.trailing, 0);
        let got: Vec<(u32, Vec<u8>)> = whole
            .frames
            .iter()
            .map(|f| (f.offset_ms, f.rtp.clone()))
            .collect();
        assert_eq!(got, packets);
        let summary = scan(&out[..]).expect("scans");
        assert_eq!((summary.frames, summary.last_offset_ms), (20, 380));
        assert_eq!(summary.info_json, whole.info_json);
        // Every cut inside the last frame leaves the first 19 frames readable.
        for cut in 1..FRAME_HEADER_LEN + 13 {
            let part = parse(&out[..out.len() - cut]).expect("parses");
            assert_eq!(part.frames.len(), 19, "cut {cut}");
            assert_eq!(scan(&out[..out.len() - cut]).expect("scans").frames, 19);
        }
    }

    #[test]
    fn data_frames_carry_their_time_before_the_message() {
        let mut out = Vec::new();
        write_data_header(1_000, 2_000, &mut out);
        write_data_frame(7, 0x0102_0304_0506_0708, b"hi", &mut out);
        let file = parse(&out).expect("parses");
        assert_eq!(file.info_json, r#"{"t":"d","c":"text","s":1000,"u":2000}"#);
        assert_eq!(file.frames.len(), 1);
        assert_eq!(file.frames[0].offset_ms, 7);
        assert_eq!(file.frames[0].rtp, b"\x01\x02\x03\x04\x05\x06\x07\x08hi");
    }

    #[test]
    fn other_files_are_refused() {
        assert!(matches!(parse(b"MJR00001\0\0"), Err(MjrError::NotMjr)));
        assert!(matches!(
            parse(b"MJR00002\0\x05ab"),
            Err(MjrError::ShortInfo)
        ));
        assert!(matches!(scan(&b"hello world"[..]), Err(MjrError::NotMjr)));
    }
}

//! SDP (RFC 8866) for Sluice: a typed model, a lenient parser, a writer, and the
//! offer/answer helpers (RFC 3264) of a server that forwards media without transcoding.
//!
//! Everything here is a pure function of its inputs: no I/O, no clock, no randomness.
//! `Sdp::parse` turns text into [`Sdp`] at the API edge; `Display` writes it back
//! (`parse(write(x)) == x`). [`select_codecs`] picks one forwardable codec per offered
//! m-line, keeping the offerer's payload types, and [`build_answer`] / [`build_offer`] make
//! the plain `RTP/AVP` descriptions of the server's own side.

mod model;
mod negotiate;
mod parse;
pub mod sdes;
mod write;

#[cfg(test)]
mod samples;

pub use model::{Attribute, Codec, Direction, Media, MediaKind, Origin, Proto, Sdp};
pub(crate) use negotiate::rejected;
pub use negotiate::{
    CodecName, Forced, LocalTransport, NegotiationError, OfferMedia, Selected, answered_codec,
    build_answer, build_offer, pt_map, select_codecs,
};
pub use parse::SdpError;

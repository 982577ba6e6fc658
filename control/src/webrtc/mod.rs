//! WebRTC transport building blocks for the control plane's slow path, all sans-IO:
//! STUN ([`stun`]), an ICE-lite agent ([`ice`]), the DTLS certificate ([`cert`]), DTLS-SRTP
//! handshakes over `dimpl` ([`dtls`]), WebRTC SDP on top of [`crate::sdp`] ([`sdp`]), data
//! channels (SCTP over DTLS with `sctp-proto`, [`sctp`]; DCEP, [`dcep`]; their limits,
//! [`data_limits`]), and the transport of one session that drives them together
//! ([`transport`]).
//!
//! Nothing here opens a socket, reads a clock or spawns a task: every state machine takes
//! `now` and bytes (`handle_*`), hands back datagrams and events (`poll_*`) and says when it
//! wants to be woken (`poll_timeout`). A driver owns the sockets and the timers.

pub mod cert;
pub mod data_limits;
pub mod dcep;
pub mod dtls;
pub mod ice;
pub mod sctp;
pub mod sdp;
pub mod stun;
pub mod transport;

#[cfg(test)]
mod str0m_tests;

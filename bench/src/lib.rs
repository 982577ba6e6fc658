//! Sluice's load tools. The criterion benches (`benches/`) time the sans-IO forwarding core;
//! the `loadgen` binary drives a running `sluice` over loopback through its real WebSocket API
//! and real UDP sockets, and measures what a deployment would see: packets per second
//! delivered, loss, latency, and the server's CPU time per forwarded packet, next to two minimal
//! reflectors under the same load as the kernel baseline: recvmmsg/sendmmsg ([`reflector`]) and
//! io_uring ([`reflector_uring`]).
//!
//! Model: the generator ([`traffic`]) stamps stream, sequence and send time into each RTP
//! payload, so any forwarding that keeps the payload can be measured the same way; CPU time
//! comes from /proc ([`procstat`]), never from the client's own view. All `unsafe` is in
//! [`sys`] and, for its ring and buffers, [`reflector_uring`]. `srtp-echo` plays a WebRTC peer
//! ([`webrtc`]): ICE, DTLS-SRTP, then the same load with every packet SRTP-protected and every
//! echo unprotected.

pub mod av;
pub mod churn;
pub mod cli;
pub mod hist;
pub mod janus;
pub mod ng;
pub mod procstat;
pub mod reflector;
pub mod reflector_uring;
pub mod report;
pub mod rtpengine;
pub mod sdp;
pub mod server;
pub mod sys;
pub mod traffic;
pub mod webrtc;
pub mod wsapi;

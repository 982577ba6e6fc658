//! Data channels of a [`WebrtcTransport`]: SCTP over the DTLS association, and what the
//! manager asks of it (echo, mirrors of a publisher's channels on a listener).

use std::time::Instant;

use serde_json::{Value, json};

use super::{Effect, WebrtcTransport};
use crate::webrtc::dcep::ChannelSpec;
use crate::webrtc::dtls::DtlsRole;
use crate::webrtc::sctp::{MessageKind, SctpAssociation, SctpEvent, SendError};

/// Counters of the data channels the session's owner decides about.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct DataStats {
    /// Application data before there was an association to take it.
    pub(super) records_dropped: u64,
    /// Messages the session dropped (`mute_data`).
    pub(super) muted: u64,
    /// Messages that could not be sent (no channel, too large for the peer); those dropped
    /// with the send buffer full are the association's `buffer_full`.
    pub(super) send_errors: u64,
    /// Messages of a peer whose data goes nowhere (a listener's).
    pub(super) unrelayed: u64,
}

impl WebrtcTransport {
    /// The session accepted a data m-line whose `a=max-message-size` is `remote_max`: SCTP
    /// starts when DTLS is up.
    pub fn enable_data(&mut self, remote_max: Option<u32>) {
        self.data = Some(remote_max);
    }

    pub fn has_data(&self) -> bool {
        self.data.is_some()
    }

    /// Data-channel messages received from the peer and sent to it (`/metrics`).
    pub fn data_messages(&self) -> [u64; 2] {
        self.sctp.as_ref().map_or([0, 0], |s| {
            let st = s.stats();
            [st.messages_in, st.messages_out]
        })
    }

    /// Sends one message on a data channel (an echo, a relay); failures are counted.
    pub fn send_data(
        &mut self,
        now: Instant,
        sid: u16,
        kind: MessageKind,
        data: &[u8],
        out: &mut Vec<Effect>,
    ) -> Result<(), SendError> {
        let result = match self.sctp.as_mut() {
            Some(s) => s.send(now, sid, kind, data),
            None => Err(SendError::NoChannel(sid)),
        };
        if result
            .as_ref()
            .is_err_and(|e| !matches!(e, SendError::Full(_)))
        {
            self.data_stats.send_errors += 1;
        }
        self.sctp_output(out);
        self.dtls_transmit(out);
        result
    }

    /// A message the session's settings dropped (`mute_data`), for `get_info`.
    pub fn count_muted(&mut self) {
        self.data_stats.muted += 1;
    }

    /// A message from a peer whose data goes nowhere (a listener's), for `get_info`.
    pub fn count_unrelayed(&mut self) {
        self.data_stats.unrelayed += 1;
    }

    /// SCTP is up: channels can be opened.
    pub fn data_connected(&self) -> bool {
        self.sctp
            .as_ref()
            .is_some_and(SctpAssociation::is_connected)
    }

    /// The open channels: stream id and what was negotiated.
    pub fn data_channels(&self) -> Vec<(u16, ChannelSpec)> {
        self.sctp
            .iter()
            .flat_map(|s| s.channels().map(|(sid, spec)| (sid, spec.clone())))
            .collect()
    }

    /// Opens a channel of ours (DCEP, RFC 8832) with a stream id of our DTLS role's parity;
    /// `None` when SCTP is not up or the open failed.
    pub fn open_channel(
        &mut self,
        now: Instant,
        spec: ChannelSpec,
        out: &mut Vec<Effect>,
    ) -> Option<u16> {
        let client = self.role == Some(DtlsRole::Client);
        let s = self.sctp.as_mut().filter(|s| s.is_connected())?;
        let sid = s.free_stream_id(client)?;
        let opened = s.open_channel(now, sid, spec).is_ok();
        self.sctp_output(out);
        self.dtls_transmit(out);
        opened.then_some(sid)
    }

    pub fn close_channel(&mut self, now: Instant, sid: u16, out: &mut Vec<Effect>) {
        if let Some(s) = self.sctp.as_mut() {
            s.close_channel(now, sid);
        }
        self.sctp_output(out);
        self.dtls_transmit(out);
    }

    /// A listener's mirror of the publisher's channel `publisher_sid`.
    pub fn mirror(&self, publisher_sid: u16) -> Option<u16> {
        self.mirrors.get(&publisher_sid).copied()
    }

    pub fn set_mirror(&mut self, publisher_sid: u16, sid: u16) {
        self.mirrors.insert(publisher_sid, sid);
    }

    pub fn take_mirror(&mut self, publisher_sid: u16) -> Option<u16> {
        self.mirrors.remove(&publisher_sid)
    }

    /// The channel (of the session relaying to us) that our channel `sid` mirrors.
    pub fn mirror_source(&self, sid: u16) -> Option<u16> {
        self.mirrors
            .iter()
            .find_map(|(source, m)| (*m == sid).then_some(*source))
    }

    /// Every mirror, `(publisher's stream id, ours)`, forgotten.
    pub fn take_mirrors(&mut self) -> Vec<(u16, u16)> {
        std::mem::take(&mut self.mirrors).into_iter().collect()
    }

    /// Application data received over DTLS goes to SCTP.
    pub(super) fn sctp_input(&mut self, now: Instant) {
        let Some(d) = self.dtls.as_mut() else {
            return;
        };
        while let Some(packet) = d.poll_app_data() {
            match self.sctp.as_mut() {
                Some(s) => s.handle_input(now, &packet),
                None => self.data_stats.records_dropped += 1,
            }
        }
    }

    /// SCTP's events become effects, its packets DTLS records.
    pub(super) fn sctp_output(&mut self, out: &mut Vec<Effect>) {
        let (Some(s), Some(d)) = (self.sctp.as_mut(), self.dtls.as_mut()) else {
            return;
        };
        while let Some(packet) = s.poll_transmit() {
            d.send_app_data(&packet);
        }
        while let Some(ev) = s.poll_event() {
            let status = match &ev {
                SctpEvent::ChannelOpen { sid, spec } => Some(json!({
                    "class": "datachannel", "status": "open", "id": sid,
                    "label": spec.label, "protocol": spec.protocol,
                })),
                SctpEvent::ChannelClosed { sid } => {
                    Some(json!({ "class": "datachannel", "status": "closed", "id": sid }))
                }
                SctpEvent::Lost(reason) => {
                    tracing::info!(leg = ?self.leg, reason, "SCTP association lost");
                    None
                }
                SctpEvent::Connected | SctpEvent::Message { .. } => None,
            };
            out.extend(status.map(Effect::Status));
            out.push(Effect::Data(ev));
        }
    }

    /// The data channels for `get_info`.
    pub(super) fn data_info(&self) -> Value {
        let d = self.data_stats;
        let (channels, s) = match &self.sctp {
            Some(a) => (
                a.channels()
                    .map(|(sid, spec)| {
                        json!({
                            "id": sid, "label": spec.label, "protocol": spec.protocol,
                            "ordered": spec.ordered,
                        })
                    })
                    .collect(),
                a.stats(),
            ),
            None => (Vec::new(), Default::default()),
        };
        json!({
            "sctp": self.sctp.as_ref().map(|a| if a.is_connected() { "up" } else { "connecting" }),
            "channels": channels,
            "messages_in": s.messages_in,
            "bytes_in": s.bytes_in,
            "messages_out": s.messages_out,
            "bytes_out": s.bytes_out,
            "buffered": self.sctp.as_ref().map_or(0, SctpAssociation::buffered),
            "dropped_muted": d.muted,
            "dropped_bad_dcep": s.bad_dcep,
            "dropped_unknown_ppid": s.unknown_ppid,
            "dropped_no_channel": s.no_channel,
            "refused_channels": s.refused_channels,
            "dropped_too_large": s.too_large,
            "dropped_rate": s.rate_limited,
            "dropped_bytes_rate": s.bytes_limited,
            "dropped_buffer_full": s.buffer_full,
            "dropped_early": d.records_dropped,
            "send_errors": d.send_errors,
            "dropped_unrelayed": d.unrelayed,
        })
    }
}

#[cfg(test)]
#[path = "transport_data_tests.rs"]
mod tests;

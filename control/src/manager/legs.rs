//! The actor's side of the data plane: groups, opening and closing legs, commands, mute.

use sluice_dataplane::api::{Command, GroupId, LegId, LegInfo, LegSpec, MediaKind, Remote};

use super::{Manager, SessionId, random_u64};
use crate::errors::{ApiError, ErrorCode};
use crate::sdp::LocalTransport;

impl Manager {
    pub(super) fn new_group(&mut self) -> GroupId {
        let g = GroupId(self.next_group);
        self.next_group += 1;
        g
    }

    /// Opens one leg per `(kind, remote, secure)`: a secure one carries SRTP (keys from
    /// SDES, sent once it is open); on failure closes those already opened.
    pub(super) fn open_legs_secured(
        &mut self,
        group: GroupId,
        specs: &[(MediaKind, Remote, bool)],
    ) -> Result<Vec<LegInfo>, ApiError> {
        let mut opened = Vec::with_capacity(specs.len());
        for (kind, remote, secure) in specs {
            let mut spec = LegSpec::plain(group, *kind, *remote);
            spec.secure = *secure;
            match self.dp.open_leg(spec) {
                Ok(info) => {
                    self.register_opened(&info);
                    opened.push(info);
                }
                Err(e) => {
                    for info in &opened {
                        self.close_leg(info.id);
                    }
                    return Err(ApiError::new(
                        ErrorCode::InternalError,
                        format!("cannot open media ports: {e}"),
                    ));
                }
            }
        }
        Ok(opened)
    }

    /// Hands the leg's closing to the data plane and goes on: its ports are free once
    /// `Event::LegClosed` comes back.
    pub(super) fn close_leg(&self, leg: LegId) {
        if let Err(e) = self.dp.start_close(leg) {
            tracing::warn!(?leg, "close_leg: {e}");
        }
    }

    pub(super) fn send(&self, cmd: Command) -> Result<(), ApiError> {
        self.dp.send(cmd).map_err(|e| {
            tracing::error!("data plane command failed: {e}");
            ApiError::new(ErrorCode::InternalError, format!("data plane: {e}"))
        })
    }

    /// Pushes the session's mute flags to its legs: listeners mute what goes to their peer,
    /// every other session what comes from it.
    pub(super) fn apply_mute(&self, id: &SessionId) {
        let Some(s) = self.sessions.get(id) else {
            return;
        };
        let listener = s.is_listener();
        for leg in &s.legs {
            let muted = s.media.muted(leg.kind);
            let cmd = Command::SetMute {
                leg: leg.info.id,
                kind: Some(leg.kind),
                mute_in: muted && !listener,
                mute_out: muted && listener,
            };
            let _ = self.send(cmd);
        }
    }

    /// Video resumes: a listener needs a keyframe from its publisher; a publisher's (or any
    /// sender's) receivers need one from it.
    pub(super) fn video_unmuted(&self, id: &SessionId) {
        match self.sessions.get(id) {
            Some(s) if s.is_listener() => self.request_keyframes_for(id),
            s => self.request_own_keyframe(s),
        }
    }

    pub(super) fn register_legs(&mut self, id: &SessionId, legs: &[LegId]) {
        for &leg in legs {
            self.leg_owner.insert(leg, id.clone());
        }
    }

    pub(super) fn local_transport(&mut self, ports: Vec<u16>) -> LocalTransport {
        self.sdp_version += 1;
        LocalTransport {
            ip: self.announced_ip,
            ports,
            session_id: random_u64() >> 2,
            session_version: self.sdp_version,
        }
    }
}

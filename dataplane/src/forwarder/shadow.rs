//! Rooms across workers: a listener's worker keeps a *shadow* of a publisher's leg that
//! lives on another worker, and its listeners are outputs of that shadow as they would be of
//! a local leg.
//!
//! The publisher's worker decrypts once and pushes each packet of a mirrored stream into the
//! ring to every worker that keeps a shadow of it ([`crate::mirror`]); each such worker hands
//! the packet to [`Forwarder::handle_mirrored`], which fans it out through the shadow's
//! outputs exactly as [`Forwarder::handle_datagram`] does for a local source (rewrite, hold
//! for a keyframe, mute, record, encrypt). Workers tell each other the rest with
//! [`PeerMsg`]s, through the same command queues control uses:
//!
//! - the publisher's worker mirrors a stream to a worker while that worker has listeners
//!   of it: a count per worker, raised (`MirrorAdd`) by `Dataplane::send` before it hands
//!   the `Connect` to the listener's worker (so a packet sent after the command was posted
//!   is mirrored), and lowered (`MirrorSub`) by the listener's worker for each output its
//!   shadow stream loses, or for a `Connect` that added none; a shadow without outputs is
//!   dropped;
//! - a publisher leg that closes (or that a `MirrorOn` finds gone) ends its shadows
//!   (`SourceGone`): their listeners have no source, as a local listener's would;
//! - a listener's keyframe request reaches the publisher (`Keyframe`), coalesced on both
//!   workers;
//! - NACKs are served from a cache the shadow keeps of what it was sent (the listeners'
//!   worker replicates the cache, so a retransmission never crosses workers), and sender
//!   reports travel with the packets, so listeners' SRs are made where they are.
//!
//! A shadow is recognised by its id: a leg id names the worker that owns it
//! ([`LegId::worker`]), and a shadow's id is its publisher's.

use std::sync::Arc;

use super::leg::PtKinds;
use super::{Forwarder, Slot, reports};
use crate::api::{DropReason, LegId, LegStats, MediaKind, Remote};
use crate::batch::TxBatch;
use crate::mirror::{Carried, Mirrored, Producer};
use crate::packet::RtpHeader;

/// What one worker's forwarder tells another's (see the module comment).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerMsg {
    /// One more listener of `leg`'s stream `k` on worker `worker`: mirror the stream there.
    MirrorAdd { leg: LegId, k: u8, worker: u16 },
    /// One listener fewer there.
    MirrorSub { leg: LegId, k: u8, worker: u16 },
    /// `leg` is gone: drop the shadow of it.
    SourceGone { leg: LegId },
    /// A listener of `leg`'s stream `k` elsewhere lost its picture.
    Keyframe { leg: LegId, k: u8 },
    /// Listeners elsewhere miss these packets of `leg`'s stream `k` (SSRC `ssrc`), which
    /// their worker never got: ask the publisher (the first `n` of `seqs`).
    Nack {
        leg: LegId,
        k: u8,
        ssrc: u32,
        seqs: [u16; NACK_PER_MSG],
        n: u8,
    },
}

/// Sequence numbers one [`PeerMsg::Nack`] carries (more make more messages).
pub const NACK_PER_MSG: usize = 8;

impl Forwarder {
    /// Which worker this forwarder runs on, and its rings to the others (indexed by worker;
    /// `None` for itself). Legs of other workers' ids become shadows here.
    pub fn set_peers(&mut self, worker: usize, rings: Vec<Option<Producer>>) {
        self.worker = worker;
        self.peers = rings;
    }

    /// The next message for another worker: (that worker, the message).
    pub fn poll_peer_msg(&mut self) -> Option<(usize, PeerMsg)> {
        self.peer_msgs.pop_front()
    }

    /// Whether a packet went into worker `w`'s ring since the last call.
    pub fn take_mirrored(&mut self, w: usize) -> bool {
        self.peers
            .get_mut(w)
            .and_then(Option::as_mut)
            .is_some_and(Producer::take_pushed)
    }

    /// Whether anything went into any ring since [`Forwarder::take_mirrored`] was last asked
    /// for every worker: one load on the packet path.
    #[inline]
    pub fn mirrored_any(&self) -> bool {
        self.mirrored
    }

    /// The driver woke every worker [`Forwarder::take_mirrored`] named.
    pub fn clear_mirrored(&mut self) {
        self.mirrored = false;
    }

    /// Where the shadow of `leg` (a leg of another worker) is kept here: what a packet
    /// mirrored from it is handed to (`handle_mirrored`), `None` once its last listener here
    /// left (such packets are dropped).
    pub fn shadow_slot(&self, leg: LegId) -> Option<Slot> {
        self.slot(leg).filter(|&s| self.is_shadow(s))
    }

    pub(super) fn is_shadow(&self, slot: Slot) -> bool {
        self.legs
            .get(slot as usize)
            .and_then(Option::as_ref)
            .is_some_and(|l| l.id.worker() != self.worker)
    }

    /// The slot of `id`'s shadow here, made with the leg's counters `stats` if there is none
    /// (the drops of what it fans out are the leg's, in this worker's row of them).
    pub(super) fn shadow_of(&mut self, id: LegId, stats: Arc<LegStats>) -> Slot {
        if let Some(slot) = self.slot(id) {
            return slot;
        }
        // Made now, on the command path, so that the packet path never allocates them.
        stats.drops_elsewhere(self.worker, self.peers.len());
        let slot = self.add_leg(id, MediaKind::Audio, Remote::default(), stats);
        if let Some(l) = self.leg_mut(slot) {
            // Nothing arrives on a shadow's sockets (it has none): no payload type is its.
            l.pt_kinds = PtKinds::none();
        }
        slot
    }

    /// One listener fewer of `leg`'s stream `k` here: the publisher's worker counts it.
    pub(super) fn mirror_sub(&mut self, leg: LegId, k: usize) {
        let msg = PeerMsg::MirrorSub {
            leg,
            k: k as u8,
            worker: self.worker as u16,
        };
        self.peer_msgs.push_back((leg.worker(), msg));
    }

    /// After stream `k` of shadow `src` lost an output: counted at the publisher's worker,
    /// and a shadow without outputs goes.
    pub(super) fn shadow_disconnected(&mut self, src: Slot, k: usize) {
        let Some(leg) = self.legs.get(src as usize).and_then(Option::as_ref) else {
            return;
        };
        let id = leg.id;
        let idle = leg.streams.iter().all(|s| s.outputs.is_empty());
        self.mirror_sub(id, k);
        if idle {
            self.drop_shadow(src);
        }
    }

    /// A `Connect` from a leg of another worker (`Dataplane::send` counted it there first):
    /// made with that leg's counters; one that adds no output (an unknown listener, or one
    /// already fed by it) is taken back.
    pub fn connect_remote(
        &mut self,
        cmd: crate::api::Command,
        stats: Arc<LegStats>,
        tx: &mut TxBatch,
    ) -> Result<(), crate::api::Error> {
        let crate::api::Command::Connect { from, kind, .. } = &cmd else {
            return self.handle_command(cmd, tx);
        };
        let (from, k) = (*from, super::leg::kind_index(*kind));
        let shadow = self.shadow_of(from, stats);
        let result = self.handle_command(cmd, tx);
        if result.is_err() {
            self.mirror_sub(from, k);
            if self.legs[shadow as usize]
                .as_ref()
                .is_some_and(|l| l.streams.iter().all(|s| s.outputs.is_empty()))
            {
                self.drop_shadow(shadow);
            }
        }
        result
    }

    /// Frees a shadow's slot; its outputs (if any are left) have no source any more.
    fn drop_shadow(&mut self, slot: Slot) {
        let Some(leg) = self.legs.get_mut(slot as usize).and_then(Option::take) else {
            return;
        };
        self.by_id.remove(&leg.id);
        for (k, stream) in leg.streams.iter().enumerate() {
            for &out in &stream.outputs {
                if let Some(dst) = self.leg_mut(out) {
                    dst.streams[k].source = None;
                }
            }
        }
        self.free.push(slot);
    }

    /// A closing leg that other workers mirror: their shadows of it end.
    pub(super) fn source_closed(&mut self, leg: &super::leg::Leg) {
        for w in mirroring_workers(leg) {
            let msg = PeerMsg::SourceGone { leg: leg.id };
            self.peer_msgs.push_back((usize::from(w), msg));
        }
    }

    /// A message from worker `from`'s forwarder.
    pub fn handle_peer(&mut self, msg: PeerMsg, tx: &mut TxBatch) {
        match msg {
            PeerMsg::MirrorAdd { leg, k, worker } => {
                let local = self.slot(leg).filter(|&s| !self.is_shadow(s));
                let Some(l) = local.and_then(|s| self.leg_mut(s)) else {
                    // Closed before the listener came: the shadow there must go too.
                    self.peer_msgs
                        .push_back((usize::from(worker), PeerMsg::SourceGone { leg }));
                    return;
                };
                let mirrors = &mut l.streams[usize::from(k & 1)].mirrors;
                match mirrors.iter_mut().find(|(w, _)| *w == worker) {
                    Some(m) => m.1 += 1,
                    None => mirrors.push((worker, 1)),
                }
            }
            PeerMsg::MirrorSub { leg, k, worker } => {
                let local = self.slot(leg).filter(|&s| !self.is_shadow(s));
                if let Some(l) = local.and_then(|s| self.leg_mut(s)) {
                    let mirrors = &mut l.streams[usize::from(k & 1)].mirrors;
                    if let Some(m) = mirrors.iter_mut().find(|(w, _)| *w == worker) {
                        m.1 = m.1.saturating_sub(1);
                    }
                    mirrors.retain(|&(_, n)| n > 0);
                }
            }
            PeerMsg::SourceGone { leg } => {
                if let Some(slot) = self.slot(leg).filter(|&s| self.is_shadow(s)) {
                    self.drop_shadow(slot);
                }
            }
            PeerMsg::Nack {
                leg,
                k,
                ssrc,
                seqs,
                n,
            } => {
                if let Some(slot) = self.slot(leg).filter(|&s| !self.is_shadow(s)) {
                    let n = usize::from(n).min(NACK_PER_MSG);
                    self.ask_source(slot, usize::from(k & 1), ssrc, &seqs[..n], tx);
                }
            }
            PeerMsg::Keyframe { leg, k } => {
                if let Some(slot) = self.slot(leg).filter(|&s| !self.is_shadow(s)) {
                    self.forward_keyframe_request(slot, usize::from(k & 1), tx);
                }
            }
        }
    }

    /// A keyframe request towards a shadow goes to its publisher's worker.
    pub(super) fn shadow_keyframe_request(&mut self, slot: Slot, k: usize) -> bool {
        let now = self.now;
        let Some(leg) = self.leg_mut(slot) else {
            return false;
        };
        leg.streams[k].last_keyframe_request = now;
        let (id, msg) = (
            leg.id,
            PeerMsg::Keyframe {
                leg: leg.id,
                k: k as u8,
            },
        );
        self.peer_msgs.push_back((id.worker(), msg));
        true
    }

    /// NACKs towards a shadow go to its publisher's worker.
    pub(super) fn shadow_nack(&mut self, slot: Slot, k: usize, ssrc: u32, seqs: &[u16]) {
        let Some(leg) = self.legs.get(slot as usize).and_then(Option::as_ref) else {
            return;
        };
        let id = leg.id;
        for chunk in seqs.chunks(NACK_PER_MSG) {
            let mut part = [0u16; NACK_PER_MSG];
            part[..chunk.len()].copy_from_slice(chunk);
            let msg = PeerMsg::Nack {
                leg: id,
                k: k as u8,
                ssrc,
                seqs: part,
                n: chunk.len() as u8,
            };
            self.peer_msgs.push_back((id.worker(), msg));
        }
    }

    /// Pushes stream `k`'s packet of leg `slot` (plaintext, `muted` if it arrived muted)
    /// to every worker mirroring it; a full ring is a drop booked on the leg.
    #[inline]
    pub(super) fn push_mirrors(&mut self, slot: Slot, k: usize, muted: bool, data: &[u8]) {
        let Some(leg) = self.legs.get(slot as usize).and_then(Option::as_ref) else {
            return;
        };
        let carried = Carried::Rtp { k: k as u8, muted };
        for &(w, _) in &leg.streams[k].mirrors {
            let pushed = self
                .peers
                .get_mut(usize::from(w))
                .and_then(Option::as_mut)
                .is_some_and(|p| p.push(leg.id, carried, data));
            if pushed {
                self.mirrored = true;
            } else {
                leg.stats.count_drop(DropReason::WorkerRing);
            }
        }
    }

    /// Passes the RTCP a publisher sent (plaintext) to the workers mirroring it, once each:
    /// their listeners' sender reports are made from it.
    pub(super) fn push_mirrored_rtcp(&mut self, slot: Slot, data: &[u8]) {
        let Some(leg) = self.legs.get(slot as usize).and_then(Option::as_ref) else {
            return;
        };
        for w in mirroring_workers(leg) {
            let pushed = self
                .peers
                .get_mut(usize::from(w))
                .and_then(Option::as_mut)
                .is_some_and(|p| p.push(leg.id, Carried::Rtcp, data));
            self.mirrored |= pushed;
        }
    }

    /// A packet another worker mirrored to this one: fanned out through `slot`, the shadow of
    /// its leg ([`Forwarder::shadow_slot`]), as a packet of a local source would be.
    pub fn handle_mirrored(&mut self, slot: Slot, m: Mirrored<'_>, tx: &mut TxBatch) {
        let (now, epoch) = (self.now, self.epoch);
        let Some(leg) = self.leg_mut(slot).filter(|l| l.id == m.leg) else {
            return;
        };
        let (k, muted) = match m.carried {
            Carried::Rtcp => return self.note_sender_reports(slot, m.data),
            Carried::Rtp { k, muted } => (usize::from(k & 1), muted),
        };
        let Some(header) = RtpHeader::read(m.data) else {
            return;
        };
        let stream = &mut leg.streams[k];
        stream.last_in_ssrc = Some(header.ssrc);
        stream.rx.on_packet(
            &header,
            reports::arrival_units(now, epoch, stream.clock_rate),
        );
        if stream.outputs.is_empty() {
            return;
        }
        if let Some(cache) = &mut stream.rtx {
            cache.insert(now, &header, m.data);
        }
        self.fan_out(slot, k, &header, m.data, muted, tx);
    }
}

/// The workers that mirror any stream of `leg`, each once (a worker mirroring both streams
/// is in both lists).
fn mirroring_workers(leg: &super::leg::Leg) -> impl Iterator<Item = u16> + '_ {
    let [audio, video] = &leg.streams;
    let only_video = video
        .mirrors
        .iter()
        .filter(|(w, _)| !audio.mirrors.iter().any(|(a, _)| a == w));
    audio.mirrors.iter().chain(only_video).map(|&(w, _)| w)
}

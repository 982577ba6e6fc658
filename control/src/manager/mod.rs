//! The session manager: one actor task that owns every session, room and subscription.
//!
//! Connections send it typed [`Msg::Request`]s and get a [`Reply`] on a oneshot; the data
//! plane's events arrive as [`Msg::Dataplane`] from a forwarding thread; timers are deadlines
//! the actor owns (`timers.rs`). Nothing else holds session state, so there are no locks: a
//! command is applied whole before the next one is looked at. The actor never waits on the
//! data plane: it hands it commands and goes on; what must wait for a worker (a `destroy`
//! answered once its ports are free) waits in the reply, finished by `Event::LegClosed`. Events are pushed into each subscribed connection's
//! bounded outbox with `try_send`: a slow client loses events (counted), it never stalls the
//! actor.

mod conn;
mod convert;
mod flows;
mod ids;
mod legs;
mod lifecycle;
mod ops;
mod proxy;
mod quality;
mod record;
mod relay_channels;
mod rooms;
#[cfg(test)]
mod scenarios;
pub mod session;
mod timers;
mod webrtc_flows;

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_dataplane::Dataplane;
use sluice_dataplane::api::{Event, LegId};
use tokio::sync::{mpsc, oneshot};

use crate::cluster::{ClusterCmd, ClusterLink, Owned, RelayData, Target};
use crate::errors::{ApiError, ErrorCode};
use crate::recordings::RecordIndex;
use crate::request::Request;
use crate::webrtc::cert::Certificate;
use crate::webrtc::data_limits::DataLimits;
use conn::Conn;
pub use conn::session_pattern;
use convert::answer_body;
pub use convert::{dp_kind, peer_sdp, remote_of, sdp_kind};
pub use ids::{RoomId, SessionId, new_id, random_ssrc, random_u64};
use quality::Transition;
use rooms::Room;
use session::{ConnId, Session};

/// How often WebRTC timers (DTLS retransmissions, ICE consent) are looked at.
const WEBRTC_TICK: Duration = Duration::from_millis(50);

/// What a connection asks of the manager.
pub enum Msg {
    Open {
        conn: ConnId,
        outbox: mpsc::Sender<Outgoing>,
    },
    Closed {
        conn: ConnId,
    },
    /// A connection that is gone for good (its cluster node died): what it owns ends now,
    /// without the disconnect grace.
    Abandoned {
        conn: ConnId,
    },
    Request {
        conn: ConnId,
        request: Request,
        reply: oneshot::Sender<Reply>,
        /// The frame as the client sent it: carried to the owner when the request is about
        /// something on another cluster node.
        frame: Arc<str>,
    },
    /// A request to run on this node, never carried elsewhere (from the cluster: a request
    /// of another node's connection, or one whose cluster-wide claim succeeded).
    Local {
        conn: ConnId,
        request: Request,
        reply: oneshot::Sender<Reply>,
    },
    /// A relay publisher here (`relay`) carries publisher `origin` of another node, fed by
    /// relay listener `listen` there: what listeners are told their publisher is, and which
    /// relay publisher that listener's data-channel events are for.
    RelayOrigin {
        relay: String,
        origin: String,
        listen: String,
    },
    /// Relay listener `listen` here, of connection `conn` (another node's relay
    /// connection), asks for its publisher's data channels: answered with a
    /// [`RelayData::Sync`] and followed by every event of them, in its outbox.
    RelaySync {
        conn: ConnId,
        listen: String,
    },
    /// A data-channel event, from another node, of the publisher that relay listener
    /// `listen` there carries: for the relay publisher it feeds here.
    RelayData {
        listen: String,
        data: RelayData,
    },
    /// An event for one of this node's connections, from the node that owns its session.
    Deliver {
        conn: ConnId,
        event: Value,
    },
    Dataplane(Event),
    Shutdown {
        done: oneshot::Sender<()>,
    },
    /// A `/metrics` scrape: counts and the live legs' counters, summed by the scrape.
    Snapshot {
        reply: oneshot::Sender<crate::metrics::Snapshot>,
    },
    /// A drain: answered once no session is left.
    WhenIdle {
        reply: oneshot::Sender<()>,
    },
}

pub type Outcome = Result<Value, ApiError>;

/// The answer to a request: now, or later (the connection sends `{ack}` meanwhile).
pub enum Reply {
    Done(Outcome),
    Wait(oneshot::Receiver<Outcome>),
}

/// Server-initiated frames for a connection: the `data` of an event, or (only for another
/// node's relay connection) a data-channel event of the publisher its relay listener carries.
#[derive(Debug)]
pub enum Outgoing {
    Event(Value),
    Relay { listen: SessionId, data: RelayData },
}

#[derive(Debug)]
pub enum Timer {
    Wait {
        session: SessionId,
        generation: u64,
    },
    Ready {
        session: SessionId,
        generation: u64,
    },
    Grace {
        conn: ConnId,
    },
    /// A `destroy` whose legs' closings have not all been confirmed: answered anyway.
    Closing {
        wait: u64,
    },
    /// A relay publisher (a stream from another cluster node) that may have no listener
    /// left: destroyed if it still has none.
    RelayLinger {
        publisher: SessionId,
    },
}

pub struct Manager {
    dp: Dataplane,
    announced_ip: IpAddr,
    disconnect_grace: Duration,
    sessions: HashMap<SessionId, Session>,
    /// The sessions that have a WebRTC transport, which is all `webrtc_tick` visits: a
    /// server with thousands of plain calls does not walk them all every 50 ms.
    webrtc_sessions: BTreeSet<SessionId>,
    rooms: HashMap<RoomId, Room>,
    leg_owner: HashMap<LegId, SessionId>,
    conns: HashMap<ConnId, Conn>,
    next_group: u64,
    sdp_version: u64,
    /// The record dir and what was recorded (shared with the HTTP handlers).
    recordings: Arc<RecordIndex>,
    /// The DTLS certificate of every WebRTC session, generated at start.
    cert: Certificate,
    /// Deadlines: session timeouts, disconnect grace, closings that take too long.
    timers: timers::Timers,
    /// `destroy` replies waiting for their legs' `Event::LegClosed`.
    closings: lifecycle::Closings,
    /// Admission, drain waiters, leg counters for `/metrics`.
    operations: ops::Operations,
    /// Every WebRTC transport's data-channel limits (`--data-*`).
    data_limits: DataLimits,
    /// The cluster engine (`--cluster`); `None`: this node alone.
    cluster: Option<ClusterLink>,
    /// Relay publishers here, and the remote publisher each carries.
    relay_origins: HashMap<SessionId, SessionId>,
    /// Data channels across nodes (`relay_channels.rs`): the relay listeners here whose
    /// node gets their publisher's channel events, and the channels of the relay
    /// publishers here.
    relay_data: relay_channels::RelayChannels,
    /// Rooms a publisher made during the request being handled: claimed cluster-wide
    /// before that request is answered.
    rooms_to_claim: Vec<RoomId>,
}

impl Manager {
    pub fn new(dp: Dataplane, announced_ip: IpAddr, disconnect_grace: Duration) -> Self {
        Manager {
            dp,
            announced_ip,
            disconnect_grace,
            timers: timers::Timers::default(),
            closings: lifecycle::Closings::default(),
            operations: ops::Operations::default(),
            data_limits: DataLimits::default(),
            cluster: None,
            relay_origins: HashMap::new(),
            relay_data: relay_channels::RelayChannels::default(),
            rooms_to_claim: Vec::new(),
            sessions: HashMap::new(),
            webrtc_sessions: BTreeSet::new(),
            rooms: HashMap::new(),
            leg_owner: HashMap::new(),
            conns: HashMap::new(),
            next_group: 1,
            sdp_version: 1,
            recordings: Arc::new(RecordIndex::new(crate::Config::default().record_dir)),
            // Like the ICE credentials' RNG, certificate generation fails only when the
            // system's crypto is broken: nothing to serve WebRTC with.
            cert: Certificate::generate().expect("generate the DTLS certificate"),
        }
    }

    /// Where `recorder_action` writes (the default is the default `--record-dir`).
    pub fn with_recordings(mut self, index: Arc<RecordIndex>) -> Self {
        self.recordings = index;
        self
    }

    /// The data-channel limits of the sessions to come.
    pub fn with_data_limits(mut self, limits: DataLimits) -> Self {
        self.data_limits = limits;
        self
    }

    /// Joins a cluster: requests about other nodes' sessions and rooms go to their owners.
    pub fn with_cluster(mut self, link: Option<ClusterLink>) -> Self {
        self.cluster = link;
        self
    }

    /// Runs until [`Msg::Shutdown`] (or until every sender is gone).
    pub async fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        let mut tick = tokio::time::interval(WEBRTC_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.notify_idle();
            let deadline = self.timers.next_deadline();
            let msg = tokio::select! {
                msg = rx.recv() => match msg {
                    Some(msg) => msg,
                    None => break,
                },
                _ = tick.tick() => {
                    self.webrtc_tick();
                    continue;
                }
                _ = sleep_until(deadline) => {
                    self.fire_timers(Instant::now());
                    continue;
                }
            };
            match msg {
                Msg::Open { conn, outbox } => {
                    self.conns.insert(conn, Conn::new(outbox));
                }
                Msg::Closed { conn } => self.connection_closed(conn),
                Msg::Abandoned { conn } => {
                    self.conns.remove(&conn);
                    self.destroy_owned_by(conn);
                }
                Msg::Request {
                    conn,
                    request,
                    reply,
                    frame,
                } => {
                    let _span = self.request_span(&request).entered();
                    let r = match self.route(conn, &request, &frame) {
                        Some(r) => r,
                        None => self.handle(conn, request),
                    };
                    let _ = reply.send(r);
                }
                Msg::Local {
                    conn,
                    request,
                    reply,
                } => {
                    let _span = self.request_span(&request).entered();
                    let r = self.handle(conn, request);
                    let _ = reply.send(r);
                }
                Msg::RelayOrigin {
                    relay,
                    origin,
                    listen,
                } => {
                    let relay = SessionId::from(relay);
                    if self.sessions.contains_key(&relay) {
                        self.relay_data.fed_by(listen.into(), relay.clone());
                        self.relay_origins.insert(relay, origin.into());
                    }
                }
                Msg::RelaySync { conn, listen } => self.relay_sync(conn, &listen.into()),
                Msg::RelayData { listen, data } => self.relay_data_in(&listen.into(), data),
                Msg::Deliver { conn, event } => {
                    if let Some(c) = self.conns.get_mut(&conn)
                        && c.outbox.try_send(Outgoing::Event(event)).is_err()
                    {
                        c.dropped_events += 1;
                    }
                }
                Msg::Dataplane(ev) => {
                    let _span = self.event_span(&ev).entered();
                    self.dataplane_event(ev);
                }
                Msg::Shutdown { done } => {
                    self.shutdown();
                    let _ = done.send(());
                    return;
                }
                Msg::Snapshot { reply } => {
                    let _ = reply.send(self.snapshot());
                }
                Msg::WhenIdle { reply } => self.when_idle(reply),
            }
        }
        self.shutdown();
    }

    fn handle(&mut self, conn: ConnId, request: Request) -> Reply {
        let done = |r: Outcome| Reply::Done(r);
        match request {
            Request::Login { .. } => done(Ok(json!({}))),
            Request::Subscribe(p) => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.subscribe(p);
                }
                done(Ok(json!({})))
            }
            Request::Unsubscribe(p) => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.unsubscribe(&p);
                }
                done(Ok(json!({})))
            }
            Request::Create(c) => {
                let created = self.admit_create(&c).and_then(|()| self.create(conn, *c));
                // The rooms it made (a publisher's), if they stand.
                let claims: Vec<String> = std::mem::take(&mut self.rooms_to_claim)
                    .into_iter()
                    .filter(|r| self.rooms.contains_key(r))
                    .map(|r| r.to_string())
                    .collect();
                let id = match &created {
                    Ok(v) => v
                        .get("session_id")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    Err(_) => None,
                };
                let (Some(id), Some(link), Ok(value)) = (id, self.cluster.clone(), &created) else {
                    if let Some(link) = &self.cluster {
                        for id in claims {
                            link.send(ClusterCmd::ClaimQuietly {
                                what: Owned::Room,
                                id,
                            });
                        }
                    }
                    return done(created);
                };
                if crate::cluster::is_relay(conn) {
                    // A relay publisher: gone again unless a listener comes.
                    self.relay_maybe_idle(&SessionId::from(id.as_str()));
                }
                // Answered once the cluster knows where the session (and its room) lives.
                let (tx, rx) = oneshot::channel();
                link.send(ClusterCmd::Own {
                    what: Owned::Session,
                    id,
                    claim_first: claims,
                    reply: Some((value.clone(), tx)),
                });
                Reply::Wait(rx)
            }
            Request::Destroy { session_id } => self.destroy_request(&session_id),
            Request::SetAnswer { session_id, answer } => {
                done(self.set_answer(&session_id, &answer))
            }
            Request::GetOffer { session_id } => done(
                self.session(&session_id)
                    .map(|s| json!({ "offer": s.offer.to_json() })),
            ),
            Request::GetAnswer { session_id } => self.get_answer(&session_id),
            Request::GetProxyOffer { session_id } => done(self.get_proxy_offer(conn, &session_id)),
            Request::GetInfo { session_id } => done(self.session_info(&session_id)),
            Request::GetList => {
                let mut list: Vec<(&SessionId, &Session)> = self.sessions.iter().collect();
                list.sort_by_key(|(id, _)| *id);
                let node = self.cluster.as_ref().map(|c| c.node_id.clone());
                let list: Vec<Value> = list
                    .into_iter()
                    .map(|(id, s)| {
                        let mut v =
                            json!({ "session_id": id, "type": s.kind.session_type().as_str() });
                        if let Some(n) = &node {
                            v["node"] = json!(n.as_ref());
                        }
                        v
                    })
                    .collect();
                done(Ok(Value::Array(list)))
            }
            Request::UpdateMedia { session_id, media } => done(
                self.session_mut(&session_id)
                    .map(|s| {
                        s.media.apply(&media);
                    })
                    .map(|()| {
                        self.apply_mute(&session_id);
                        if media.bitrate.is_some() {
                            // At once, even when unchanged: the REMB goes out again.
                            self.push_bitrate(&session_id, true);
                        }
                        if media.mute_video == Some(false) {
                            self.video_unmuted(&session_id);
                        }
                        json!({})
                    }),
            ),
            Request::SetType {
                session_id,
                publisher_id,
            } => done(self.set_type(&session_id, &publisher_id)),
            Request::RecorderAction {
                session_id,
                action,
                uri,
            } => self.recorder_action(&session_id, action, uri),
            Request::SetCandidate {
                session_id,
                mid,
                mline_index,
                candidate,
            } => done(self.set_candidate(&session_id, mid.as_deref(), mline_index, &candidate)),
            Request::SetCandidateEnd { session_id } => done(self.set_candidate_end(&session_id)),
            Request::RoomCreate(c) => done(self.room_create(c)),
            Request::RoomDestroy { room_id } => {
                let destroyed = self.room_destroy(&room_id);
                match (&self.cluster, destroyed) {
                    // Answered once the cluster has dropped the room's record: the id is free
                    // for a new room when the client hears it is gone.
                    (Some(link), Ok(value)) => {
                        let (tx, rx) = oneshot::channel();
                        link.send(ClusterCmd::Disown {
                            what: Owned::Room,
                            id: room_id.to_string(),
                            reply: Some((value, tx)),
                        });
                        Reply::Wait(rx)
                    }
                    (_, destroyed) => done(destroyed),
                }
            }
            Request::RoomGetInfo { room_id } => done(self.room_info(&room_id)),
            Request::RoomGetList => done(Ok(self.room_list())),
            Request::NodeDrain { timeout } => done(self.drain_request(timeout)),
            Request::NodeGetList => match &self.cluster {
                Some(link) => {
                    let (tx, rx) = oneshot::channel();
                    link.send(ClusterCmd::Nodes { reply: tx });
                    Reply::Wait(rx)
                }
                None => done(Ok(json!([{
                    "node_id": crate::config::host_name(),
                    "state": if self.draining() { "draining" } else { "serving" },
                    "sessions": self.sessions.len(),
                }]))),
            },
        }
    }

    /// In a cluster: the reply of a request that is about another node (carried to its
    /// owner) or about the whole cluster (asked of every node); `None`: handled here.
    fn route(&mut self, conn: ConnId, request: &Request, frame: &Arc<str>) -> Option<Reply> {
        let link = self.cluster.clone()?;
        let (tx, rx) = oneshot::channel();
        let forward = |to, reply| ClusterCmd::Forward {
            to,
            conn,
            frame: Arc::clone(frame),
            reply,
        };
        let cmd = match request {
            Request::Create(c) => match &c.node {
                Some(node) if **node != *link.node_id => forward(Target::Node(node.clone()), tx),
                // A proxy slave lives with its master.
                _ if c
                    .master_id
                    .as_ref()
                    .is_some_and(|m| !self.sessions.contains_key(m)) =>
                {
                    let master = c
                        .master_id
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default();
                    forward(Target::Session(master), tx)
                }
                _ => match &c.publisher_id {
                    // A listener of a publisher on another node: served here, from a relay.
                    Some(p)
                        if c.session_type == crate::request::SessionType::Listen
                            && !self.sessions.contains_key(p) =>
                    {
                        ClusterCmd::Listen {
                            conn,
                            create: c.clone(),
                            reply: tx,
                        }
                    }
                    _ => return None,
                },
            },
            Request::SetType {
                session_id,
                publisher_id,
            } if self.sessions.contains_key(session_id)
                && !self.sessions.contains_key(publisher_id) =>
            {
                ClusterCmd::SetType {
                    conn,
                    session_id: session_id.clone(),
                    publisher_id: publisher_id.clone(),
                    reply: tx,
                }
            }
            Request::Subscribe(_) | Request::Unsubscribe(_) => {
                // Here, and on every other node for the events of what lives there; answered
                // once every node has it.
                let value = match self.handle(conn, request.clone()) {
                    Reply::Done(Ok(v)) => v,
                    other => return Some(other),
                };
                ClusterCmd::Broadcast {
                    conn,
                    frame: Arc::clone(frame),
                    value,
                    reply: tx,
                }
            }
            Request::GetList | Request::RoomGetList => {
                let local = match self.handle(conn, request.clone()) {
                    Reply::Done(Ok(Value::Array(list))) => list,
                    other => return Some(other),
                };
                ClusterCmd::FanOut {
                    frame: Arc::clone(frame),
                    local,
                    reply: tx,
                }
            }
            Request::RoomCreate(c) => {
                let mut c = c.clone();
                let room_id = c.room_id.get_or_insert_with(RoomId::random).clone();
                if self.rooms.contains_key(&room_id) {
                    return None;
                }
                ClusterCmd::ClaimRoom {
                    room_id: room_id.to_string(),
                    conn,
                    request: Request::RoomCreate(c),
                    reply: tx,
                }
            }
            Request::RoomDestroy { room_id } | Request::RoomGetInfo { room_id } => {
                if self.rooms.contains_key(room_id) {
                    return None;
                }
                forward(Target::Room(room_id.to_string()), tx)
            }
            other => match other.session_id() {
                Some(id) if !self.sessions.contains_key(id) => {
                    forward(Target::Session(id.to_string()), tx)
                }
                _ => return None,
            },
        };
        link.send(cmd);
        Some(Reply::Wait(rx))
    }

    /// The publisher id listeners are told: a relay publisher stands for the remote
    /// publisher it carries.
    fn public_publisher_id<'a>(&'a self, publisher: &'a SessionId) -> &'a SessionId {
        self.relay_origins.get(publisher).unwrap_or(publisher)
    }

    /// Drops the record of a session or room that ended here (a cluster only).
    fn cluster_disown(&self, what: Owned, id: &str) {
        if let Some(link) = &self.cluster {
            link.send(ClusterCmd::Disown {
                what,
                id: id.to_string(),
                reply: None,
            });
        }
    }

    fn get_answer(&mut self, id: &SessionId) -> Reply {
        let s = match self.sessions.get_mut(id) {
            Some(s) => s,
            None => return Reply::Done(Err(ApiError::session_not_found(id.as_str()))),
        };
        if let Some(a) = &s.answer {
            return Reply::Done(Ok(json!({ "answer": a.to_json() })));
        }
        let (tx, rx) = oneshot::channel();
        s.answer_waiters.push(tx);
        Reply::Wait(rx)
    }

    fn session(&self, id: &SessionId) -> Result<&Session, ApiError> {
        self.sessions
            .get(id)
            .ok_or_else(|| ApiError::session_not_found(id.as_str()))
    }

    fn session_mut(&mut self, id: &SessionId) -> Result<&mut Session, ApiError> {
        self.sessions
            .get_mut(id)
            .ok_or_else(|| ApiError::session_not_found(id.as_str()))
    }

    // ----- connections and events -----

    fn subscribe_to_session(&mut self, conn: ConnId, id: &SessionId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.sessions.insert(id.clone());
        }
    }

    /// Sends an event to every connection with a matching subscription (`obj_id`: a session's
    /// or a room's id).
    fn emit(&mut self, subclass: &str, kind: &str, obj_id: &str, body: Value) {
        let data = json!({
            "class": "media", "subclass": subclass, "type": kind, "obj_id": obj_id, "body": body,
        });
        for (id, c) in &mut self.conns {
            if !c.wants(subclass, kind, obj_id) {
                continue;
            }
            if c.outbox.try_send(Outgoing::Event(data.clone())).is_err() {
                c.dropped_events += 1;
                tracing::warn!(
                    conn = id.0,
                    dropped = c.dropped_events,
                    "slow client: event dropped"
                );
            }
        }
    }

    fn emit_session(&mut self, id: &SessionId, kind: &str, body: Value) {
        self.emit("session", kind, id.as_str(), body);
    }

    fn connection_closed(&mut self, conn: ConnId) {
        self.conns.remove(&conn);
        if let Some(link) = &self.cluster
            && !crate::cluster::is_remote(conn)
        {
            link.send(ClusterCmd::ConnClosed { conn });
        }
        if !self.sessions.values().any(|s| s.owner == conn) {
            return;
        }
        if self.disconnect_grace.is_zero() {
            self.destroy_owned_by(conn);
        } else {
            self.schedule(self.disconnect_grace, Timer::Grace { conn });
        }
    }

    fn destroy_owned_by(&mut self, conn: ConnId) {
        let mut owned: Vec<SessionId> = self
            .sessions
            .values()
            .filter(|s| s.owner == conn)
            .map(|s| s.id.clone())
            .collect();
        owned.sort();
        for id in owned {
            self.destroy(&id, ErrorCode::RegisteredDown);
        }
    }

    fn dataplane_event(&mut self, ev: Event) {
        match ev {
            Event::SlowPath { leg, from, data } => self.slow_path(leg, from, &data),
            Event::SrtpRefused { leg, error } => self.srtp_refused(leg, &error.to_string()),
            Event::LegClosed { leg } => self.leg_closed(leg),
            Event::MediaUp { leg, kind } => self.media_status(leg, kind, Transition::Up),
            Event::MediaDown { leg, kind } => self.media_status(leg, kind, Transition::Down),
            Event::SlowLink {
                leg,
                nacks,
                packets,
            } => self.slow_link(leg, nacks, packets),
            Event::Latched { leg, addr, rtcp } => {
                if rtcp {
                    return;
                }
                let Some(id) = self.leg_owner.get(&leg) else {
                    return;
                };
                // The m-lines of a bundled leg share it.
                if let Some(s) = self.sessions.get_mut(id) {
                    for l in s.legs.iter_mut().filter(|l| l.info.id == leg) {
                        l.latched = Some(addr);
                    }
                }
            }
        }
    }

    fn schedule(&mut self, after: Duration, timer: Timer) {
        self.timers.schedule(Instant::now() + after, timer);
    }

    /// Every timer due at `now` (the run loop's clock, or a test's).
    fn fire_timers(&mut self, now: Instant) {
        while let Some(t) = self.timers.pop_due(now) {
            self.timer(t);
        }
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

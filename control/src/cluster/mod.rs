//! Many nodes on one Redis (`--cluster`): a registry of live nodes, who owns which session
//! and room, and requests carried to the owner.
//!
//! Redis holds only who owns what, never live state (that stays in the owner's actor):
//! - `sluice:node:{id}`: the node's [`NodeRecord`], with a TTL (`--cluster-ttl`), refreshed three
//!   times per TTL; `sluice:nodes` is the set of node ids to read them by;
//! - `sluice:sess:{sid}` and `sluice:room:{rid}`: `"{node} {inc}"`, the owner and its
//!   incarnation; `sluice:owned:{node}:{inc}` lists those keys so that a dead incarnation's
//!   ownership is swept in one step (a Lua script, and only once its node key is gone or shows
//!   another incarnation, never by age);
//! - channel `sluice:rpc:{node}`: [`Bus`] messages to that node (requests, replies, events,
//!   closed connections). `PUBLISH` returns the receiver count, so a request to a node that is
//!   not listening fails at once.
//!
//! The manager actor never waits on Redis: it hands a [`ClusterCmd`] to [`ClusterLink::send`]
//! (bounded, non-blocking) and answers the client later; the engine's tasks talk to Redis with
//! a deadline on every call, and give the manager what comes back as ordinary messages:
//! [`Msg::Local`] (a request to run here, for a connection of another node), [`Msg::Deliver`]
//! (an event for one of this node's connections) and `Msg::Open`/`Msg::Closed` for the remote
//! connections that own sessions here.
//!
//! Failure: a node that cannot refresh its record for a TTL is fenced: it forgets every other
//! node (cleaning up as if they had gone), refuses cross-node work with a clear error, and
//! rejoins with a new incarnation when Redis answers again. Its local media never stops.

mod registry;
mod relay_data;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

pub use registry::{Change, NodeRecord, Registry};
pub use relay_data::{RelayData, RelayDataError};

use crate::errors::{ApiError, ErrorCode};
use crate::manager::session::ConnId;
use crate::manager::{Msg, Outcome, Outgoing, Reply, SessionId, random_u64};
use crate::ops::Ops;
use crate::request::{CreateSession, Frame, Request, parse_frame};
use crate::sdp::{CodecName, MediaKind, Sdp};

/// How long a request to another node may take before it fails with `timeout`.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(2);
/// Commands the manager may queue for the engine before they fail at once.
const QUEUE: usize = 4096;
/// Events buffered per remote connection before they are dropped.
const REMOTE_OUTBOX: usize = 1024;
/// Remote connections get ids from here up, far from the WebSocket connections'.
const REMOTE_CONN_BASE: u64 = 1 << 62;
/// The connection that owns this node's relay publishers and, on a publisher's node, in
/// whose name the relay listeners are created.
const RELAY_CONN: u64 = REMOTE_CONN_BASE - 1;
/// Session owners cached at most (then the cache starts again).
const OWNER_CACHE: usize = 65_536;
/// How long a relay publisher waits for a new listener once its last one has left.
pub const RELAY_LINGER: Duration = Duration::from_secs(5);

/// `--cluster`, `--node-id`, `--cluster-ttl`, and what the node announces.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// `redis://HOST:PORT[/DB]` or `redis+unix:///PATH`.
    pub url: String,
    pub node_id: String,
    /// Lifetime of the node's record; it is refreshed three times per TTL.
    pub ttl: Duration,
    /// Relays as SDES-SRTP (keys in the relay's SDP, carried through Redis) rather than
    /// plain RTP.
    pub relay_srtp: bool,
}

/// What a session or room record names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owned {
    Session,
    Room,
}

impl Owned {
    fn key(self, id: &str) -> String {
        match self {
            Owned::Session => format!("sluice:sess:{id}"),
            Owned::Room => format!("sluice:room:{id}"),
        }
    }
}

/// Where a forwarded request goes.
#[derive(Clone, Debug)]
pub enum Target {
    /// The owner of a session.
    Session(String),
    /// The owner of a room.
    Room(String),
    /// A node by id (`create` with `node`).
    Node(String),
}

/// What the manager asks of the engine.
pub enum ClusterCmd {
    /// Runs a request (its original frame) on the owner and answers with its outcome.
    Forward {
        to: Target,
        conn: ConnId,
        frame: Arc<str>,
        reply: oneshot::Sender<Outcome>,
    },
    /// Runs a listing request on every other live node and answers with `local` followed by
    /// their lists.
    FanOut {
        frame: Arc<str>,
        local: Vec<Value>,
        reply: oneshot::Sender<Outcome>,
    },
    /// Runs a request on every other live node, for its effect there (an event subscription
    /// of one of this node's connections), then answers `reply` with `value` (what it did
    /// here).
    Broadcast {
        conn: ConnId,
        frame: Arc<str>,
        value: Value,
        reply: oneshot::Sender<Outcome>,
    },
    /// `media/node/get_list`.
    Nodes { reply: oneshot::Sender<Outcome> },
    /// A session or room now lives here: record it, then answer `reply` with `value` (so
    /// that once a client has its reply, every node finds the session). The rooms of
    /// `claim_first` (made by a publisher's `create`) are claimed before, as
    /// [`ClusterCmd::ClaimQuietly`] does, so that they are found too.
    Own {
        what: Owned,
        id: String,
        claim_first: Vec<String>,
        reply: Option<(Value, oneshot::Sender<Outcome>)>,
    },
    /// It ended here: drop its record (if it is this node's), then answer `reply` with its
    /// value, if any (so that a destroyed room's id is free once the client has its reply).
    Disown {
        what: Owned,
        id: String,
        reply: Option<(Value, oneshot::Sender<Outcome>)>,
    },
    /// Claims an id if no node holds it (a room a publisher made); nothing to answer.
    ClaimQuietly { what: Owned, id: String },
    /// Claims a room id cluster-wide (`SET NX`); once claimed, runs `request` here (as
    /// [`Msg::Local`]) and answers with its outcome; a taken id is `room_already_exists`.
    ClaimRoom {
        room_id: String,
        conn: ConnId,
        request: Request,
        reply: oneshot::Sender<Outcome>,
    },
    /// One of this node's API connections closed: the owners of what it drove elsewhere
    /// start their disconnect grace.
    ConnClosed { conn: ConnId },
    /// A listener (`create`) of a publisher on another node: served here, by a local relay
    /// publisher fed from that node (one per publisher and node, opened on first use).
    Listen {
        conn: ConnId,
        create: Box<CreateSession>,
        reply: oneshot::Sender<Outcome>,
    },
    /// `set_type` of a listener here to a publisher on another node (through its relay).
    SetType {
        conn: ConnId,
        session_id: SessionId,
        publisher_id: SessionId,
        reply: oneshot::Sender<Outcome>,
    },
}

impl ClusterCmd {
    /// Answers a command that could not be queued.
    fn fail(self, e: ApiError) {
        match self {
            ClusterCmd::Forward { reply, .. }
            | ClusterCmd::FanOut { reply, .. }
            | ClusterCmd::Nodes { reply }
            | ClusterCmd::ClaimRoom { reply, .. }
            | ClusterCmd::Broadcast { reply, .. }
            | ClusterCmd::Listen { reply, .. }
            | ClusterCmd::SetType { reply, .. } => {
                let _ = reply.send(Err(e));
            }
            ClusterCmd::Own {
                reply: Some((value, reply)),
                ..
            }
            | ClusterCmd::Disown {
                reply: Some((value, reply)),
                ..
            } => {
                tracing::warn!("cluster: {e}: a record was not updated");
                let _ = reply.send(Ok(value));
            }
            ClusterCmd::Own { .. }
            | ClusterCmd::Disown { .. }
            | ClusterCmd::ClaimQuietly { .. }
            | ClusterCmd::ConnClosed { .. } => {
                tracing::warn!("cluster: {e}: a record was not updated");
            }
        }
    }
}

/// The manager's handle on the engine.
#[derive(Clone)]
pub struct ClusterLink {
    pub node_id: Arc<str>,
    tx: mpsc::Sender<ClusterCmd>,
}

impl ClusterLink {
    /// Queues a command without waiting; a full queue answers it with an error at once.
    pub fn send(&self, cmd: ClusterCmd) {
        match self.tx.try_send(cmd) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(cmd)) => cmd.fail(ApiError::new(
                ErrorCode::InternalError,
                "cluster: too many requests in flight",
            )),
            Err(mpsc::error::TrySendError::Closed(cmd)) => {
                cmd.fail(ApiError::new(ErrorCode::ProcessDown, "cluster: stopped"))
            }
        }
    }
}

/// The engine before it runs (it needs the runtime and the manager's inbox).
pub struct Pending {
    config: ClusterConfig,
    rx: mpsc::Receiver<ClusterCmd>,
}

/// The link for the manager and the engine to start once the runtime runs.
pub fn channel(config: ClusterConfig) -> (ClusterLink, Pending) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let link = ClusterLink {
        node_id: Arc::from(config.node_id.as_str()),
        tx,
    };
    (link, Pending { config, rx })
}

/// A message on a node's channel.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
enum Bus {
    /// Run `frame` for connection `conn` of node `from` (incarnation `inc`); reply to `from`.
    Req {
        corr: u64,
        from: String,
        inc: u64,
        conn: u64,
        frame: String,
    },
    /// The outcome of request `corr`: `{result:"ok", data}` or `{result:"error", data}`.
    Rep { corr: u64, ok: bool, data: Value },
    /// An event for connection `conn` of the receiving node.
    Ev { conn: u64, data: Value },
    /// Connection `conn` of node `from` closed.
    Closed { from: String, inc: u64, conn: u64 },
    /// Node `from` (incarnation `inc`) asks for the data channels of the publisher that its
    /// relay listener `listen` here carries: a [`RelayData::Sync`] answers, and from then on
    /// every channel event of that publisher follows as [`Bus::Data`].
    DataSync {
        from: String,
        inc: u64,
        listen: String,
    },
    /// A data-channel event of the publisher that relay listener `listen` (on the sending
    /// node) carries: a [`RelayData`] in its bus form, parsed by the receiver.
    Data { listen: String, data: Value },
}

fn channel_of(node: &str) -> String {
    format!("sluice:rpc:{node}")
}

fn node_key(node: &str) -> String {
    format!("sluice:node:{node}")
}

fn owned_set(node: &str, inc: u64) -> String {
    format!("sluice:owned:{node}:{inc}")
}

/// Deletes what a dead incarnation owned, unless its node key shows it alive.
/// KEYS: none (ids are built inside); ARGV: node id, incarnation.
const SWEEP: &str = r#"
local cur = redis.call('GET', 'sluice:node:' .. ARGV[1])
if cur then
  local ok, rec = pcall(cjson.decode, cur)
  if ok and tostring(rec['inc']) == ARGV[2] then return 0 end
end
local set = 'sluice:owned:' .. ARGV[1] .. ':' .. ARGV[2]
local owner = ARGV[1] .. ' ' .. ARGV[2]
for _, key in ipairs(redis.call('SMEMBERS', set)) do
  if redis.call('GET', key) == owner then redis.call('DEL', key) end
end
redis.call('DEL', set)
if not cur then redis.call('SREM', 'sluice:nodes', ARGV[1]) end
return 1
"#;

/// Drops a record only if it still names this owner (never another node's).
/// KEYS: the key; ARGV: "node inc", the owner's set.
const DISOWN: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
redis.call('SREM', ARGV[2], KEYS[1])
return 1
"#;

/// Claims a key for an owner: set only if absent, and listed in the owner's set.
/// KEYS: the key; ARGV: "node inc", the owner's set.
const CLAIM: &str = r#"
if redis.call('SET', KEYS[1], ARGV[1], 'NX') then
  redis.call('SADD', ARGV[2], KEYS[1])
  return 1
end
return 0
"#;

/// A session driven from here that lives on another node.
struct Driven {
    node: String,
    inc: u64,
    conns: BTreeSet<ConnId>,
}

/// A stream from a publisher on another node, fed into a local relay publisher.
#[derive(Clone, Debug)]
struct Relay {
    node: String,
    /// The relay listener on the publisher's node.
    listen: String,
    /// The relay publisher here, which this node's listeners listen to.
    publisher: String,
}

type RelayWaiter = oneshot::Sender<Result<String, ApiError>>;

/// The engine's state, shared by its tasks (never held across an await).
struct State {
    inc: u64,
    /// Registered and refreshing: cross-node work is allowed.
    attached: bool,
    registry: Registry,
    next_corr: u64,
    pending: HashMap<u64, oneshot::Sender<Outcome>>,
    /// Owner side: (node, inc, conn) of another node's connection → its id here.
    remote_conns: HashMap<(String, u64, u64), ConnId>,
    next_remote: u64,
    /// Origin side: sessions on other nodes that this node's connections created.
    driven: HashMap<String, Driven>,
    /// Origin side: the nodes each local connection has sent requests to.
    conn_nodes: HashMap<ConnId, BTreeSet<String>>,
    /// What this node owns (rewritten under a new incarnation after fencing).
    owned: BTreeSet<(u8, String)>,
    /// Relays into this node, by the remote publisher's id.
    relays: HashMap<String, Relay>,
    /// Owners of sessions on other nodes, as last read from Redis (a session never moves).
    owners: HashMap<String, (String, u64)>,
    /// Relays being opened: who else waits for them.
    relays_opening: HashMap<String, Vec<RelayWaiter>>,
    /// Relays being opened, by their listener there: waiting for the publisher's data
    /// channels ([`RelayData::Sync`]).
    data_syncs: HashMap<String, oneshot::Sender<()>>,
}

struct Engine {
    me: String,
    ttl: Duration,
    relay_srtp: bool,
    redis: ConnectionManager,
    manager: mpsc::Sender<Msg>,
    ops: Arc<Ops>,
    api: String,
    media: String,
    state: Mutex<State>,
}

fn not_attached() -> ApiError {
    ApiError::new(
        ErrorCode::ProcessDown,
        "cluster: this node has lost Redis; cross-node requests are refused until it rejoins",
    )
}

fn owner_value(node: &str, inc: u64) -> String {
    format!("{node} {inc}")
}

fn parse_owner(v: &str) -> Option<(String, u64)> {
    let (node, inc) = v.rsplit_once(' ')?;
    Some((node.to_string(), inc.parse().ok()?))
}

impl Pending {
    /// Connects to Redis (retrying in the background until it answers) and runs the engine.
    pub fn spawn(self, manager: mpsc::Sender<Msg>, ops: Arc<Ops>, api: String, media: String) {
        ops.cluster.enabled.store(true, Ordering::Relaxed);
        tokio::spawn(async move {
            let Pending { config, rx } = self;
            let client = match redis::Client::open(config.url.as_str()) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!("cluster: bad Redis URL {}: {e}", config.url);
                    return;
                }
            };
            let step = config.ttl / 3;
            let redis_config = redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(Some(step))
                .set_response_timeout(Some(step))
                .set_number_of_retries(1);
            let redis = loop {
                match client
                    .get_connection_manager_with_config(redis_config.clone())
                    .await
                {
                    Ok(c) => break c,
                    Err(e) => {
                        tracing::warn!("cluster: cannot reach Redis at {}: {e}", config.url);
                        tokio::time::sleep(step).await;
                    }
                }
            };
            let engine = Arc::new(Engine {
                me: config.node_id.clone(),
                ttl: config.ttl,
                relay_srtp: config.relay_srtp,
                redis,
                manager,
                ops,
                api,
                media,
                state: Mutex::new(State {
                    inc: random_u64() >> 12,
                    attached: false,
                    registry: Registry::default(),
                    next_corr: 1,
                    pending: HashMap::new(),
                    remote_conns: HashMap::new(),
                    next_remote: REMOTE_CONN_BASE,
                    driven: HashMap::new(),
                    conn_nodes: HashMap::new(),
                    owned: BTreeSet::new(),
                    relays: HashMap::new(),
                    relays_opening: HashMap::new(),
                    owners: HashMap::new(),
                    data_syncs: HashMap::new(),
                }),
            });
            Arc::clone(&engine).open_relay_conn().await;
            tokio::spawn(Arc::clone(&engine).listen(client));
            tokio::spawn(Arc::clone(&engine).heartbeat());
            engine.commands(rx).await;
        });
    }
}

impl Engine {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A Redis call with the engine's deadline.
    async fn call<T>(
        &self,
        f: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, String> {
        match tokio::time::timeout(self.ttl / 3, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("Redis did not answer in time".into()),
        }
    }

    // ----- the manager's commands -----

    async fn commands(self: Arc<Self>, mut rx: mpsc::Receiver<ClusterCmd>) {
        while let Some(cmd) = rx.recv().await {
            let engine = Arc::clone(&self);
            match cmd {
                ClusterCmd::Forward {
                    to,
                    conn,
                    frame,
                    reply,
                } => {
                    tokio::spawn(async move {
                        let _ = reply.send(engine.forward(to, conn, &frame).await);
                    });
                }
                ClusterCmd::FanOut {
                    frame,
                    local,
                    reply,
                } => {
                    tokio::spawn(async move {
                        let _ = reply.send(engine.fan_out(&frame, local).await);
                    });
                }
                ClusterCmd::Broadcast {
                    conn,
                    frame,
                    value,
                    reply,
                } => {
                    tokio::spawn(async move {
                        engine.broadcast(conn, &frame).await;
                        let _ = reply.send(Ok(value));
                    });
                }
                ClusterCmd::Nodes { reply } => {
                    let _ = reply.send(Ok(self.node_list()));
                }
                ClusterCmd::Own {
                    what,
                    id,
                    claim_first,
                    reply,
                } => {
                    tokio::spawn(async move {
                        for room in claim_first {
                            if let Err(e) = engine.claim(Owned::Room, &room).await {
                                tracing::debug!("cluster: {room} not claimed: {e}");
                            }
                        }
                        engine.own(what, id).await;
                        if let Some((value, reply)) = reply {
                            let _ = reply.send(Ok(value));
                        }
                    });
                }
                ClusterCmd::ClaimQuietly { what, id } => {
                    tokio::spawn(async move {
                        if let Err(e) = engine.claim(what, &id).await {
                            tracing::debug!("cluster: {id} not claimed: {e}");
                        }
                    });
                }
                ClusterCmd::Disown { what, id, reply } => {
                    tokio::spawn(async move {
                        engine.disown(what, id).await;
                        if let Some((value, reply)) = reply {
                            let _ = reply.send(Ok(value));
                        }
                    });
                }
                ClusterCmd::ClaimRoom {
                    room_id,
                    conn,
                    request,
                    reply,
                } => {
                    tokio::spawn(async move {
                        let outcome = match engine.claim(Owned::Room, &room_id).await {
                            Ok(true) => engine.run_here(conn, request).await,
                            Ok(false) => {
                                Err(ApiError::new(ErrorCode::RoomAlreadyExists, room_id.clone()))
                            }
                            Err(e) => Err(e),
                        };
                        let _ = reply.send(outcome);
                    });
                }
                ClusterCmd::Listen {
                    conn,
                    mut create,
                    reply,
                } => {
                    tokio::spawn(async move {
                        let publisher = create
                            .publisher_id
                            .as_ref()
                            .map(ToString::to_string)
                            .unwrap_or_default();
                        let outcome = match engine.relay_publisher(&publisher).await {
                            Ok(relay) => {
                                create.publisher_id = Some(relay.into());
                                engine.run_here(conn, Request::Create(create)).await
                            }
                            Err(e) => Err(e),
                        };
                        let _ = reply.send(outcome);
                    });
                }
                ClusterCmd::SetType {
                    conn,
                    session_id,
                    publisher_id,
                    reply,
                } => {
                    tokio::spawn(async move {
                        let outcome = match engine.relay_publisher(publisher_id.as_str()).await {
                            Ok(relay) => {
                                let request = Request::SetType {
                                    session_id,
                                    publisher_id: relay.into(),
                                };
                                engine.run_here(conn, request).await
                            }
                            Err(e) => Err(e),
                        };
                        let _ = reply.send(outcome);
                    });
                }
                ClusterCmd::ConnClosed { conn } => {
                    let (nodes, inc) = {
                        let mut st = self.lock();
                        for d in st.driven.values_mut() {
                            d.conns.remove(&conn);
                        }
                        (st.conn_nodes.remove(&conn).unwrap_or_default(), st.inc)
                    };
                    for node in nodes {
                        let msg = Bus::Closed {
                            from: self.me.clone(),
                            inc,
                            conn: conn.0,
                        };
                        let engine = Arc::clone(&self);
                        tokio::spawn(async move { engine.publish(&node, &msg).await });
                    }
                }
            }
        }
    }

    /// Runs a request on this node's manager, as if from `conn`, and waits for its outcome.
    async fn run_here(&self, conn: ConnId, request: Request) -> Outcome {
        let (tx, rx) = oneshot::channel();
        let gone = || ApiError::new(ErrorCode::ProcessDown, "server stopping");
        if self
            .manager
            .send(Msg::Local {
                conn,
                request,
                reply: tx,
            })
            .await
            .is_err()
        {
            return Err(gone());
        }
        match rx.await {
            Ok(Reply::Done(outcome)) => outcome,
            Ok(Reply::Wait(later)) => later
                .await
                .unwrap_or_else(|_| Err(ApiError::plain(ErrorCode::SessionStop))),
            Err(_) => Err(gone()),
        }
    }

    async fn owner_of(&self, what: Owned, id: &str) -> Result<(String, u64), ApiError> {
        let not_found = || match what {
            Owned::Session => ApiError::session_not_found(id),
            Owned::Room => ApiError::room_not_found(id),
        };
        if what == Owned::Session {
            // A session never moves: a cached owner stands while its incarnation lives.
            let st = self.lock();
            if let Some((node, inc)) = st.owners.get(id)
                && st.registry.inc(node) == Some(*inc)
            {
                return Ok((node.clone(), *inc));
            }
        }
        let mut redis = self.redis.clone();
        let v: Option<String> = self
            .call(redis.get(what.key(id)))
            .await
            .map_err(|e| ApiError::new(ErrorCode::ProcessDown, format!("cluster: {e}")))?;
        let (node, inc) = v.as_deref().and_then(parse_owner).ok_or_else(not_found)?;
        // A record of a dead incarnation (not swept yet) names nothing.
        let mut st = self.lock();
        let alive = st.registry.inc(&node) == Some(inc);
        if !alive || node == self.me {
            return Err(not_found());
        }
        if what == Owned::Session {
            if st.owners.len() >= OWNER_CACHE {
                st.owners.clear();
            }
            st.owners.insert(id.to_string(), (node.clone(), inc));
        }
        Ok((node, inc))
    }

    async fn forward(&self, to: Target, conn: ConnId, frame: &str) -> Outcome {
        if !self.lock().attached {
            return Err(not_attached());
        }
        let (node, inc) = match &to {
            Target::Session(id) => self.owner_of(Owned::Session, id).await?,
            Target::Room(id) => self.owner_of(Owned::Room, id).await?,
            Target::Node(node) => {
                let inc = self.lock().registry.inc(node);
                match inc {
                    Some(inc) => (node.clone(), inc),
                    None => {
                        return Err(ApiError::new(
                            ErrorCode::NoMediaserver,
                            format!("node '{node}' is not in the cluster"),
                        ));
                    }
                }
            }
        };
        self.lock()
            .conn_nodes
            .entry(conn)
            .or_default()
            .insert(node.clone());
        let outcome = self.rpc(&node, conn, frame).await;
        if let (Target::Session(id), Err(e)) = (&to, &outcome)
            && e.code == ErrorCode::SessionNotFound
        {
            self.lock().owners.remove(id);
        }
        // A session created elsewhere for one of our connections: noted, so that its
        // events and its node's death reach that connection.
        if let Ok(data) = &outcome
            && let Some(sid) = data.get("session_id").and_then(Value::as_str)
            && is_create(frame)
        {
            let mut st = self.lock();
            st.driven
                .entry(sid.to_string())
                .or_insert_with(|| Driven {
                    node: node.clone(),
                    inc,
                    conns: BTreeSet::new(),
                })
                .conns
                .insert(conn);
        }
        outcome
    }

    /// One request to `node`, answered within [`RPC_TIMEOUT`].
    async fn rpc(&self, node: &str, conn: ConnId, frame: &str) -> Outcome {
        let started = Instant::now();
        let (tx, rx) = oneshot::channel();
        let (corr, inc) = {
            let mut st = self.lock();
            let corr = st.next_corr;
            st.next_corr += 1;
            st.pending.insert(corr, tx);
            (corr, st.inc)
        };
        let msg = Bus::Req {
            corr,
            from: self.me.clone(),
            inc,
            conn: conn.0,
            frame: frame.to_string(),
        };
        let forget = || self.lock().pending.remove(&corr);
        match self.publish(node, &msg).await {
            Ok(0) => {
                forget();
                return Err(ApiError::new(
                    ErrorCode::ProcessDown,
                    format!("node '{node}' is not listening"),
                ));
            }
            Ok(_) => {}
            Err(e) => {
                forget();
                return Err(ApiError::new(
                    ErrorCode::ProcessDown,
                    format!("cluster: {e}"),
                ));
            }
        }
        let outcome = match tokio::time::timeout(RPC_TIMEOUT, rx).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(ApiError::new(ErrorCode::ProcessDown, "cluster: stopped")),
            Err(_) => {
                forget();
                Err(ApiError::new(
                    ErrorCode::Timeout,
                    format!(
                        "node '{node}' did not answer in {} s",
                        RPC_TIMEOUT.as_secs()
                    ),
                ))
            }
        };
        self.ops.cluster.request_done(started.elapsed());
        outcome
    }

    async fn publish(&self, node: &str, msg: &Bus) -> Result<u64, String> {
        let text = serde_json::to_string(msg).map_err(|e| e.to_string())?;
        let mut redis = self.redis.clone();
        self.call(redis.publish(channel_of(node), text)).await
    }

    async fn fan_out(&self, frame: &str, mut list: Vec<Value>) -> Outcome {
        let nodes: Vec<String> = {
            let st = self.lock();
            if !st.attached {
                return Ok(Value::Array(list));
            }
            st.registry
                .nodes()
                .map(|(n, _)| n.clone())
                .filter(|n| *n != self.me)
                .collect()
        };
        let replies =
            futures_util::future::join_all(nodes.iter().map(|n| self.rpc(n, ConnId(0), frame)))
                .await;
        for (node, r) in nodes.iter().zip(replies) {
            match r {
                Ok(Value::Array(more)) => list.extend(more),
                Ok(_) => {}
                Err(e) => tracing::warn!("cluster: listing on node {node} failed: {e}"),
            }
        }
        Ok(Value::Array(list))
    }

    async fn broadcast(&self, conn: ConnId, frame: &str) {
        let nodes: Vec<String> = {
            let mut st = self.lock();
            if !st.attached {
                return;
            }
            let nodes: Vec<String> = st
                .registry
                .nodes()
                .map(|(n, _)| n.clone())
                .filter(|n| *n != self.me)
                .collect();
            // Their remote connections for `conn` must close with it.
            st.conn_nodes
                .entry(conn)
                .or_default()
                .extend(nodes.iter().cloned());
            nodes
        };
        let replies =
            futures_util::future::join_all(nodes.iter().map(|n| self.rpc(n, conn, frame))).await;
        for (node, r) in nodes.iter().zip(replies) {
            if let Err(e) = r {
                tracing::warn!("cluster: {node} did not take a subscription: {e}");
            }
        }
    }

    fn node_list(&self) -> Value {
        let st = self.lock();
        let mut list: Vec<Value> = st
            .registry
            .nodes()
            .map(|(id, r)| json!({ "node_id": id, "state": r.state, "sessions": r.sessions }))
            .collect();
        if st.registry.get(&self.me).is_none() {
            list.push(json!({
                "node_id": self.me,
                "state": self.state_name(),
                "sessions": st.owned.iter().filter(|(k, _)| *k == 0).count(),
            }));
        }
        Value::Array(list)
    }

    fn state_name(&self) -> &'static str {
        if self.ops.is_draining() {
            "draining"
        } else {
            "serving"
        }
    }

    // ----- ownership -----

    fn owned_tag(what: Owned) -> u8 {
        match what {
            Owned::Session => 0,
            Owned::Room => 1,
        }
    }

    async fn own(&self, what: Owned, id: String) {
        let inc = {
            let mut st = self.lock();
            st.owned.insert((Self::owned_tag(what), id.clone()));
            st.inc
        };
        let mut redis = self.redis.clone();
        let key = what.key(&id);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .set(&key, owner_value(&self.me, inc))
            .ignore()
            .sadd(owned_set(&self.me, inc), &key)
            .ignore();
        if let Err(e) = self.call(pipe.query_async::<()>(&mut redis)).await {
            // Rewritten when the node rejoins.
            tracing::warn!("cluster: cannot record {key}: {e}");
        }
    }

    async fn disown(&self, what: Owned, id: String) {
        let inc = {
            let mut st = self.lock();
            if !st.owned.remove(&(Self::owned_tag(what), id.clone())) {
                // Another node's (this node held a shard of its room), or never recorded.
                return;
            }
            st.inc
        };
        let mut redis = self.redis.clone();
        let key = what.key(&id);
        let dropped: Result<i64, String> = self
            .call(
                redis::Script::new(DISOWN)
                    .key(&key)
                    .arg(owner_value(&self.me, inc))
                    .arg(owned_set(&self.me, inc))
                    .invoke_async(&mut redis),
            )
            .await;
        if let Err(e) = dropped {
            tracing::warn!("cluster: cannot drop {key}: {e}");
        }
    }

    /// Claims `id` for this node: false when another owner holds it.
    async fn claim(&self, what: Owned, id: &str) -> Result<bool, ApiError> {
        let inc = {
            let st = self.lock();
            if !st.attached {
                return Err(not_attached());
            }
            st.inc
        };
        let key = what.key(id);
        let mut redis = self.redis.clone();
        let claimed: i64 = self
            .call(
                redis::Script::new(CLAIM)
                    .key(&key)
                    .arg(owner_value(&self.me, inc))
                    .arg(owned_set(&self.me, inc))
                    .invoke_async(&mut redis),
            )
            .await
            .map_err(|e| ApiError::new(ErrorCode::ProcessDown, format!("cluster: {e}")))?;
        if claimed == 1 {
            self.lock()
                .owned
                .insert((Self::owned_tag(what), id.to_string()));
        }
        Ok(claimed == 1)
    }

    // ----- relays -----

    /// The local relay publisher of remote publisher `publisher`: the open one, or a new one
    /// (single-flight: concurrent listeners wait for the same relay).
    async fn relay_publisher(self: &Arc<Self>, publisher: &str) -> Result<String, ApiError> {
        let rx = {
            let mut st = self.lock();
            if !st.attached {
                return Err(not_attached());
            }
            if let Some(r) = st.relays.get(publisher) {
                return Ok(r.publisher.clone());
            }
            match st.relays_opening.get_mut(publisher) {
                Some(waiters) => {
                    let (tx, rx) = oneshot::channel();
                    waiters.push(tx);
                    Some(rx)
                }
                None => {
                    st.relays_opening.insert(publisher.to_string(), Vec::new());
                    None
                }
            }
        };
        if let Some(rx) = rx {
            return rx.await.unwrap_or_else(|_| Err(not_attached()));
        }
        let opened = self.open_relay(publisher).await;
        let waiters = {
            let mut st = self.lock();
            if let Ok(r) = &opened {
                st.relays.insert(publisher.to_string(), r.clone());
                self.ops
                    .cluster
                    .relays_in
                    .store(st.relays.len() as u64, Ordering::Relaxed);
            }
            st.relays_opening.remove(publisher).unwrap_or_default()
        };
        let result = opened.map(|r| r.publisher);
        for w in waiters {
            let _ = w.send(result.clone());
        }
        result
    }

    /// Opens a relay, receiver first: the relay listener on the publisher's node makes the
    /// offer (its media address, the publisher's codecs), a relay publisher here answers it
    /// (this node's ports), and the answer starts the stream.
    async fn open_relay(&self, publisher: &str) -> Result<Relay, ApiError> {
        let relay = ConnId(RELAY_CONN);
        let (node, inc) = self.owner_of(Owned::Session, publisher).await?;
        let profile = if self.relay_srtp { "srtp" } else { "rtp" };
        let create = request_frame(
            "create",
            json!({ "type": "listen", "publisher_id": publisher, "sdp_type": profile }),
        );
        let created = self.rpc(&node, relay, &create).await?;
        let listen = created["session_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let offer = created["offer"]["sdp"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        self.lock().driven.insert(
            listen.clone(),
            Driven {
                node: node.clone(),
                inc,
                conns: BTreeSet::from([relay]),
            },
        );
        let abandon = |why: ApiError| self.abandon_relay(&node, &listen, why);
        let info = match self
            .rpc(
                &node,
                relay,
                &request_frame("get_info", json!({ "session_id": listen })),
            )
            .await
        {
            Ok(info) => info,
            Err(e) => return abandon(e).await,
        };
        let mut data = json!({
            "type": "publish",
            "offer": { "sdp": offer, "sdp_type": profile },
            "room_id": info["room_id"],
        });
        let sdp = match Sdp::parse(&offer) {
            Ok(sdp) => sdp,
            // A publisher of data channels alone: its relay would carry no stream, and
            // without one there is no relay publisher to feed the channels to.
            Err(crate::sdp::SdpError::NoMedia) => {
                let why = format!(
                    "publisher {publisher} sends no audio or video: a publisher of data \
                     channels alone is listened to on its own node ({node})"
                );
                return abandon(ApiError::new(ErrorCode::InvalidPublisher, why)).await;
            }
            Err(e) => return abandon(ApiError::invalid(format!("relay offer: {e}"))).await,
        };
        for m in &sdp.media {
            let Some(codec) = m.codecs.first().and_then(|c| CodecName::parse(&c.name)) else {
                continue;
            };
            match m.kind {
                MediaKind::Audio => data["room_audio_codec"] = json!(codec.as_str()),
                MediaKind::Video => data["room_video_codec"] = json!(codec.as_str()),
                _ => {}
            }
        }
        let request = match parse_frame(&request_frame("create", data)) {
            Ok(Frame::Request { request, .. }) => request,
            Ok(Frame::Ignore) => return abandon(ApiError::invalid("relay offer")).await,
            Err(fe) => return abandon(fe.error).await,
        };
        let published = match self.run_here(relay, request).await {
            Ok(v) => v,
            Err(e) => return abandon(e).await,
        };
        let here = published["session_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let answer = published["answer"]["sdp"].as_str().unwrap_or_default();
        let set_answer = request_frame(
            "set_answer",
            json!({ "session_id": listen, "answer": { "sdp": answer, "sdp_type": profile } }),
        );
        if let Err(e) = self.rpc(&node, relay, &set_answer).await {
            let destroy = Request::Destroy {
                session_id: here.as_str().into(),
            };
            let _ = self.run_here(relay, destroy).await;
            return abandon(e).await;
        }
        tracing::info!(
            %node, publisher, relay_listener = %listen, relay_publisher = %here,
            "cluster: relay opened"
        );
        let _ = self
            .manager
            .send(Msg::RelayOrigin {
                relay: here.clone(),
                origin: publisher.to_string(),
                listen: listen.clone(),
            })
            .await;
        self.sync_relay_data(&node, &listen).await;
        Ok(Relay {
            node,
            listen,
            publisher: here,
        })
    }

    /// Asks the publisher's node for its data channels (once the manager knows the relay:
    /// [`Msg::RelayOrigin`] is queued before) and waits, bounded, until they are here, so that
    /// the relay's first listener is offered a data line when the publisher has one. Without
    /// an answer in time the relay goes on (its media does not depend on it); a late answer
    /// still applies.
    async fn sync_relay_data(&self, node: &str, listen: &str) {
        let (tx, rx) = oneshot::channel();
        let inc = {
            let mut st = self.lock();
            st.data_syncs.insert(listen.to_string(), tx);
            st.inc
        };
        let ask = Bus::DataSync {
            from: self.me.clone(),
            inc,
            listen: listen.to_string(),
        };
        let synced = match self.publish(node, &ask).await {
            Ok(n) if n > 0 => tokio::time::timeout(RPC_TIMEOUT, rx)
                .await
                .is_ok_and(|r| r.is_ok()),
            _ => false,
        };
        if !synced {
            self.lock().data_syncs.remove(listen);
            tracing::warn!(%node, relay_listener = %listen, "cluster: no data-channel state for a relay");
        }
    }

    /// A relay that could not be opened: its listener on the publisher's node goes.
    async fn abandon_relay(
        &self,
        node: &str,
        listen: &str,
        why: ApiError,
    ) -> Result<Relay, ApiError> {
        let destroy = request_frame("destroy", json!({ "session_id": listen }));
        let _ = self.rpc(node, ConnId(RELAY_CONN), &destroy).await;
        Err(why)
    }

    /// Opens the relay connection with the manager and watches its events: a relay whose
    /// listener (there) or publisher (here) ended is taken down on both sides.
    async fn open_relay_conn(self: Arc<Self>) {
        let (tx, mut rx) = mpsc::channel::<Outgoing>(REMOTE_OUTBOX);
        let conn = ConnId(RELAY_CONN);
        if self
            .manager
            .send(Msg::Open { conn, outbox: tx })
            .await
            .is_err()
        {
            return;
        }
        tokio::spawn(async move {
            while let Some(out) = rx.recv().await {
                let Outgoing::Event(data) = out else {
                    continue;
                };
                if data["subclass"] != "session" || data["type"] != "destroyed" {
                    continue;
                }
                let Some(id) = data["obj_id"].as_str().map(str::to_string) else {
                    continue;
                };
                let ended = {
                    let mut st = self.lock();
                    let key = st
                        .relays
                        .iter()
                        .find(|(_, r)| r.listen == id || r.publisher == id)
                        .map(|(p, _)| p.clone());
                    let ended = key.and_then(|k| st.relays.remove(&k));
                    self.ops
                        .cluster
                        .relays_in
                        .store(st.relays.len() as u64, Ordering::Relaxed);
                    ended
                };
                let Some(r) = ended else { continue };
                tracing::info!(node = %r.node, relay_publisher = %r.publisher, "cluster: relay closed");
                let engine = Arc::clone(&self);
                tokio::spawn(async move {
                    if r.listen == id {
                        let destroy = Request::Destroy {
                            session_id: r.publisher.into(),
                        };
                        let _ = engine.run_here(conn, destroy).await;
                    } else {
                        let destroy = request_frame("destroy", json!({ "session_id": r.listen }));
                        let _ = engine.rpc(&r.node, conn, &destroy).await;
                    }
                });
            }
        });
    }

    // ----- liveness -----

    async fn heartbeat(self: Arc<Self>) {
        let step = self.ttl / 3;
        let mut tick = tokio::time::interval(step);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_ok = Instant::now();
        loop {
            tick.tick().await;
            match self.refresh().await {
                Ok(read) => {
                    last_ok = Instant::now();
                    let rejoined = {
                        let mut st = self.lock();
                        let was = st.attached;
                        st.attached = true;
                        !was
                    };
                    if rejoined {
                        self.rewrite_owned().await;
                        tracing::info!(node = %self.me, "cluster: registered");
                    }
                    let changes = {
                        let mut st = self.lock();
                        let changes = st.registry.observe(read);
                        let n = st.registry.nodes().count() as u64;
                        self.ops.cluster.nodes.store(n, Ordering::Relaxed);
                        changes
                    };
                    for change in changes {
                        match change {
                            Change::Joined { node, inc } => {
                                tracing::info!(%node, inc, "cluster: node joined");
                            }
                            Change::Gone { node, inc } => self.node_gone(&node, inc).await,
                        }
                    }
                }
                Err(e) => {
                    let fence = {
                        let mut st = self.lock();
                        if st.attached && last_ok.elapsed() >= self.ttl {
                            st.attached = false;
                            // Rejoin as a new incarnation: the others will have cleaned up
                            // after this one.
                            st.inc = random_u64() >> 12;
                            Some(st.registry.clear())
                        } else {
                            None
                        }
                    };
                    tracing::warn!("cluster: heartbeat failed: {e}");
                    if let Some(changes) = fence {
                        tracing::warn!(
                            node = %self.me,
                            "cluster: lost Redis for a TTL; cross-node work stops until it answers"
                        );
                        for c in changes {
                            if let Change::Gone { node, inc } = c
                                && node != self.me
                            {
                                self.forget_node(&node, inc);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Writes this node's record and reads every node's.
    async fn refresh(&self) -> Result<Vec<(String, Option<NodeRecord>)>, String> {
        let (inc, sessions) = {
            let st = self.lock();
            (st.inc, st.owned.iter().filter(|(k, _)| *k == 0).count())
        };
        let record = NodeRecord {
            inc,
            api: self.api.clone(),
            media: self.media.clone(),
            state: self.state_name().to_string(),
            sessions: sessions as u64,
        };
        let text = serde_json::to_string(&record).map_err(|e| e.to_string())?;
        let mut redis = self.redis.clone();
        let ttl_ms = self.ttl.as_millis() as u64;
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(node_key(&self.me))
            .arg(text)
            .arg("PX")
            .arg(ttl_ms)
            .ignore()
            .sadd("sluice:nodes", &self.me)
            .ignore()
            .smembers("sluice:nodes");
        let (ids,): (Vec<String>,) = self.call(pipe.query_async(&mut redis)).await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|n| node_key(n)).collect();
        let values: Vec<Option<String>> = self.call(redis.mget(&keys)).await?;
        Ok(ids
            .into_iter()
            .zip(values)
            .map(|(id, v)| {
                let rec = v.and_then(|v| serde_json::from_str(&v).ok());
                (id, rec)
            })
            .collect())
    }

    /// After rejoining: this node's records again, under its new incarnation.
    async fn rewrite_owned(&self) {
        let owned: Vec<(u8, String)> = self.lock().owned.iter().cloned().collect();
        for (tag, id) in owned {
            let what = if tag == 0 {
                Owned::Session
            } else {
                Owned::Room
            };
            self.own(what, id).await;
        }
    }

    /// A node expired or restarted: end what depended on it, then sweep its ownership.
    async fn node_gone(&self, node: &str, inc: u64) {
        if node == self.me {
            return;
        }
        tracing::warn!(%node, inc, "cluster: node gone; cleaning up after it");
        self.forget_node(node, inc);
        let mut redis = self.redis.clone();
        let swept: Result<i64, String> = self
            .call(
                redis::Script::new(SWEEP)
                    .arg(node)
                    .arg(inc)
                    .invoke_async(&mut redis),
            )
            .await;
        if let Err(e) = swept {
            tracing::warn!(%node, "cluster: sweep failed (another node will retry): {e}");
        }
    }

    /// Local cleanup after a node's incarnation: its connections' sessions here start their
    /// grace, and this node's connections hear that the sessions there are gone.
    fn forget_node(&self, node: &str, inc: u64) {
        let (conns, lost) = {
            let mut st = self.lock();
            let mut conns = Vec::new();
            st.remote_conns.retain(|(n, i, c), local| {
                let gone = n == node && *i == inc;
                if gone {
                    conns.push((*local, *c == RELAY_CONN));
                }
                !gone
            });
            st.owners.retain(|_, (n, i)| !(n == node && *i == inc));
            let mut lost = Vec::new();
            st.driven.retain(|sid, d| {
                let gone = d.node == node && d.inc == inc;
                if gone {
                    lost.push((sid.clone(), std::mem::take(&mut d.conns)));
                }
                !gone
            });
            (conns, lost)
        };
        for (conn, relay) in conns {
            // Relays to a dead node stop at once; its clients' sessions get their grace.
            let msg = if relay {
                Msg::Abandoned { conn }
            } else {
                Msg::Closed { conn }
            };
            let _ = self.manager.try_send(msg);
        }
        for (sid, conns) in lost {
            let data = json!({
                "class": "media", "subclass": "session", "type": "destroyed", "obj_id": sid,
                "body": { "code": ErrorCode::ProcessDown.code(), "reason": ErrorCode::ProcessDown.name() },
            });
            for conn in conns {
                let _ = self.manager.try_send(Msg::Deliver {
                    conn,
                    event: data.clone(),
                });
            }
        }
    }

    // ----- the node's channel -----

    async fn listen(self: Arc<Self>, client: redis::Client) {
        let channel = channel_of(&self.me);
        loop {
            let pubsub = tokio::time::timeout(self.ttl, client.get_async_pubsub()).await;
            let mut pubsub = match pubsub {
                Ok(Ok(p)) => p,
                Ok(Err(e)) => {
                    tracing::warn!("cluster: pub/sub connection: {e}");
                    tokio::time::sleep(self.ttl / 3).await;
                    continue;
                }
                Err(_) => continue,
            };
            if let Err(e) = pubsub.subscribe(&channel).await {
                tracing::warn!("cluster: subscribe {channel}: {e}");
                tokio::time::sleep(self.ttl / 3).await;
                continue;
            }
            let mut messages = pubsub.into_on_message();
            while let Some(m) = futures_util::StreamExt::next(&mut messages).await {
                let Ok(text) = m.get_payload::<String>() else {
                    continue;
                };
                match serde_json::from_str::<Bus>(&text) {
                    Ok(msg) => self.received(msg),
                    Err(e) => tracing::warn!("cluster: bad message on {channel}: {e}"),
                }
            }
            tracing::warn!("cluster: pub/sub connection lost; reconnecting");
        }
    }

    fn received(self: &Arc<Self>, msg: Bus) {
        match msg {
            Bus::Req {
                corr,
                from,
                inc,
                conn,
                frame,
            } => {
                let engine = Arc::clone(self);
                tokio::spawn(async move {
                    let outcome = match parse_frame(&frame) {
                        Ok(Frame::Request { request, .. }) => {
                            let local = engine.remote_conn(&from, inc, conn).await;
                            engine.run_here(local, request).await
                        }
                        Ok(Frame::Ignore) => Ok(Value::Null),
                        Err(fe) => Err(fe.error),
                    };
                    let (ok, data) = match outcome {
                        Ok(v) => (true, v),
                        Err(e) => (false, e.to_data()),
                    };
                    if let Err(e) = engine.publish(&from, &Bus::Rep { corr, ok, data }).await {
                        tracing::warn!(node = %from, "cluster: reply lost: {e}");
                    }
                });
            }
            Bus::Rep { corr, ok, data } => {
                let waiter = self.lock().pending.remove(&corr);
                if let Some(w) = waiter {
                    let outcome = if ok {
                        Ok(data)
                    } else {
                        Err(ApiError::from_data(&data))
                    };
                    let _ = w.send(outcome);
                }
            }
            Bus::Ev { conn, data } => {
                if data.get("type").and_then(Value::as_str) == Some("destroyed")
                    && data.get("subclass").and_then(Value::as_str) == Some("session")
                    && let Some(sid) = data.get("obj_id").and_then(Value::as_str)
                {
                    let mut st = self.lock();
                    st.owners.remove(sid);
                    if let Some(d) = st.driven.get_mut(sid) {
                        d.conns.remove(&ConnId(conn));
                        if d.conns.is_empty() {
                            st.driven.remove(sid);
                        }
                    }
                }
                let _ = self.manager.try_send(Msg::Deliver {
                    conn: ConnId(conn),
                    event: data,
                });
            }
            Bus::Closed { from, inc, conn } => {
                let local = self.lock().remote_conns.remove(&(from, inc, conn));
                if let Some(conn) = local {
                    let _ = self.manager.try_send(Msg::Closed { conn });
                }
            }
            Bus::DataSync { from, inc, listen } => {
                // Only the relay connection of the asking node owns relay listeners here.
                let conn = self
                    .lock()
                    .remote_conns
                    .get(&(from, inc, RELAY_CONN))
                    .copied();
                match conn {
                    Some(conn) => {
                        if self
                            .manager
                            .try_send(Msg::RelaySync { conn, listen })
                            .is_err()
                        {
                            tracing::warn!("cluster: data sync lost: the manager is busy");
                        }
                    }
                    None => tracing::debug!(%listen, "cluster: data sync for no relay of ours"),
                }
            }
            Bus::Data { listen, data } => self.relay_data_in(listen, data),
        }
    }

    /// A data-channel event for one of this node's relay publishers: parsed here (what
    /// cannot be used is a counted drop) and handed to the manager; a [`RelayData::Sync`]
    /// also lets the relay's opening go on.
    fn relay_data_in(&self, listen: String, data: Value) {
        let data = match RelayData::from_wire(data) {
            Ok(d) => d,
            Err(e) => {
                self.ops.cluster.data_dropped(1);
                tracing::debug!(%listen, "cluster: {e}");
                return;
            }
        };
        let synced = matches!(data, RelayData::Sync { .. });
        let waiter = synced
            .then(|| self.lock().data_syncs.remove(&listen))
            .flatten();
        if self
            .manager
            .try_send(Msg::RelayData { listen, data })
            .is_err()
        {
            self.ops.cluster.data_dropped(1);
        }
        // After the manager has it queued: what waits goes on once it is applied.
        if let Some(w) = waiter {
            let _ = w.send(());
        }
    }

    /// This node's id for connection `conn` of `node`: opened with the manager on first use,
    /// with an outbox whose events are published back to `node`.
    async fn remote_conn(self: &Arc<Self>, node: &str, inc: u64, conn: u64) -> ConnId {
        let key = (node.to_string(), inc, conn);
        let local = {
            let mut st = self.lock();
            if let Some(c) = st.remote_conns.get(&key) {
                return *c;
            }
            let local = ConnId(st.next_remote);
            st.next_remote += 1;
            st.remote_conns.insert(key, local);
            local
        };
        let (tx, mut rx) = mpsc::channel::<Outgoing>(REMOTE_OUTBOX);
        let _ = self
            .manager
            .send(Msg::Open {
                conn: local,
                outbox: tx,
            })
            .await;
        let engine = Arc::clone(self);
        let node = node.to_string();
        tokio::spawn(async move {
            // Ends when the manager drops the connection (closed, or the node gone). One
            // message at a time, so that they arrive in the order they were queued.
            while let Some(out) = rx.recv().await {
                let msg = match out {
                    Outgoing::Event(data) => Bus::Ev { conn, data },
                    Outgoing::Relay { listen, data } => Bus::Data {
                        listen: listen.to_string(),
                        data: data.to_wire(),
                    },
                };
                match engine.publish(&node, &msg).await {
                    Ok(_) => {}
                    // Counted, not logged one by one: a publisher may send a thousand a
                    // second.
                    Err(e) if matches!(msg, Bus::Data { .. }) => {
                        engine.ops.cluster.data_dropped(1);
                        tracing::debug!(%node, "cluster: relay data lost: {e}");
                    }
                    Err(e) => tracing::warn!(%node, "cluster: event lost: {e}"),
                }
            }
        });
        local
    }
}

/// True for the connection that owns this node's relay publishers.
pub fn is_relay(conn: ConnId) -> bool {
    conn.0 == RELAY_CONN
}

/// A `media/session/CMD` frame.
fn request_frame(cmd: &str, data: Value) -> String {
    json!({ "class": "media", "subclass": "session", "cmd": cmd, "data": data }).to_string()
}

/// True for the id of another node's connection (one that owns sessions here).
pub fn is_remote(conn: ConnId) -> bool {
    conn.0 >= REMOTE_CONN_BASE
}

/// True for a `media/session/create` frame.
fn is_create(frame: &str) -> bool {
    serde_json::from_str::<Value>(frame).is_ok_and(|v| {
        v.get("cmd").and_then(Value::as_str) == Some("create")
            && v.get("subclass").and_then(Value::as_str) != Some("room")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_values_read_back() {
        assert_eq!(
            parse_owner(&owner_value("node a", 42)),
            Some(("node a".to_string(), 42))
        );
        assert_eq!(parse_owner("n1"), None);
        assert_eq!(parse_owner("n1 x"), None);
    }

    #[test]
    fn bus_messages_round_trip() {
        let m = Bus::Req {
            corr: 7,
            from: "n1".into(),
            inc: 9,
            conn: 3,
            frame: r#"{"class":"media","cmd":"get_list"}"#.into(),
        };
        let text = serde_json::to_string(&m).unwrap();
        assert!(text.contains(r#""t":"req""#), "{text}");
        let back: Bus = serde_json::from_str(&text).unwrap();
        assert!(matches!(
            back,
            Bus::Req {
                corr: 7,
                conn: 3,
                ..
            }
        ));
    }

    #[test]
    fn only_session_creates_are_creates() {
        assert!(is_create(r#"{"class":"media","cmd":"create","data":{}}"#));
        assert!(!is_create(
            r#"{"class":"media","subclass":"room","cmd":"create"}"#
        ));
        assert!(!is_create(r#"{"class":"media","cmd":"get_info"}"#));
    }
}

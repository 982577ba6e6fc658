//! A cluster of real `sluice` processes on one real Redis (`--cluster`), all on loopback.
//!
//! Each test starts its own `redis-server` on a unix socket in a temporary folder (no port
//! to collide on) and two or three `sluice` children, each with its own `--rtp-ports` range
//! and `--cluster-ttl 0.6` so that a dead node is noticed within a second. Nothing sleeps to
//! synchronise: the tests poll the API (bounded) until the cluster shows what they wait for.
//! The one deliberate pause is the scenario itself: Redis stopped (SIGSTOP) for 5 s.
//!
//! The nodes are the `sluice` program built as this package's `sluice-node` binary
//! (`sluice_control::app::run`, exactly what `sluice` runs), one process per node.
//!
//! Without `redis-server` (`.ci/prepare` installs it) every test says so and passes.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_tests::Client;

/// Upper bound of any wait.
const WAIT: Duration = Duration::from_secs(20);
/// The nodes' record TTL: short, so that a killed node is noticed quickly.
const TTL: &str = "0.6";

static NEXT: AtomicU16 = AtomicU16::new(0);

fn kill(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status();
}

/// A `redis-server` of the test's own, stopped by PID when dropped.
struct Redis {
    child: Child,
    dir: PathBuf,
}

impl Redis {
    /// `None` (after saying why) where `redis-server` cannot be had.
    fn start(name: &str) -> Option<Redis> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("sluice-cluster-{}-{name}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let sock = dir.join("redis.sock");
        let child = match Command::new("redis-server")
            .args(["--port", "0", "--save", "", "--appendonly", "no"])
            .arg("--unixsocket")
            .arg(&sock)
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                eprintln!("SKIP {name}: redis-server not available ({e}); .ci/prepare installs it");
                return None;
            }
        };
        let redis = Redis { child, dir };
        let deadline = Instant::now() + WAIT;
        while !redis.ping() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::yield_now();
        }
        Some(redis)
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("redis.sock")
    }

    fn url(&self) -> String {
        format!("redis+unix://{}", self.socket().display())
    }

    fn ping(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::os::unix::net::UnixStream::connect(self.socket()) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 16];
        matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
    }

    fn signal(&self, signal: &str) {
        kill(self.child.id(), signal);
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.signal("CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A `sluice` node, killed when dropped.
struct Node {
    child: Child,
    api: SocketAddr,
    /// Its media ports.
    ports: std::ops::RangeInclusive<u16>,
    id: String,
    log: PathBuf,
}

impl Node {
    fn start(redis: &Redis, id: &str) -> Node {
        Node::start_with(redis, id, &[])
    }

    /// A node with extra settings.
    fn start_with(redis: &Redis, id: &str, extra: &[&str]) -> Node {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let log = redis.dir.join(format!("{id}.log"));
        let lo = 33000 + n * 100;
        let mut child = Command::new(env!("CARGO_BIN_EXE_sluice-node"))
            .args(["--api", "127.0.0.1:0", "--media-ip", "127.0.0.1"])
            .args(["--rtp-ports", &format!("{lo}-{}", lo + 99)])
            .args([
                "--workers",
                "1",
                "--io",
                "mmsg",
                "--steer",
                "off",
                "--raw-send",
                "off",
            ])
            .args(["--disconnect-grace", "0", "--api-rate", "0"])
            .args([
                "--cluster",
                &redis.url(),
                "--node-id",
                id,
                "--cluster-ttl",
                TTL,
            ])
            .arg("--record-dir")
            .arg(redis.dir.join(format!("rec-{id}")))
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start sluice");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the ready line");
        assert!(line.contains(&format!(" node={id}")), "ready line {line:?}");
        let api = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("api=ws://"))
            .and_then(|a| a.strip_suffix("/api/ws"))
            .unwrap_or_else(|| panic!("no ready line ({line:?}); see {}", log.display()))
            .parse()
            .expect("API address");
        Node {
            child,
            api,
            ports: lo..=lo + 99,
            id: id.to_string(),
            log,
        }
    }

    fn client(&self) -> Client {
        Client::connect(self.api)
    }

    /// `kill -9`.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What these tests ask of the harness's API client about the cluster.
trait ClusterClient {
    /// The ids of the live nodes, sorted.
    fn nodes(&mut self) -> Vec<String>;
    /// Polls `node get_list` until it lists exactly `want`.
    fn nodes_become(&mut self, want: &[&str]);
    /// The body of the `destroyed` event of `id`.
    fn destroyed(&mut self, id: &str) -> Value;
}

impl ClusterClient for Client {
    fn nodes(&mut self) -> Vec<String> {
        let list = self
            .request("media", "node", "get_list", json!({}))
            .expect("node get_list");
        let mut ids: Vec<String> = list
            .as_array()
            .expect("a list")
            .iter()
            .map(|n| n["node_id"].as_str().expect("node_id").to_string())
            .collect();
        ids.sort();
        ids
    }

    fn nodes_become(&mut self, want: &[&str]) {
        let deadline = Instant::now() + WAIT;
        loop {
            let ids = self.nodes();
            if ids == want {
                return;
            }
            assert!(Instant::now() < deadline, "nodes {ids:?}, never {want:?}");
        }
    }

    fn destroyed(&mut self, id: &str) -> Value {
        self.wait_event(id, "destroyed")["body"].clone()
    }
}

/// A plain-RTP PCMU offer from `port`.
fn rtp_offer(port: u16) -> Value {
    let sdp = format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
    );
    json!({"sdp": sdp, "sdp_type": "rtp"})
}

/// The audio port of an SDP.
fn audio_port(sdp: &str) -> u16 {
    sdp.lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|m| m.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .expect("an audio port")
}

/// A plain-RTP phone with an echo session.
struct Echo {
    id: String,
    sock: UdpSocket,
    to: SocketAddr,
    seq: u16,
}

impl Echo {
    fn create(c: &mut Client, extra: Value) -> Echo {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
        sock.set_read_timeout(Some(WAIT)).expect("timeout");
        let port = sock.local_addr().expect("bound").port();
        let mut data = json!({"type": "echo", "offer": rtp_offer(port)});
        if let (Some(d), Some(e)) = (data.as_object_mut(), extra.as_object()) {
            d.extend(e.clone());
        }
        let r = c.session("create", data).expect("create echo");
        let port = audio_port(r["answer"]["sdp"].as_str().expect("answer"));
        Echo {
            id: r["session_id"].as_str().expect("id").to_owned(),
            sock,
            to: SocketAddr::from(([127, 0, 0, 1], port)),
            seq: 0,
        }
    }

    /// Sends `n` RTP packets and asserts each comes back intact.
    fn echoes(&mut self, n: usize) {
        let mut buf = [0u8; 1500];
        for _ in 0..n {
            self.seq = self.seq.wrapping_add(1);
            let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 160, 0, 0, 0, 42];
            p[2..4].copy_from_slice(&self.seq.to_be_bytes());
            p.extend_from_slice(b"cluster payload");
            self.sock.send_to(&p, self.to).expect("send RTP");
            let got = loop {
                match self.sock.recv(&mut buf) {
                    Ok(len) => break len,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => panic!("packet {} not echoed: {e}", self.seq),
                }
            };
            assert_eq!(&buf[..got], &p[..], "echoed intact");
        }
    }
}

fn log_of(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn nodes_appear_in_the_registry_and_expire() {
    let Some(redis) = Redis::start("registry") else {
        return;
    };
    let n1 = Node::start(&redis, "n1");
    let n2 = Node::start(&redis, "n2");
    let mut n3 = Node::start(&redis, "n3");
    let mut c = n1.client();
    c.nodes_become(&["n1", "n2", "n3"]);
    let list = c
        .request("media", "node", "get_list", json!({}))
        .expect("list");
    for n in list.as_array().expect("list") {
        assert_eq!(n["state"], "serving", "{n}");
        assert_eq!(n["sessions"], 0, "{n}");
    }
    // A draining node is listed as such and takes no new placement.
    let _keeps_n3_up = Echo::create(&mut c, json!({"node": "n3"}));
    n3.client()
        .request("media", "node", "drain", json!({}))
        .expect("drain n3");
    let deadline = Instant::now() + WAIT;
    loop {
        let list = c
            .request("media", "node", "get_list", json!({}))
            .expect("list");
        let n3 = list
            .as_array()
            .and_then(|l| l.iter().find(|n| n["node_id"] == "n3"));
        if n3.is_some_and(|n| n["state"] == "draining") {
            break;
        }
        assert!(Instant::now() < deadline, "n3 never shown draining: {list}");
    }
    let e = c
        .session(
            "create",
            json!({"type": "echo", "offer": rtp_offer(4000), "node": "n3"}),
        )
        .expect_err("n3 drains");
    assert_eq!(e.code, 300001, "{e:?}");

    n3.kill();
    c.nodes_become(&["n1", "n2"]);
    n2.client().nodes_become(&["n1", "n2"]);
    let metrics = http_get(n1.api, "/metrics");
    assert!(
        metrics.contains("sluice_cluster_nodes 2"),
        "cluster gauge in {metrics}"
    );
    assert!(metrics.contains("sluice_cluster_request_seconds_count"));
}

#[test]
fn requests_reach_the_owner_from_any_node() {
    let Some(redis) = Redis::start("routing") else {
        return;
    };
    let n1 = Node::start(&redis, "n1");
    let n2 = Node::start(&redis, "n2");
    let n3 = Node::start(&redis, "n3");
    let mut c1 = n1.client();
    c1.nodes_become(&["n1", "n2", "n3"]);

    // Created through n1, placed on n2: media goes to n2's ports.
    let mut echo = Echo::create(&mut c1, json!({"node": "n2"}));
    echo.echoes(3);
    assert!(n2.ports.contains(&echo.to.port()), "n2's media port");

    // A third node reads and changes it.
    let mut c3 = n3.client();
    let info = c3
        .session("get_info", json!({"session_id": echo.id}))
        .expect("get_info through n3");
    assert_eq!(info["node"], "n2", "{info}");
    assert_eq!(info["type"], "echo");
    c3.session(
        "update_media",
        json!({"session_id": echo.id, "mute_audio": true}),
    )
    .expect("update_media through n3");
    let info = c1
        .session("get_info", json!({"session_id": echo.id}))
        .expect("get_info through n1");
    assert_eq!(info["node"], "n2");

    // The cluster-wide list has it once.
    let list = c3.session("get_list", json!({})).expect("get_list");
    let found: Vec<&Value> = list
        .as_array()
        .expect("list")
        .iter()
        .filter(|s| s["session_id"] == echo.id.as_str())
        .collect();
    assert_eq!(found.len(), 1, "{list}");
    assert_eq!(found[0]["node"], "n2");

    // An unknown id fails on every node, without waiting for a timeout.
    for node in [&n1, &n2, &n3] {
        let mut c = node.client();
        let e = c
            .session("get_info", json!({"session_id": "no-such-session"}))
            .expect_err("unknown session");
        assert_eq!(e.code, 100062, "{} says {e:?}", node.id);
    }
    // A node that is not in the cluster is refused.
    let e = c1
        .session(
            "create",
            json!({"type": "echo", "offer": rtp_offer(4000), "node": "nowhere"}),
        )
        .expect_err("unknown node");
    assert_eq!(e.code, 300001, "{e:?}");

    // A proxy slave asked of n3 lives with its master on n2.
    let master = c1
        .session(
            "create",
            json!({"type": "proxy", "sdp_type": "rtp", "offer": rtp_offer(4002), "node": "n2"}),
        )
        .expect("proxy master on n2");
    let master = master["session_id"].as_str().expect("id").to_string();
    let slave = c3
        .session(
            "create",
            json!({"type": "proxy", "master_id": master, "sdp_type": "rtp"}),
        )
        .expect("slave through n3");
    assert!(slave["offer"]["sdp"].is_string(), "{slave}");
    let slave = slave["session_id"].as_str().expect("id").to_string();
    let info = c3
        .session("get_info", json!({"session_id": slave}))
        .expect("slave info");
    assert_eq!(info["node"], "n2", "{info}");
    assert_eq!(info["master_id"], master.as_str());

    // A room a publisher made on n3 is found through n1.
    let _publisher = Publisher::create(&mut c3, "made-by-publisher");
    let room = c1
        .request(
            "media",
            "room",
            "get_info",
            json!({"room_id": "made-by-publisher"}),
        )
        .expect("room get_info through n1");
    assert_eq!(
        room["publishers"].as_array().map(Vec::len),
        Some(1),
        "{room}"
    );

    // A connection on n1 that subscribed to every destroyed session hears of this one on n2.
    let mut watcher = n1.client();
    watcher
        .request(
            "core",
            "event",
            "subscribe",
            json!({"class": "media", "subclass": "session", "type": "destroyed"}),
        )
        .expect("subscribe");

    // Destroyed through n3: the creating connection on n1 gets the event.
    c3.session("destroy", json!({"session_id": echo.id}))
        .expect("destroy through n3");
    let body = c1.destroyed(&echo.id);
    assert_eq!(body["reason"], "user_stop", "{body}");
    let body = watcher.destroyed(&echo.id);
    assert_eq!(
        body["reason"], "user_stop",
        "a subscriber on another node: {body}"
    );
    let e = c1
        .session("get_info", json!({"session_id": echo.id}))
        .expect_err("gone");
    assert_eq!(e.code, 100062);
}

#[test]
fn a_killed_node_is_cleaned_up_after() {
    let Some(redis) = Redis::start("failure") else {
        return;
    };
    let n1 = Node::start(&redis, "n1");
    let mut n2 = Node::start(&redis, "n2");
    let mut c1 = n1.client();
    c1.nodes_become(&["n1", "n2"]);
    let remote = Echo::create(&mut c1, json!({"node": "n2"}));
    // A session on n1 driven from n2's API: when n2 dies, its connection is gone.
    let mut c2 = n2.client();
    let driven = Echo::create(&mut c2, json!({"node": "n1"}));
    assert!(
        c1.session("get_info", json!({"session_id": driven.id}))
            .is_ok()
    );

    n2.kill();
    // The client on n1 hears that the session on n2 is gone.
    let body = c1.destroyed(&remote.id);
    assert_eq!(body["reason"], "process_down", "{body}");
    c1.nodes_become(&["n1"]);
    // What n2's client drove on n1 ends (disconnect grace 0 here).
    let deadline = Instant::now() + WAIT;
    while c1
        .session("get_info", json!({"session_id": driven.id}))
        .is_ok()
    {
        assert!(
            Instant::now() < deadline,
            "n2's session on n1 lives on; see {}",
            log_of(&n1.log)
        );
    }
    // New sessions are served.
    let mut local = Echo::create(&mut c1, json!({}));
    local.echoes(2);
    let e = c1
        .session(
            "create",
            json!({"type": "echo", "offer": rtp_offer(4000), "node": "n2"}),
        )
        .expect_err("n2 is gone");
    assert_eq!(e.code, 300001, "{e:?}");
}

#[test]
fn redis_paused_keeps_local_media_and_recovers() {
    let Some(redis) = Redis::start("pause") else {
        return;
    };
    let n1 = Node::start(&redis, "n1");
    let n2 = Node::start(&redis, "n2");
    let mut c1 = n1.client();
    c1.nodes_become(&["n1", "n2"]);
    let mut echo = Echo::create(&mut c1, json!({}));
    echo.echoes(5);

    redis.signal("STOP");
    let paused = Instant::now();
    // Media on the node goes on, and cross-node requests fail with a clear error.
    let mut refused = 0;
    while paused.elapsed() < Duration::from_secs(5) {
        echo.echoes(10);
        let r = c1.session(
            "create",
            json!({"type": "echo", "offer": rtp_offer(4000), "node": "n2"}),
        );
        if let Err(e) = r {
            assert!([100009, 100005, 300001].contains(&e.code), "{e:?}");
            refused += 1;
        }
    }
    assert!(
        refused > 0,
        "cross-node requests were refused while Redis was stopped"
    );
    redis.signal("CONT");

    // The cluster comes back by itself.
    c1.nodes_become(&["n1", "n2"]);
    let deadline = Instant::now() + WAIT;
    let mut c = n1.client();
    while let Err(e) = c.session(
        "create",
        json!({"type": "echo", "offer": rtp_offer(4000), "node": "n2"}),
    ) {
        assert!(
            Instant::now() < deadline,
            "no cross-node create after Redis resumed: {e:?}"
        );
    }
    // The connection that creates it stays open (a closed one ends its sessions).
    let mut remote = Echo::create(&mut c, json!({"node": "n2"}));
    remote.echoes(3);
    echo.echoes(3);
    drop(n2);
}

#[test]
fn one_room_id_is_claimed_once_cluster_wide() {
    let Some(redis) = Redis::start("rooms") else {
        return;
    };
    let nodes = [
        Node::start(&redis, "n1"),
        Node::start(&redis, "n2"),
        Node::start(&redis, "n3"),
    ];
    nodes[0].client().nodes_become(&["n1", "n2", "n3"]);
    // 20 creates of one id at once, spread over the three nodes.
    let mut clients: Vec<Client> = (0..20).map(|i| nodes[i % 3].client()).collect();
    let create = json!({"class": "media", "subclass": "room", "cmd": "create", "tid": "claim",
        "data": {"room_id": "webinar"}});
    for c in &mut clients {
        c.send_text(&create.to_string());
    }
    let results: Vec<_> = clients
        .iter_mut()
        .map(|c| c.reply_for(&json!("claim")))
        .collect();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 1, "{results:?}");
    for r in &results {
        if let Err(e) = r {
            assert_eq!(e.code, 304002, "room_already_exists: {results:?}");
        }
    }
    // Any node finds it; destroyed through another node, the id is free again.
    let mut c = nodes[2].client();
    let info = c
        .request("media", "room", "get_info", json!({"room_id": "webinar"}))
        .expect("room get_info through any node");
    assert!(info.is_object(), "{info}");
    c.request("media", "room", "destroy", json!({"room_id": "webinar"}))
        .expect("room destroy through any node");
    nodes[1]
        .client()
        .request("media", "room", "create", json!({"room_id": "webinar"}))
        .expect("the id is free again");
}

/// A plain-RTP PCMU publisher in room `room`.
struct Publisher {
    id: String,
    sock: UdpSocket,
    to: SocketAddr,
}

impl Publisher {
    fn create(c: &mut Client, room: &str) -> Publisher {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let port = sock.local_addr().expect("bound").port();
        let r = c
            .session(
                "create",
                json!({"type": "publish", "offer": rtp_offer(port), "room_id": room,
                    "room_audio_codec": "pcmu"}),
            )
            .expect("publish");
        let port = audio_port(r["answer"]["sdp"].as_str().expect("answer"));
        Publisher {
            id: r["session_id"].as_str().expect("id").to_owned(),
            sock,
            to: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    /// Sends RTP packets `seqs`, each with a payload naming its publisher and number.
    fn send(&self, tag: u8, seqs: std::ops::RangeInclusive<u16>) {
        for seq in seqs {
            let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 160, 0, 0, 0x51, tag];
            p[2..4].copy_from_slice(&seq.to_be_bytes());
            p[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
            p.extend_from_slice(&[tag, (seq >> 8) as u8, seq as u8]);
            self.sock.send_to(&p, self.to).expect("send RTP");
        }
    }
}

/// A plain-RTP listener; `port` is where the server sends from.
struct Listener {
    id: String,
    sock: UdpSocket,
    port: u16,
}

impl Listener {
    fn create(c: &mut Client, publisher: &str) -> Listener {
        let r = c
            .session(
                "create",
                json!({"type": "listen", "publisher_id": publisher, "sdp_type": "rtp"}),
            )
            .expect("listen");
        let id = r["session_id"].as_str().expect("id").to_owned();
        let port = audio_port(r["offer"]["sdp"].as_str().expect("offer"));
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
        sock.set_read_timeout(Some(WAIT)).expect("timeout");
        let mine = sock.local_addr().expect("bound").port();
        let sdp = format!(
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio {mine} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=recvonly\r\n"
        );
        c.session(
            "set_answer",
            json!({"session_id": id, "answer": {"sdp": sdp, "sdp_type": "rtp"}}),
        )
        .expect("listener set_answer");
        Listener { id, sock, port }
    }

    /// The next `n` packets: (sequence number, payload).
    fn recv(&self, n: usize) -> Vec<(u16, Vec<u8>)> {
        let mut buf = [0u8; 1500];
        (0..n)
            .map(|i| {
                let len = loop {
                    match self.sock.recv(&mut buf) {
                        Ok(len) => break len,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => panic!("listener {}: packet {i} of {n} missing: {e}", self.id),
                    }
                };
                assert!(len >= 12, "an RTP packet");
                (u16::from_be_bytes([buf[2], buf[3]]), buf[12..len].to_vec())
            })
            .collect()
    }
}

/// Payloads as [`Publisher::send`] writes them.
fn payloads(tag: u8, seqs: std::ops::RangeInclusive<u16>) -> Vec<Vec<u8>> {
    seqs.map(|s| vec![tag, (s >> 8) as u8, s as u8]).collect()
}

fn assert_in_order(got: &[(u16, Vec<u8>)], want: &[Vec<u8>]) {
    let payloads: Vec<&Vec<u8>> = got.iter().map(|(_, p)| p).collect();
    assert_eq!(payloads, want.iter().collect::<Vec<_>>(), "all, in order");
    for w in got.windows(2) {
        assert_eq!(
            w[1].0,
            w[0].0.wrapping_add(1),
            "continuous sequence numbers"
        );
    }
}

/// Listen sessions that live on `node`, as the cluster-wide list says.
fn listeners_on(c: &mut Client, node: &str) -> usize {
    let list = c.session("get_list", json!({})).expect("get_list");
    list.as_array()
        .expect("list")
        .iter()
        .filter(|s| s["node"] == node && s["type"] == "listen")
        .count()
}

#[test]
fn rooms_span_nodes_through_one_relay_per_publisher_and_node() {
    rooms_span_nodes("srtp");
}

#[test]
fn rooms_span_nodes_over_plain_rtp_relays() {
    rooms_span_nodes("rtp");
}

/// Publisher on n1, listeners on n1 and n2, relays as `relay` (`--cluster-relay`).
fn rooms_span_nodes(relay: &str) {
    let Some(redis) = Redis::start(&format!("relay-{relay}")) else {
        return;
    };
    let n1 = Node::start_with(&redis, "n1", &["--cluster-relay", relay]);
    let n2 = Node::start_with(&redis, "n2", &["--cluster-relay", relay]);
    let mut c1 = n1.client();
    let mut c2 = n2.client();
    c1.nodes_become(&["n1", "n2"]);
    c2.nodes_become(&["n1", "n2"]);

    let p = Publisher::create(&mut c1, "stage");
    let local = Listener::create(&mut c1, &p.id);
    let remote_a = Listener::create(&mut c2, &p.id);
    let remote_b = Listener::create(&mut c2, &p.id);
    assert!(n1.ports.contains(&local.port));
    for l in [&remote_a, &remote_b] {
        assert!(n2.ports.contains(&l.port), "served by n2: {}", l.port);
    }

    p.send(1, 1..=50);
    let want = payloads(1, 1..=50);
    for l in [&local, &remote_a, &remote_b] {
        assert_in_order(&l.recv(50), &want);
    }
    // One relay stream into n2, whatever its number of listeners, in the chosen profile.
    assert_eq!(
        listeners_on(&mut c1, "n1"),
        2,
        "the local listener and one relay"
    );
    let relay_listener = c1
        .session("get_list", json!({}))
        .expect("list")
        .as_array()
        .expect("list")
        .iter()
        .find(|s| {
            s["node"] == "n1" && s["type"] == "listen" && s["session_id"] != local.id.as_str()
        })
        .map(|s| s["session_id"].as_str().expect("id").to_string())
        .expect("the relay listener");
    let info = c1
        .session("get_info", json!({"session_id": relay_listener}))
        .expect("relay listener info");
    assert_eq!(info["offer"]["sdp_type"], relay, "{info}");
    let metrics = http_get(n2.api, "/metrics");
    assert!(
        metrics.contains("sluice_cluster_relay_streams 1"),
        "{metrics}"
    );

    // set_type on n2 to another publisher of the room on n1.
    let p2 = Publisher::create(&mut c1, "stage");
    c2.session(
        "set_type",
        json!({"session_id": remote_b.id, "type": "listen", "publisher_id": p2.id}),
    )
    .expect("set_type across nodes");
    p2.send(2, 1..=20);
    p.send(1, 51..=60);
    let got_b = remote_b.recv(20);
    assert_eq!(
        got_b.iter().map(|(_, p)| p.clone()).collect::<Vec<_>>(),
        payloads(2, 1..=20),
        "the new publisher only"
    );
    assert_in_order(&remote_a.recv(10), &payloads(1, 51..=60));
    assert_in_order(&local.recv(10), &payloads(1, 51..=60));
    assert_eq!(
        listeners_on(&mut c1, "n1"),
        3,
        "one relay per publisher and node"
    );

    // The last remote listener of p leaves: its relay closes after the linger.
    c2.session("destroy", json!({"session_id": remote_a.id}))
        .expect("destroy");
    let deadline = Instant::now() + WAIT;
    while listeners_on(&mut c1, "n1") != 2 {
        assert!(Instant::now() < deadline, "p's relay never closed");
    }
    // p's listeners still hear it; p2's relay still feeds remote_b.
    p.send(1, 61..=65);
    assert_in_order(&local.recv(5), &payloads(1, 61..=65));
    // The publisher stops: its remote listener ends with publisher_stop.
    c1.session("destroy", json!({"session_id": p2.id}))
        .expect("destroy p2");
    let body = c2.destroyed(&remote_b.id);
    assert_eq!(body["reason"], "publisher_stop", "{body}");
}

fn http_get(api: SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(api).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {api}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// A WebRTC publisher on n1 (str0m), WebRTC listeners on n2 through the relay: the listener
/// connects, the publisher is asked for a keyframe when the listener joins (the PLI crosses
/// the relay), and what the publisher sends reaches the listener in order.
#[test]
fn webrtc_listener_on_another_node_gets_the_publishers_media() {
    use sluice_tests::webrtc_peer::{
        Direction, MediaKind, Received, WebrtcPeer, expect_up, run_all,
    };

    let Some(redis) = Redis::start("webrtc") else {
        return;
    };
    let n1 = Node::start(&redis, "n1");
    let n2 = Node::start(&redis, "n2");
    n1.client().nodes_become(&["n1", "n2"]);
    let mut c1 = n1.client();
    let mut c2 = n2.client();

    let mut publisher = WebrtcPeer::new();
    let offer = publisher.offer_with(Some(Direction::SendOnly), Some(Direction::SendOnly));
    let r = c1
        .session(
            "create",
            json!({"type": "publish", "offer": {"sdp": offer}}),
        )
        .expect("publish on n1");
    let pid = r["session_id"].as_str().expect("id").to_string();
    publisher
        .accept_answer(r["answer"]["sdp"].as_str().expect("answer"))
        .expect("accept the answer");
    assert!(
        publisher.run_until(WAIT, |p| p.connected()),
        "{}",
        publisher.describe()
    );
    expect_up(&mut c1, &pid);
    // The server names the SSRC it last received in its keyframe requests.
    publisher.send_video(b"before any listener", true);
    let heard = run_all(&mut [&mut publisher], WAIT, |_| {
        c1.info(&pid)["media"][1]["rx_packets"].as_u64() >= Some(1)
    });
    assert!(heard, "the publisher's first frame reaches n1");
    let asked_before = publisher.keyframe_requests().len();

    let mut listener = WebrtcPeer::new();
    let r = c2
        .session("create", json!({"type": "listen", "publisher_id": pid}))
        .expect("listen on n2");
    let lid = r["session_id"].as_str().expect("id").to_string();
    let answer = listener
        .answer(r["offer"]["sdp"].as_str().expect("offer"))
        .expect("answer");
    c2.session(
        "set_answer",
        json!({"session_id": lid, "answer": {"sdp": answer}}),
    )
    .expect("set_answer on n2");
    let up = run_all(&mut [&mut publisher, &mut listener], WAIT, |p| {
        p[1].connected() && p[0].keyframe_requests().len() > asked_before
    });
    assert!(
        up,
        "listener up on n2, keyframe asked of the publisher on n1: {}\n{}",
        listener.describe(),
        publisher.describe()
    );
    expect_up(&mut c2, &lid);
    let info = c2.info(&lid);
    assert_eq!(info["node"], "n2");
    assert_eq!(
        info["publisher_id"],
        pid.as_str(),
        "the publisher, not its relay"
    );

    for i in 0..5u8 {
        publisher.send_video(&[b'v', i], i == 0);
        publisher.send_audio(&[b'a', i]);
    }
    let got = run_all(&mut [&mut publisher, &mut listener], WAIT, |p| {
        p[1].received().len() >= 10
    });
    assert!(got, "{}", listener.describe());
    let video: Vec<&[u8]> = listener
        .received_of(MediaKind::Video)
        .map(Received::body)
        .collect();
    let want: Vec<[u8; 2]> = (0..5u8).map(|i| [b'v', i]).collect();
    assert_eq!(video, want.iter().map(|w| &w[..]).collect::<Vec<_>>());
    let audio = listener.received_of(MediaKind::Audio).count();
    assert_eq!(audio, 5);
}

impl Redis {
    /// `PUBLISH channel message`, as raw RESP on the unix socket; the number of receivers.
    fn publish(&self, channel: &str, message: &str) -> usize {
        use std::io::{Read, Write};
        let mut s =
            std::os::unix::net::UnixStream::connect(self.socket()).expect("connect to redis");
        s.set_read_timeout(Some(WAIT)).expect("timeout");
        let mut cmd = String::from("*3\r\n$7\r\nPUBLISH\r\n");
        for arg in [channel, message] {
            cmd.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        s.write_all(cmd.as_bytes()).expect("send PUBLISH");
        let mut buf = [0u8; 32];
        let n = s.read(&mut buf).expect("PUBLISH reply");
        let reply = String::from_utf8_lossy(&buf[..n]);
        reply
            .trim()
            .strip_prefix(':')
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("PUBLISH answered {reply:?}"))
    }
}

/// The value of an unlabelled series of `/metrics`.
fn metric(api: SocketAddr, name: &str) -> Option<u64> {
    http_get(api, "/metrics").lines().find_map(|l| {
        l.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

/// The data channels a session's `get_info` lists, as (label, protocol, ordered), sorted.
fn channel_specs(c: &mut Client, id: &str) -> Vec<(String, String, bool)> {
    let info = c.info(id);
    let mut specs: Vec<(String, String, bool)> = info["webrtc"]["data"]["channels"]
        .as_array()
        .unwrap_or_else(|| panic!("no channels: {info}"))
        .iter()
        .map(|ch| {
            (
                ch["label"].as_str().expect("label").to_string(),
                ch["protocol"].as_str().expect("protocol").to_string(),
                ch["ordered"].as_bool().expect("ordered"),
            )
        })
        .collect();
    specs.sort();
    specs
}

/// A WebRTC publisher with a data channel on n1, WebRTC listeners on n1 and n2: the listener
/// on n2 (through the relay) gets the mirror of the channel opened before it joined and of
/// the one opened after, with the same labels and settings; both listeners receive every
/// message of each channel in order; closing a channel closes its mirror on n2; `mute_data`
/// on the publisher stops what reaches n2 (counted on the publisher), and unmuting resumes.
/// Data events for no relay, or malformed, are counted drops on the node that gets them.
/// `set_type` on n2 to another publisher on n1 re-points the mirror; a publisher of data
/// channels alone is not listened to across nodes.
#[test]
fn data_channels_reach_listeners_on_another_node() {
    use sluice_tests::webrtc_peer::{ChannelId, Direction, WebrtcPeer, expect_up, run_all};

    let Some(redis) = Redis::start("datachannels") else {
        return;
    };
    let n1 = Node::start(&redis, "n1");
    let n2 = Node::start(&redis, "n2");
    n1.client().nodes_become(&["n1", "n2"]);
    n2.client().nodes_become(&["n1", "n2"]);
    let mut c1 = n1.client();
    let mut c2 = n2.client();

    let mut publ = WebrtcPeer::new();
    let (offer, chat) = publ.offer_with_channel(Some(Direction::SendOnly), None, "chat");
    let r = c1
        .session(
            "create",
            json!({"type": "publish", "offer": {"sdp": offer}}),
        )
        .expect("publish on n1");
    let pid = r["session_id"].as_str().expect("id").to_string();
    publ.accept_answer(r["answer"]["sdp"].as_str().expect("answer"))
        .expect("str0m accepts the answer");
    assert!(
        publ.run_until(WAIT, |p| p.channel_open(chat)),
        "{}",
        publ.describe()
    );
    expect_up(&mut c1, &pid);

    // A listener on each node; n2's is served through the relay, which learns the publisher's
    // channels when it opens: its offer carries the data line, and the mirror of "chat" opens.
    let listen = |c: &mut Client, node: &Node| -> (WebrtcPeer, String) {
        let mut l = WebrtcPeer::new();
        let r = c
            .session("create", json!({"type": "listen", "publisher_id": pid}))
            .expect("listen");
        let offer = r["offer"]["sdp"].as_str().expect("offer");
        assert!(
            offer.contains("webrtc-datachannel"),
            "{}: {offer}\n{}",
            node.id,
            log_of(&node.log)
        );
        let lid = r["session_id"].as_str().expect("id").to_string();
        let answer = l.answer(offer).expect("the listener answers");
        c.session(
            "set_answer",
            json!({"session_id": lid, "answer": {"sdp": answer}}),
        )
        .expect("set_answer");
        assert_eq!(c.info(&lid)["node"], node.id.as_str());
        (l, lid)
    };
    let (mut l1, lid1) = listen(&mut c1, &n1);
    let (mut l2, lid2) = listen(&mut c2, &n2);
    let up = run_all(&mut [&mut publ, &mut l1, &mut l2], WAIT, |p| {
        p[1..]
            .iter()
            .all(|l| l.connected() && l.channels_open().len() == 1)
    });
    assert!(up, "mirrors of chat: {}\n{}", l1.describe(), l2.describe());
    for l in [&l1, &l2] {
        assert_eq!(l.channels_open()[0].1, "chat");
    }

    // A channel opened once the remote listener is there reaches it too.
    let notes = publ.open_channel("notes", "notes-v1");
    let up = run_all(&mut [&mut publ, &mut l1, &mut l2], WAIT, |p| {
        p[0].channel_open(notes) && p[1..].iter().all(|l| l.channels_open().len() == 2)
    });
    assert!(up, "mirrors of notes: {}\n{}", l1.describe(), l2.describe());
    let specs = channel_specs(&mut c1, &pid);
    assert_eq!(specs.len(), 2, "{specs:?}");
    assert_eq!(channel_specs(&mut c1, &lid1), specs, "mirrors on n1");
    assert_eq!(channel_specs(&mut c2, &lid2), specs, "mirrors on n2");

    // Every message, on both channels, reaches both listeners in order per channel.
    let mut sent: Vec<(ChannelId, bool, Vec<u8>)> = Vec::new();
    for i in 0..40u8 {
        let (ch, binary) = if i % 3 == 0 {
            (notes, true)
        } else {
            (chat, false)
        };
        let data = if binary {
            vec![i, 0, 255, i]
        } else {
            format!("message {i:02}").into_bytes()
        };
        assert!(publ.channel_write(ch, binary, &data));
        sent.push((ch, binary, data));
    }
    let got = run_all(&mut [&mut publ, &mut l1, &mut l2], WAIT, |p| {
        p[1..]
            .iter()
            .all(|l| l.channel_messages().len() == sent.len())
    });
    assert!(got, "{}\n{}", l1.describe(), l2.describe());
    let label_of = |p: &WebrtcPeer, id: ChannelId| -> String {
        p.channels_open()
            .iter()
            .find(|(c, _)| *c == id)
            .map(|(_, label)| label.clone())
            .expect("an open channel")
    };
    let want = |label: &str| -> Vec<(bool, Vec<u8>)> {
        sent.iter()
            .filter(|(ch, _, _)| label_of(&publ, *ch) == label)
            .map(|(_, b, d)| (*b, d.clone()))
            .collect()
    };
    for l in [&l1, &l2] {
        for label in ["chat", "notes"] {
            let got: Vec<(bool, Vec<u8>)> = l
                .channel_messages()
                .iter()
                .filter(|m| label_of(l, m.id) == label)
                .map(|m| (m.binary, m.data.clone()))
                .collect();
            assert_eq!(got, want(label), "{label}, in order");
        }
    }

    // The publisher closes "notes": its mirrors close, on n2 as on n1.
    let mirror_of = |l: &WebrtcPeer, label: &str| -> ChannelId {
        l.channels_open()
            .iter()
            .find(|(_, lab)| lab == label)
            .map(|(c, _)| *c)
            .expect("a mirror")
    };
    let (m1, m2) = (mirror_of(&l1, "notes"), mirror_of(&l2, "notes"));
    publ.channel_close(notes);
    let closed = run_all(&mut [&mut publ, &mut l1, &mut l2], WAIT, |p| {
        p[1].channels_closed().contains(&m1) && p[2].channels_closed().contains(&m2)
    });
    assert!(
        closed,
        "notes mirrors: {}\n{}",
        l1.describe(),
        l2.describe()
    );
    assert!(l2.channel_open(mirror_of(&l2, "chat")), "chat goes on");

    // mute_data on the publisher (asked through n2): nothing more reaches n2, counted on
    // the publisher; unmuted, the next message arrives right after the last one before.
    c2.session(
        "update_media",
        json!({"session_id": pid, "mute_data": true}),
    )
    .expect("mute the publisher's data");
    for i in 0..3 {
        assert!(publ.channel_write(chat, false, format!("muted {i}").as_bytes()));
    }
    let counted = run_all(&mut [&mut publ, &mut l1, &mut l2], WAIT, |_| {
        c1.info(&pid)["webrtc"]["data"]["dropped_muted"] == 3
    });
    assert!(counted, "muted drops never counted: {}", c1.info(&pid));
    c2.session(
        "update_media",
        json!({"session_id": pid, "mute_data": false}),
    )
    .expect("unmute");
    assert!(publ.channel_write(chat, false, b"after"));
    let got = run_all(&mut [&mut publ, &mut l1, &mut l2], WAIT, |p| {
        p[1..]
            .iter()
            .all(|l| l.channel_messages().len() == sent.len() + 1)
    });
    assert!(got, "{}\n{}", l1.describe(), l2.describe());
    for l in [&l1, &l2] {
        let last = l.channel_messages().last().expect("a message");
        assert_eq!(last.data, b"after", "the muted ones never came");
    }
    assert_eq!(metric(n2.api, "sluice_cluster_data_dropped_total"), Some(0));

    // What n2 cannot use is counted, never fatal: data for no relay, and malformed data.
    let channel = "sluice:rpc:n2";
    let unknown = json!({"t": "data", "listen": "no-such-relay",
        "data": {"k": "closed", "sid": 1}});
    let malformed = json!({"t": "data", "listen": "x", "data": {"k": "msg", "sid": 1,
        "binary": true, "body": "not base64!"}});
    for m in [unknown, malformed] {
        assert_eq!(redis.publish(channel, &m.to_string()), 1, "n2 listens");
    }
    let deadline = Instant::now() + WAIT;
    while metric(n2.api, "sluice_cluster_data_dropped_total") != Some(2) {
        assert!(Instant::now() < deadline, "bad relay data never counted");
    }
    assert!(publ.channel_write(chat, false, b"still flowing"));
    let got = run_all(&mut [&mut publ, &mut l1, &mut l2], WAIT, |p| {
        p[2].channel_messages().len() == sent.len() + 2
    });
    assert!(got, "{}", l2.describe());

    // set_type on n2 to another publisher of the room on n1: its "chat" takes the mirror
    // over (no new channel on the listener), and its messages arrive there.
    let room = c1.info(&pid)["room_id"].as_str().expect("room").to_string();
    let mut publ2 = WebrtcPeer::new();
    let (offer, chat2) = publ2.offer_with_channel(Some(Direction::SendOnly), None, "chat");
    let r = c1
        .session(
            "create",
            json!({"type": "publish", "room_id": room, "offer": {"sdp": offer}}),
        )
        .expect("a second publisher on n1");
    let pid2 = r["session_id"].as_str().expect("id").to_string();
    publ2
        .accept_answer(r["answer"]["sdp"].as_str().expect("answer"))
        .expect("str0m accepts the answer");
    assert!(
        publ2.run_until(WAIT, |p| p.channel_open(chat2)),
        "{}",
        publ2.describe()
    );
    c2.session(
        "set_type",
        json!({"session_id": lid2, "type": "listen", "publisher_id": pid2}),
    )
    .expect("set_type across nodes");
    let mirror = mirror_of(&l2, "chat");
    let opened = l2.channels_open().len();
    assert!(publ2.channel_write(chat2, false, b"from two"));
    let got = run_all(&mut [&mut publ, &mut publ2, &mut l2], WAIT, |p| {
        p[2].channel_messages().len() == sent.len() + 3
    });
    assert!(got, "{}", l2.describe());
    let last = l2.channel_messages().last().expect("a message");
    assert_eq!((last.id, last.data.as_slice()), (mirror, &b"from two"[..]));
    assert_eq!(l2.channels_open().len(), opened, "the same mirror goes on");

    // A publisher of data channels alone has no stream for a relay to carry: listened to
    // from another node, it is refused with a clear error (on its own node it is served).
    let mut chat_only = WebrtcPeer::new();
    let (offer, _) = chat_only.offer_with_channel(None, None, "chat");
    let r = c1
        .session(
            "create",
            json!({"type": "publish", "offer": {"sdp": offer}}),
        )
        .expect("a data-only publisher on n1");
    let only = r["session_id"].as_str().expect("id");
    let refused = c2
        .session("create", json!({"type": "listen", "publisher_id": only}))
        .expect_err("a data-only publisher is not relayed");
    assert_eq!(refused.code, 304005, "invalid_publisher: {refused:?}");
}

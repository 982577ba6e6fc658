//! An rtpengine process started by loadgen for the side-by-side comparison: userspace only
//! (`--table=-1`, no kernel module), one worker thread, the whole process pinned to one CPU
//! (where Sluice pins its first worker), driven over its NG protocol on loopback.

use std::net::{IpAddr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::ng::NgClient;
use crate::server::Server;

/// How long rtpengine may take to answer its first `ping`.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Where the spawned rtpengine listens and which media ports it may use.
#[derive(Clone, Debug)]
pub struct Settings {
    pub ip: IpAddr,
    pub ng_port: u16,
    pub ports: (u16, u16),
    pub cpu: Option<usize>,
}

/// The rtpengine command line for `s`: no config file, logs on stderr at warnings, calls
/// deleted at once on `delete`, one worker thread.
pub fn args(s: &Settings) -> Vec<String> {
    vec![
        "--config-file=none".into(),
        "--foreground".into(),
        "--log-stderr".into(),
        "--log-level=4".into(),
        "--table=-1".into(),
        "--num-threads=1".into(),
        "--media-num-threads=1".into(),
        "--delete-delay=0".into(),
        format!("--interface={}", s.ip),
        format!("--listen-ng={}", SocketAddr::new(s.ip, s.ng_port)),
        format!("--port-min={}", s.ports.0),
        format!("--port-max={}", s.ports.1),
    ]
}

/// Finds `rtpengine` on PATH (or takes `path` as given when it has a slash).
pub fn locate(path: &str) -> anyhow::Result<String> {
    if path.contains('/') {
        return Ok(path.to_string());
    }
    let dirs = std::env::var("PATH").unwrap_or_default();
    for dir in dirs.split(':').chain(["/usr/bin", "/usr/sbin"]) {
        let candidate = std::path::Path::new(dir).join(path);
        if candidate.is_file() {
            return Ok(candidate.display().to_string());
        }
    }
    bail!(
        "{path} not found: install Debian's rtpengine-daemon (bench/compare.sh does) or pass --rtpengine PATH"
    )
}

/// Starts rtpengine and waits until it answers `ping`; returns the process (stopped on drop)
/// and a connected NG client.
pub fn spawn(path: &str, s: &Settings) -> anyhow::Result<(Server, NgClient)> {
    let path = locate(path)?;
    let mut cmd = Command::new(&path);
    cmd.args(args(s))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(cpu) = s.cpu {
        // SAFETY: the closure runs in the forked child before exec and only calls
        // sched_setaffinity (async-signal-safe) on a stack-local set.
        unsafe {
            cmd.pre_exec(move || crate::sys::pin_current_thread(cpu));
        }
    }
    let mut server = Server::spawn_command(cmd, &path)?;
    let mut ng = NgClient::connect(SocketAddr::new(s.ip, s.ng_port))?;
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        match ng.ping() {
            Ok(()) => break,
            Err(e) if Instant::now() >= deadline => {
                server.stop();
                bail!("rtpengine never answered ping: {e:#}\n{}", server.output());
            }
            Err(_) if server.exited() => {
                bail!("rtpengine exited before it was ready:\n{}", server.output());
            }
            Err(_) => thread::sleep(Duration::from_millis(100)),
        }
    }
    Ok((server, ng))
}

/// The audio address in an SDP rtpengine produced (its `c=` and `m=audio` port).
pub fn media_addr(sdp: &str) -> anyhow::Result<SocketAddr> {
    crate::sdp::audio_addr(sdp).context("rtpengine's SDP has no audio address")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_is_userspace_single_threaded() {
        let a = args(&Settings {
            ip: "127.0.0.1".parse().unwrap(),
            ng_port: 22222,
            ports: (30000, 39999),
            cpu: Some(0),
        });
        for want in [
            "--table=-1",
            "--num-threads=1",
            "--listen-ng=127.0.0.1:22222",
            "--port-min=30000",
            "--port-max=39999",
        ] {
            assert!(a.iter().any(|x| x == want), "{want} missing from {a:?}");
        }
    }

    #[test]
    fn missing_binary_is_named() {
        let err = locate("surely-not-an-rtpengine-binary").unwrap_err();
        assert!(format!("{err}").contains("rtpengine-daemon"), "{err}");
    }
}

//! A `sluice` process started by loadgen: wait for its ready line, keep its output drained,
//! stop it (SIGTERM, then SIGKILL) when dropped.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::sys;

/// How long the server may take to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long it may take to exit after SIGTERM.
const EXIT_TIMEOUT: Duration = Duration::from_secs(5);
/// Output lines kept for an error report.
const KEEP_LINES: usize = 40;

/// The fields of `sluice ready api=ws://ADDR/api/ws media=IP:LO-HI io=uring|mmsg workers=N`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ready {
    pub api: String,
    pub media: String,
    pub io: String,
    pub workers: usize,
}

/// Parses the ready line (anything before `sluice ready`, such as a log prefix, is skipped).
pub fn parse_ready(line: &str) -> Option<Ready> {
    let rest = &line[line.find("sluice ready")? + "sluice ready".len()..];
    let mut ready = Ready {
        api: String::new(),
        media: String::new(),
        io: String::new(),
        workers: 0,
    };
    for (key, value) in rest.split_whitespace().filter_map(|kv| kv.split_once('=')) {
        match key {
            "api" => ready.api = value.to_string(),
            "media" => ready.media = value.to_string(),
            "io" => ready.io = value.to_string(),
            "workers" => ready.workers = value.parse().ok()?,
            _ => {}
        }
    }
    (!ready.api.is_empty()).then_some(ready)
}

type Tail = Arc<Mutex<VecDeque<String>>>;

pub struct Server {
    child: Child,
    pub ready: Ready,
    tail: Tail,
}

/// Copies `from` line by line into `tail` (last lines only) until EOF; the first ready line
/// goes to `ready`.
fn drain(from: impl Read + Send + 'static, tail: Tail, ready: Option<mpsc::Sender<Ready>>) {
    thread::spawn(move || {
        let mut ready = ready;
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            if let Some(r) = parse_ready(&line)
                && let Some(tx) = ready.take()
            {
                let _ = tx.send(r);
            }
            let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
            if t.len() == KEEP_LINES {
                t.pop_front();
            }
            t.push_back(line);
        }
    });
}

impl Server {
    /// Starts `path args...` and waits for its ready line.
    pub fn spawn(path: &str, args: &[String]) -> anyhow::Result<Server> {
        let mut cmd = Command::new(path);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let (mut child, tail, rx) = start(cmd, path)?;
        let deadline = Instant::now() + READY_TIMEOUT;
        let ready = loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(r) => break r,
                Err(_) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    bail!(
                        "{path} printed no ready line within {READY_TIMEOUT:?}:\n{}",
                        tail_text(&tail)
                    );
                }
                Err(e) => {
                    if e == mpsc::RecvTimeoutError::Disconnected {
                        thread::sleep(Duration::from_millis(100)); // both pipes closed
                    }
                    if let Ok(Some(status)) = child.try_wait() {
                        thread::sleep(Duration::from_millis(100)); // let the drains catch up
                        bail!(
                            "{path} exited ({status}) before it was ready:\n{}",
                            tail_text(&tail)
                        );
                    }
                }
            }
        };
        Ok(Server { child, ready, tail })
    }

    /// Starts another kind of server (stdout and stderr piped), without waiting for anything:
    /// the caller knows how to tell when it is ready. `ready` names it.
    pub fn spawn_command(cmd: Command, name: &str) -> anyhow::Result<Server> {
        let (child, tail, _) = start(cmd, name)?;
        let ready = Ready {
            api: String::new(),
            media: String::new(),
            io: name.rsplit('/').next().unwrap_or(name).to_string(),
            workers: 1,
        };
        Ok(Server { child, ready, tail })
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's last output lines, for error reports.
    pub fn output(&self) -> String {
        tail_text(&self.tail)
    }

    /// SIGTERM, wait, SIGKILL if it lingers. Returns whether it exited cleanly.
    pub fn stop(&mut self) -> bool {
        if let Ok(Some(status)) = self.child.try_wait() {
            return status.success();
        }
        let _ = sys::signal(self.child.id(), libc::SIGTERM);
        let deadline = Instant::now() + EXIT_TIMEOUT;
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(status)) => return status.success(),
                Ok(None) => thread::sleep(Duration::from_millis(20)),
                Err(_) => break,
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Spawns `cmd` (stdout and stderr piped) and drains both into a tail; ready lines of sluice
/// arrive on the returned channel.
fn start(mut cmd: Command, name: &str) -> anyhow::Result<(Child, Tail, mpsc::Receiver<Ready>)> {
    let mut child = cmd.spawn().with_context(|| format!("starting {name}"))?;
    let tail: Tail = Arc::default();
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().context("stdout is piped")?;
    let stderr = child.stderr.take().context("stderr is piped")?;
    drain(stdout, Arc::clone(&tail), Some(tx.clone()));
    drain(stderr, Arc::clone(&tail), Some(tx));
    Ok((child, tail, rx))
}

fn tail_text(tail: &Tail) -> String {
    let t = tail.lock().unwrap_or_else(|p| p.into_inner());
    t.iter().map(String::as_str).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_line_fields_are_parsed() {
        let line = "2025-01-01T00:00:00Z INFO sluice ready api=ws://127.0.0.1:19010/api/ws \
                    media=127.0.0.1:40000-49999 io=mmsg workers=1";
        let r = parse_ready(line).unwrap();
        assert_eq!(r.api, "ws://127.0.0.1:19010/api/ws");
        assert_eq!(r.media, "127.0.0.1:40000-49999");
        assert_eq!((r.io.as_str(), r.workers), ("mmsg", 1));
        assert_eq!(parse_ready("sluice starting"), None);
        assert_eq!(parse_ready("sluice ready io=uring"), None);
    }

    #[test]
    fn a_process_without_ready_line_is_an_error() {
        let err = Server::spawn("/bin/sh", &["-c".into(), "echo boom; exit 3".into()])
            .err()
            .unwrap();
        assert!(format!("{err}").contains("boom"), "{err}");
    }
}

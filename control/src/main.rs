//! `sluice`: the media server binary (see [`sluice_control::app`]).
//!
//! Signals: SIGINT stops at once (sessions destroyed with `process_down`, exit 0). SIGTERM does
//! the same with `--drain-timeout 0`; with more, it starts a drain and the process exits 0
//! when the drain ends (last session gone, or the timeout). A signal during a drain (SIGTERM's
//! or the `media/node/drain` command's) stops at once.

fn main() -> anyhow::Result<()> {
    sluice_control::app::run()
}

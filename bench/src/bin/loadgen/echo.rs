//! `echo`: plain RTP echo sessions (optionally recording).

use super::*;

pub(super) fn echo_sluice(
    args: &Args,
    api_url: &str,
    cpu: Option<&CpuSource>,
    gen_cpu: Option<usize>,
    sockets: usize,
) -> anyhow::Result<Row> {
    echo_sluice_with(args, api_url, cpu, gen_cpu, sockets, false)
}

/// Plain echo sessions; with `record`, every session records (recorder_action start) while
/// the load runs, so the row shows what spooling to disk costs per forwarded packet.
pub(super) fn echo_sluice_with(
    args: &Args,
    api_url: &str,
    cpu: Option<&CpuSource>,
    gen_cpu: Option<usize>,
    sockets: usize,
    record: bool,
) -> anyhow::Result<Row> {
    let socks = bind_sockets(sockets.min(args.sessions))?;
    let mut api = Api::connect(api_url)?;
    eprintln!("loadgen: creating {} echo sessions", args.sessions);
    let mut ids = Vec::with_capacity(args.sessions);
    let opened = open_echo(&mut api, &socks, args.sessions, &mut ids).and_then(|targets| {
        if record {
            for id in &ids {
                api.request(
                    "session",
                    "recorder_action",
                    json!({"session_id": id, "action": "start"}),
                )?;
            }
        }
        Ok(targets)
    });
    let target = if record { "sluice+rec" } else { "sluice" };
    let result = opened.and_then(|targets| {
        measure(
            target,
            args,
            args.sessions,
            1,
            &socks,
            &socks,
            &targets,
            cpu,
            gen_cpu,
            None,
        )
    });
    let failed = api.destroy_all(&ids);
    api.close();
    if failed > 0 {
        eprintln!("loadgen: {failed} sessions could not be destroyed");
    }
    result
}

pub(super) fn open_echo(
    api: &mut Api,
    socks: &[UdpSocket],
    n: usize,
    ids: &mut Vec<String>,
) -> anyhow::Result<Vec<Target>> {
    let mut targets = Vec::with_capacity(n);
    for i in 0..n {
        let socket = i % socks.len();
        let offer = sdp::offer(socks[socket].local_addr()?, i as u64 + 1);
        let created = api
            .create_echo(&offer)
            .with_context(|| format!("creating echo session {i}"))?;
        ids.push(created.session_id);
        let dest = sdp::audio_addr(&created.sdp).context("parsing the echo answer")?;
        targets.push(Target { dest, socket });
    }
    Ok(targets)
}

//! `fanout`: one publisher, N listeners.

use super::*;

pub(super) fn fanout_sluice(
    args: &Args,
    api_url: &str,
    cpu: Option<&CpuSource>,
    gen_cpu: Option<usize>,
) -> anyhow::Result<Row> {
    let publisher = bind_sockets(1)?;
    let listeners = bind_sockets(args.sockets.min(args.listeners))?;
    let mut api = Api::connect(api_url)?;
    let mut ids = Vec::with_capacity(args.listeners + 1);
    let mut room = None;
    let result = open_fanout(
        &mut api,
        &publisher[0],
        &listeners,
        args.listeners,
        &mut ids,
        &mut room,
    )
    .and_then(|dest| {
        let targets = [Target { dest, socket: 0 }];
        let copies = args.listeners as u64;
        measure(
            "sluice",
            args,
            args.listeners,
            copies,
            &publisher,
            &listeners,
            &targets,
            cpu,
            gen_cpu,
            None,
        )
    });
    // Listeners first, so none is torn down as a side effect of the publisher leaving.
    ids.reverse();
    let failed = api.destroy_all(&ids);
    if let Some(room) = room {
        let _ = api.destroy_room(&room);
    }
    api.close();
    if failed > 0 {
        eprintln!("loadgen: {failed} sessions could not be destroyed");
    }
    result
}

/// Publishes from `publisher`, subscribes `n` listeners spread over `listeners`; returns where
/// to send the publisher's RTP.
pub(super) fn open_fanout(
    api: &mut Api,
    publisher: &UdpSocket,
    listeners: &[UdpSocket],
    n: usize,
    ids: &mut Vec<String>,
    room: &mut Option<String>,
) -> anyhow::Result<SocketAddr> {
    let offer = sdp::offer(publisher.local_addr()?, 1);
    let published = api
        .create_publish(&offer)
        .context("creating the publisher")?;
    ids.push(published.session_id.clone());
    *room = published.room_id;
    let dest = sdp::audio_addr(&published.sdp).context("parsing the publish answer")?;
    eprintln!("loadgen: subscribing {n} listeners");
    for i in 0..n {
        let listen = api
            .create_listen(&published.session_id)
            .with_context(|| format!("creating listener {i}"))?;
        ids.push(listen.session_id.clone());
        let local = listeners[i % listeners.len()].local_addr()?;
        let answer = sdp::answer(&listen.sdp, local, i as u64 + 2)
            .context("answering the listener offer")?;
        api.set_answer(&listen.session_id, &answer)
            .with_context(|| format!("set_answer of listener {i}"))?;
    }
    Ok(dest)
}

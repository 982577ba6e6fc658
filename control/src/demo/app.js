// Sluice demo page: an echo test and an SFU room over the session API (/api/ws).
// Plain JavaScript, no build step, no external resources.
//
// Chat: the echo test and the publisher open a data channel "chat"; the echo test gets its
// messages back, a listener gets its publisher's (the server mirrors the channel). Received
// messages are in window.sluice.echoChat and window.sluice.roomChat.
//
// Test hooks: window.sluice.status is "idle" | "connecting" | "playing" | "error: ..." for the
// echo test ("playing" once the echoed video has frames and its clock advances);
// publishStatus and listenStatus do the same for the room. ?autostart=echo starts the echo
// test on load; ?autostart=publish publishes into ?room=ID (or a new room); ?secret=S logs in
// first when the server has an API secret.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  const REQUEST_TIMEOUT_MS = 15000;
  const GATHER_TIMEOUT_MS = 5000;
  const LOG_KEEP = 300;

  const sluice = {
    status: "idle",
    publishStatus: "idle",
    listenStatus: "idle",
    echoSession: null,
    publishSession: null,
    listenSession: null,
    room: null,
    log: [],
    echoChat: [],
    roomChat: [],
  };
  window.sluice = sluice;

  function log(text, isError) {
    const line = `${new Date().toISOString().slice(11, 23)} ${text}`;
    sluice.log.push(line);
    if (sluice.log.length > LOG_KEEP) sluice.log.shift();
    const li = document.createElement("li");
    li.textContent = line;
    if (isError) li.className = "error";
    const ol = $("log");
    ol.appendChild(li);
    while (ol.childElementCount > LOG_KEEP) ol.firstElementChild.remove();
    ol.scrollTop = ol.scrollHeight;
    (isError ? console.error : console.log)("[sluice] " + text);
  }

  function errText(e) {
    if (e && e.code !== undefined) return `${e.message} (${e.code})`;
    return e && e.message ? e.message : String(e);
  }

  function setStatus(s) {
    sluice.status = s;
    const el = $("status");
    el.textContent = s;
    el.className = s.startsWith("error") ? "error" : s;
    if (s.startsWith("error")) log("echo: " + s, true);
  }

  // ---- The WebSocket API client -------------------------------------------------------------

  class ApiError extends Error {
    constructor(data) {
      super((data && data.error) || "error");
      this.code = data && data.code;
    }
  }

  class Api {
    constructor(url) {
      this.url = url;
      this.ws = null;
      this.ready = null;
      this.nextTid = 1;
      this.pending = new Map();
      this.onEvent = () => {};
    }

    connect() {
      if (this.ready) return this.ready;
      this.ready = new Promise((resolve, reject) => {
        $("api-state").textContent = "connecting";
        const ws = new WebSocket(this.url);
        this.ws = ws;
        ws.onopen = () => {
          $("api-state").textContent = "connected";
          log("api: connected to " + this.url);
          resolve();
        };
        ws.onerror = () => reject(new Error("cannot connect to " + this.url));
        ws.onclose = () => {
          $("api-state").textContent = "disconnected";
          log("api: connection closed", true);
          this.ready = null;
          for (const p of this.pending.values()) p.reject(new Error("API connection closed"));
          this.pending.clear();
        };
        ws.onmessage = (m) => this.frame(m.data);
      });
      const secret = params.get("secret");
      if (secret) {
        this.ready = this.ready.then(() =>
          this.send("core", "user", "login", { user: "demo", password: secret }).then(() => {
            log("api: logged in");
          }),
        );
      }
      return this.ready;
    }

    frame(text) {
      let msg;
      try {
        msg = JSON.parse(text);
      } catch (e) {
        log("api: bad frame from the server: " + text, true);
        return;
      }
      if (msg.cmd === "event") {
        this.ws.send(JSON.stringify({ result: "ok", tid: msg.tid }));
        try {
          this.onEvent(msg.data || {});
        } catch (e) {
          log("event handler: " + errText(e), true);
        }
        return;
      }
      if (msg.ack !== undefined) return;
      const p = this.pending.get(msg.tid);
      if (!p) return;
      this.pending.delete(msg.tid);
      clearTimeout(p.timer);
      if (msg.result === "ok") p.resolve(msg.data || {});
      else p.reject(new ApiError(msg.data));
    }

    send(cls, subclass, cmd, data) {
      const tid = this.nextTid++;
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          this.pending.delete(tid);
          reject(new Error(`${subclass}/${cmd}: no reply within ${REQUEST_TIMEOUT_MS} ms`));
        }, REQUEST_TIMEOUT_MS);
        this.pending.set(tid, { resolve, reject, timer });
        this.ws.send(JSON.stringify({ class: cls, subclass, cmd, data, tid }));
      });
    }

    async request(subclass, cmd, data) {
      await this.connect();
      try {
        return await this.send("media", subclass, cmd, data);
      } catch (e) {
        // A server started with an API secret: ask for it once, log in, and try again.
        if (!(e instanceof ApiError) || e.code !== 100031) throw e;
        const secret = window.prompt("This Sluice has an API secret. Secret:");
        if (!secret) throw e;
        await this.send("core", "user", "login", { user: "demo", password: secret });
        log("api: logged in");
        return this.send("media", subclass, cmd, data);
      }
    }
  }

  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const api = new Api(`${scheme}://${location.host}/api/ws`);
  sluice.api = api;
  const session = (cmd, data) => api.request("session", cmd, data);

  // ---- WebRTC helpers -------------------------------------------------------------------------

  function newPeerConnection(tag) {
    const pc = new RTCPeerConnection({
      iceServers: [],
      bundlePolicy: "max-bundle",
      rtcpMuxPolicy: "require",
    });
    pc.oniceconnectionstatechange = () => log(`${tag}: ice ${pc.iceConnectionState}`);
    pc.onconnectionstatechange = () => log(`${tag}: connection ${pc.connectionState}`);
    return pc;
  }

  // The server does not trickle and the simplest offer carries every candidate: wait for
  // gathering to complete (bounded: what has been gathered by then is sent).
  function gathered(pc) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        pc.removeEventListener("icegatheringstatechange", check);
        resolve();
      };
      const check = () => {
        if (pc.iceGatheringState === "complete") done();
      };
      const timer = setTimeout(() => {
        log("ice gathering still running; sending the candidates found so far");
        done();
      }, GATHER_TIMEOUT_MS);
      pc.addEventListener("icegatheringstatechange", check);
    });
  }

  function playVideo(video, tag) {
    const p = video.play();
    if (p && p.catch) {
      p.catch(() => {
        // Autoplay with sound needs a user gesture: play muted, click to unmute.
        video.muted = true;
        video.play().catch(() => {});
        log(`${tag}: sound muted by the autoplay policy; click the video to unmute`);
      });
    }
  }

  function attachRemote(pc, video, tag) {
    const stream = new MediaStream();
    video.srcObject = stream;
    video.onclick = () => {
      video.muted = false;
    };
    pc.ontrack = (e) => {
      stream.addTrack(e.track);
      log(`${tag}: remote ${e.track.kind} track`);
      playVideo(video, tag);
    };
  }

  // Calls onPlaying once the video has a size and its clock advances; then keeps showing
  // receive statistics. Returns a stop function.
  function watchVideo(video, pc, statsEl, onPlaying) {
    let last = -1;
    let playing = false;
    let prevBytes = null;
    let ticks = 0;
    const timer = setInterval(async () => {
      if (!playing && video.videoWidth > 0 && last >= 0 && video.currentTime > last) {
        playing = true;
        onPlaying();
      }
      last = video.currentTime;
      if (statsEl && ++ticks % 5 === 0) {
        try {
          const report = await pc.getStats();
          report.forEach((s) => {
            if (s.type === "inbound-rtp" && s.kind === "video") {
              const kbps = prevBytes === null ? 0 : ((s.bytesReceived - prevBytes) * 8) / 1000;
              prevBytes = s.bytesReceived;
              statsEl.textContent = `(${video.videoWidth}x${video.videoHeight}, ${kbps.toFixed(0)} kbit/s)`;
            }
          });
        } catch (e) {
          // The connection went away; the stop path clears the timer.
        }
      }
    }, 200);
    return () => clearInterval(timer);
  }

  // A chat over data channel `dc`: the form sends, what arrives goes to `received` and the log
  // list. Returns a function that detaches it.
  function chat(dc, formId, received, tag) {
    const input = $(formId.replace("-form", "-text"));
    const button = $(formId.replace("-form", "-send"));
    const list = $(formId.replace("-form", "-log"));
    const show = (text) => {
      const li = document.createElement("li");
      li.textContent = text;
      list.appendChild(li);
      list.scrollTop = list.scrollHeight;
    };
    const enable = (on) => {
      input.disabled = !on;
      button.disabled = !on;
    };
    dc.onopen = () => {
      enable(true);
      log(`${tag}: chat channel open`);
    };
    dc.onclose = () => enable(false);
    dc.onmessage = (e) => {
      const text = typeof e.data === "string" ? e.data : `(${e.data.byteLength || e.data.size} bytes)`;
      received.push(text);
      show("← " + text);
    };
    if (dc.readyState === "open") enable(true);
    $(formId).onsubmit = (e) => {
      e.preventDefault();
      if (dc.readyState !== "open" || !input.value) return;
      dc.send(input.value);
      show("→ " + input.value);
      input.value = "";
    };
    return () => {
      enable(false);
      $(formId).onsubmit = (e) => e.preventDefault();
    };
  }

  // Sends `text` on an open channel (for tests); false when it is not open.
  function sendOn(dc, text) {
    if (!dc || dc.readyState !== "open") return false;
    dc.send(text);
    return true;
  }

  function stopStream(stream) {
    if (stream) stream.getTracks().forEach((t) => t.stop());
  }

  async function getMedia() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw new Error("getUserMedia is unavailable (the page needs http://localhost or https)");
    }
    return navigator.mediaDevices.getUserMedia({ audio: true, video: true });
  }

  // ---- Echo test ------------------------------------------------------------------------------

  const echoState = { pc: null, stream: null, unwatch: null, muteAudio: false, muteVideo: false, stopping: false, dc: null, unchat: null };

  function echoButtons(running) {
    $("echo-start").disabled = running;
    $("echo-stop").disabled = !running;
    $("echo-mute-audio").disabled = !running;
    $("echo-mute-video").disabled = !running;
    $("echo-bitrate").disabled = !running;
  }

  function echoCleanup() {
    if (echoState.unwatch) echoState.unwatch();
    if (echoState.unchat) echoState.unchat();
    echoState.dc = null;
    echoState.unchat = null;
    if (echoState.pc) echoState.pc.close();
    stopStream(echoState.stream);
    echoState.pc = null;
    echoState.stream = null;
    echoState.unwatch = null;
    sluice.echoSession = null;
    $("echo-local").srcObject = null;
    $("echo-remote").srcObject = null;
    $("echo-stats").textContent = "";
    echoButtons(false);
  }

  async function echo() {
    if (echoState.pc || echoState.stream) await stopEcho();
    echoState.muteAudio = false;
    echoState.muteVideo = false;
    $("echo-mute-audio").textContent = "Mute audio";
    $("echo-mute-video").textContent = "Mute video";
    setStatus("connecting");
    echoButtons(true);
    try {
      const stream = await getMedia();
      echoState.stream = stream;
      $("echo-local").srcObject = stream;
      const pc = newPeerConnection("echo");
      echoState.pc = pc;
      stream.getTracks().forEach((t) => pc.addTrack(t, stream));
      echoState.dc = pc.createDataChannel("chat");
      echoState.unchat = chat(echoState.dc, "echo-chat-form", sluice.echoChat, "echo");
      const remote = $("echo-remote");
      attachRemote(pc, remote, "echo");
      pc.addEventListener("connectionstatechange", () => {
        if (pc.connectionState === "failed" && echoState.pc === pc) {
          setStatus("error: WebRTC connection failed");
        }
      });
      await pc.setLocalDescription(await pc.createOffer());
      await gathered(pc);
      const bitrate = Number($("echo-bitrate").value) || 0;
      const data = { type: "echo", offer: { sdp: pc.localDescription.sdp, sdp_type: "webrtc" } };
      if (bitrate) data.bitrate = bitrate;
      const r = await session("create", data);
      if (echoState.pc !== pc) return; // stopped meanwhile
      sluice.echoSession = r.session_id;
      log("echo: session " + r.session_id);
      await pc.setRemoteDescription({ type: "answer", sdp: r.answer.sdp });
      echoState.unwatch = watchVideo(remote, pc, $("echo-stats"), () => {
        setStatus("playing");
        log("echo: video playing");
      });
    } catch (e) {
      setStatus("error: " + errText(e));
      const id = sluice.echoSession;
      echoCleanup();
      if (id) session("destroy", { session_id: id }).catch(() => {});
    }
  }

  async function stopEcho() {
    const id = sluice.echoSession;
    echoState.stopping = true;
    echoCleanup();
    if (id) {
      try {
        await session("destroy", { session_id: id });
      } catch (e) {
        log("echo: destroy: " + errText(e), true);
      }
    }
    echoState.stopping = false;
    setStatus("idle");
  }

  async function echoUpdate(fields) {
    if (!sluice.echoSession) throw new Error("no echo session");
    await session("update_media", Object.assign({ session_id: sluice.echoSession }, fields));
    log("echo: update_media " + JSON.stringify(fields));
  }

  async function muteAudio(on) {
    echoState.muteAudio = on === undefined ? !echoState.muteAudio : !!on;
    $("echo-mute-audio").textContent = echoState.muteAudio ? "Unmute audio" : "Mute audio";
    await echoUpdate({ mute_audio: echoState.muteAudio });
  }

  async function muteVideo(on) {
    echoState.muteVideo = on === undefined ? !echoState.muteVideo : !!on;
    $("echo-mute-video").textContent = echoState.muteVideo ? "Unmute video" : "Mute video";
    await echoUpdate({ mute_video: echoState.muteVideo });
  }

  async function setBitrate(bps) {
    const value = String(Number(bps) || 0);
    const select = $("echo-bitrate");
    if (![...select.options].some((o) => o.value === value)) {
      select.appendChild(new Option(`${Number(value) / 1000} kbit/s`, value));
    }
    select.value = value;
    await echoUpdate({ bitrate: Number(value) });
  }

  // ---- Room: publish, list, listen, switch ----------------------------------------------------

  const pubState = { pc: null, stream: null, unwatch: null, dc: null, unchat: null };
  const lisState = { pc: null, unwatch: null };

  function setRoomStatus(which, s) {
    sluice[which] = s;
    if (s.startsWith("error")) log(`room: ${which} ${s}`, true);
  }

  function roomId() {
    return $("room-id").value.trim() || null;
  }

  function publishCleanup() {
    if (pubState.unwatch) pubState.unwatch();
    if (pubState.unchat) pubState.unchat();
    if (pubState.pc) pubState.pc.close();
    stopStream(pubState.stream);
    Object.assign(pubState, { pc: null, stream: null, unwatch: null, dc: null, unchat: null });
    sluice.publishSession = null;
    $("room-local").srcObject = null;
    $("room-pub-id").textContent = "";
    $("room-publish").disabled = false;
    $("room-unpublish").disabled = true;
  }

  async function publish(room) {
    if (pubState.pc) await unpublish();
    if (room !== undefined && room !== null) $("room-id").value = room;
    setRoomStatus("publishStatus", "connecting");
    $("room-publish").disabled = true;
    $("room-unpublish").disabled = false;
    try {
      const stream = await getMedia();
      pubState.stream = stream;
      $("room-local").srcObject = stream;
      const pc = newPeerConnection("publish");
      pubState.pc = pc;
      stream.getTracks().forEach((t) => pc.addTransceiver(t, { direction: "sendonly", streams: [stream] }));
      pubState.dc = pc.createDataChannel("chat");
      pubState.unchat = chat(pubState.dc, "room-chat-form", [], "publish");
      await pc.setLocalDescription(await pc.createOffer());
      await gathered(pc);
      const data = {
        type: "publish",
        offer: { sdp: pc.localDescription.sdp, sdp_type: "webrtc" },
        room_audio_codec: "opus",
        room_video_codec: "vp8",
      };
      const wanted = roomId();
      if (wanted) data.room_id = wanted;
      const r = await session("create", data);
      if (pubState.pc !== pc) return;
      sluice.publishSession = r.session_id;
      sluice.room = r.room_id || r.room;
      $("room-id").value = sluice.room;
      $("room-pub-id").textContent = r.session_id;
      log(`room: publishing ${r.session_id} into room ${sluice.room}`);
      await pc.setRemoteDescription({ type: "answer", sdp: r.answer.sdp });
      pc.addEventListener("connectionstatechange", () => {
        if (pc.connectionState === "connected") setRoomStatus("publishStatus", "playing");
        if (pc.connectionState === "failed") setRoomStatus("publishStatus", "error: WebRTC connection failed");
      });
      await listPublishers(sluice.room);
      return r.session_id;
    } catch (e) {
      setRoomStatus("publishStatus", "error: " + errText(e));
      const id = sluice.publishSession;
      publishCleanup();
      if (id) session("destroy", { session_id: id }).catch(() => {});
      throw e;
    }
  }

  async function unpublish() {
    const id = sluice.publishSession;
    publishCleanup();
    setRoomStatus("publishStatus", "idle");
    if (id) await session("destroy", { session_id: id }).catch((e) => log("room: destroy: " + errText(e), true));
  }

  async function listPublishers(room) {
    const id = room || roomId();
    if (!id) throw new Error("no room id");
    const info = await api.request("room", "get_info", { room_id: id });
    const publishers = info.publishers || [];
    const select = $("room-publishers");
    const keep = select.value;
    select.textContent = "";
    if (publishers.length === 0) select.appendChild(new Option("(none)", ""));
    for (const p of publishers) {
      const mine = p === sluice.publishSession ? " (you)" : "";
      select.appendChild(new Option(p + mine, p));
    }
    if (publishers.includes(keep)) select.value = keep;
    log(`room: ${id} has ${publishers.length} publisher(s)`);
    return publishers;
  }

  function listenCleanup() {
    if (lisState.unwatch) lisState.unwatch();
    if (lisState.pc) lisState.pc.close();
    Object.assign(lisState, { pc: null, unwatch: null });
    sluice.listenSession = null;
    $("room-remote").srcObject = null;
    $("room-listen-id").textContent = "";
    $("room-listen").disabled = false;
    $("room-switch").disabled = true;
    $("room-unlisten").disabled = true;
  }

  async function listen(publisherId) {
    const pub = publisherId || $("room-publishers").value;
    if (!pub) throw new Error("choose a publisher");
    if (lisState.pc) await unlisten();
    setRoomStatus("listenStatus", "connecting");
    $("room-listen").disabled = true;
    $("room-unlisten").disabled = false;
    try {
      const r = await session("create", { type: "listen", publisher_id: pub, sdp_type: "webrtc" });
      sluice.listenSession = r.session_id;
      const pc = newPeerConnection("listen");
      lisState.pc = pc;
      const remote = $("room-remote");
      attachRemote(pc, remote, "listen");
      // The publisher's channels, mirrored: what arrives is shown (a listener's own sends
      // would go nowhere, so the form stays with publishing).
      pc.ondatachannel = (e) => {
        log(`listen: data channel "${e.channel.label}"`);
        e.channel.onmessage = (m) => {
          const text = typeof m.data === "string" ? m.data : "(binary)";
          sluice.roomChat.push(text);
          const li = document.createElement("li");
          li.textContent = "← " + text;
          $("room-chat-log").appendChild(li);
        };
      };
      pc.addEventListener("connectionstatechange", () => {
        if (pc.connectionState === "failed") setRoomStatus("listenStatus", "error: WebRTC connection failed");
      });
      await pc.setRemoteDescription({ type: "offer", sdp: r.offer.sdp });
      await pc.setLocalDescription(await pc.createAnswer());
      await gathered(pc);
      await session("set_answer", {
        session_id: r.session_id,
        answer: { sdp: pc.localDescription.sdp, sdp_type: "webrtc" },
      });
      $("room-listen-id").textContent = `${r.session_id} → ${pub}`;
      $("room-switch").disabled = false;
      log(`room: listening to ${pub} (session ${r.session_id})`);
      lisState.unwatch = watchVideo(remote, pc, null, () => setRoomStatus("listenStatus", "playing"));
      return r.session_id;
    } catch (e) {
      setRoomStatus("listenStatus", "error: " + errText(e));
      const id = sluice.listenSession;
      listenCleanup();
      if (id) session("destroy", { session_id: id }).catch(() => {});
      throw e;
    }
  }

  async function switchTo(publisherId) {
    const pub = publisherId || $("room-publishers").value;
    if (!sluice.listenSession) throw new Error("not listening");
    if (!pub) throw new Error("choose a publisher");
    await session("set_type", { session_id: sluice.listenSession, type: "listen", publisher_id: pub });
    $("room-listen-id").textContent = `${sluice.listenSession} → ${pub}`;
    log(`room: switched to ${pub}`);
  }

  async function unlisten() {
    const id = sluice.listenSession;
    listenCleanup();
    setRoomStatus("listenStatus", "idle");
    if (id) await session("destroy", { session_id: id }).catch((e) => log("room: destroy: " + errText(e), true));
  }

  // ---- Statistics (for people and tests) -----------------------------------------------------

  const STAT_KEYS = [
    "kind", "packetsReceived", "bytesReceived", "packetsLost", "framesDecoded", "keyFramesDecoded",
    "frameWidth", "frameHeight", "pliCount", "firCount", "nackCount", "packetsSent", "bytesSent",
    "framesEncoded", "keyFramesEncoded", "targetBitrate", "qualityLimitationReason",
  ];

  // RTP statistics of each running peer connection: {echo: [...], publish: [...], listen: [...]}.
  async function stats() {
    const out = {};
    for (const [name, pc] of [["echo", echoState.pc], ["publish", pubState.pc], ["listen", lisState.pc]]) {
      if (!pc) continue;
      const report = await pc.getStats();
      out[name] = [];
      report.forEach((s) => {
        if (s.type !== "inbound-rtp" && s.type !== "outbound-rtp") return;
        const e = { type: s.type };
        for (const k of STAT_KEYS) if (s[k] !== undefined) e[k] = s[k];
        out[name].push(e);
      });
    }
    return out;
  }

  // ---- Server events --------------------------------------------------------------------------

  api.onEvent = (ev) => {
    const body = ev.body || {};
    if (ev.subclass === "room") {
      log(`room event: ${ev.type} ${ev.obj_id} ${JSON.stringify(body)}`);
      if (sluice.room && ev.obj_id === sluice.room && /publisher/.test(ev.type)) {
        listPublishers(sluice.room).catch(() => {});
      }
      return;
    }
    const id = ev.obj_id;
    const which =
      id === sluice.echoSession ? "echo" :
      id === sluice.publishSession ? "publish" :
      id === sluice.listenSession ? "listen" : "session " + id;
    if (ev.type === "status") log(`${which}: ${body.class} ${body.media || ""} ${body.status || ""}`.replace(/ +/g, " "));
    else if (ev.type !== "destroyed") log(`${which}: event ${ev.type}`);
    if (ev.type !== "destroyed") return;
    const reason = body.reason || "destroyed";
    log(`${which}: destroyed (${reason})`, reason !== "user_stop");
    if (which === "echo") {
      echoCleanup();
      if (!echoState.stopping) setStatus("error: session destroyed: " + reason);
    } else if (which === "publish") {
      publishCleanup();
      setRoomStatus("publishStatus", "idle");
    } else if (which === "listen") {
      listenCleanup();
      setRoomStatus("listenStatus", reason === "user_stop" ? "idle" : "error: listener destroyed: " + reason);
    }
  };

  // ---- Wiring ---------------------------------------------------------------------------------

  const ui = (f) => () => f().catch((e) => log(errText(e), true));
  $("echo-start").onclick = () => echo();
  $("echo-stop").onclick = ui(stopEcho);
  $("echo-mute-audio").onclick = ui(() => muteAudio());
  $("echo-mute-video").onclick = ui(() => muteVideo());
  $("echo-bitrate").onchange = ui(() => setBitrate($("echo-bitrate").value));
  $("room-publish").onclick = () => publish().catch(() => {});
  $("room-unpublish").onclick = ui(unpublish);
  $("room-refresh").onclick = ui(() => listPublishers());
  $("room-listen").onclick = () => listen().catch(() => {});
  $("room-switch").onclick = ui(() => switchTo());
  $("room-unlisten").onclick = ui(unlisten);

  Object.assign(sluice, {
    echo,
    stopEcho,
    muteAudio,
    muteVideo,
    setBitrate,
    publish,
    unpublish,
    listPublishers,
    listen,
    switchTo,
    unlisten,
    stats,
    // Chat for tests: false while the channel is not open.
    sendEchoChat: (text) => sendOn(echoState.dc, text),
    sendRoomChat: (text) => sendOn(pubState.dc, text),
  });

  if (params.get("room")) $("room-id").value = params.get("room");
  const autostart = params.get("autostart");
  if (autostart === "echo") echo();
  else if (autostart === "publish") publish().catch(() => {});
  else api.connect().catch((e) => log(errText(e), true));
})();

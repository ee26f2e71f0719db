// The phone remote: renders the device's retained state, publishes commands and shows their replies.
// State flows one way: `state` renders the page; controls only publish commands (DESIGN.md section 5).

import mqtt from "./vendor/mqtt/mqtt.esm.js";
import { faultHelp } from "./faults.js";

const STORE_LOGIN = "massager.login";
const STORE_NOTICE = "massager.notice-read";
const REPLY_TIMEOUT_MS = 5000;
const EDIT_HOLD_MS = 2500; // a control the user just changed is not overwritten by state for this long
const ZONES = ["foot", "ankle", "calf"];
const FULL_SCALE_MMHG = { foot: 135, ankle: 95, calf: 75 }; // the trip pressures: a full bar is the trip
const STATUS_WORDS = {
  idle: "Ready", running: "Running", paused: "Paused", finishing: "Finishing", fault: "Fault",
};

const $ = (id) => document.getElementById(id);
const page = {
  settings: { topic_prefix: "massager", device_id: null, websocket_port: 9001, websocket_path: "/",
    websocket_tls: true },
  builtin: { programs: [], safety_notice: "", limits: {} },
  client: null,
  user: null,
  base: null,
  linkState: "starting",
  deviceOnline: null,
  state: null,
  pending: new Map(),
  edited: new Map(),
  counter: 0,
};
window.massagerRemote = page; // for the browser tests and for curious developers

async function fetchJson(path) {
  try {
    const response = await fetch(path, { cache: "no-cache" });
    return response.ok ? await response.json() : null;
  } catch {
    return null;
  }
}

// ---- connection ---------------------------------------------------------------------------------

function deviceIdFor(user) {
  if (page.settings.device_id) return page.settings.device_id;
  return user.endsWith("-phone") ? user.slice(0, -"-phone".length) : user;
}

function websocketUrl() {
  if (page.settings.websocket_url) return page.settings.websocket_url;
  // Like every network listener of the device's broker, the WebSockets one has TLS (wss).
  const scheme = page.settings.websocket_tls || location.protocol === "https:" ? "wss" : "ws";
  const host = location.hostname.includes(":") ? `[${location.hostname}]` : location.hostname;
  return `${scheme}://${host}:${page.settings.websocket_port}${page.settings.websocket_path}`;
}

function setLink(state, text) {
  page.linkState = state;
  const el = $("link");
  el.dataset.link = state;
  el.textContent = text;
  document.body.dataset.link = state;
  renderButtons();
}

function connect(user, password) {
  disconnect();
  page.user = user;
  page.base = `${page.settings.topic_prefix}/${deviceIdFor(user)}`;
  page.deviceOnline = null;
  page.state = null;
  $("device-name").textContent = deviceIdFor(user);
  page.password = password;
  setLink("connecting", "Connecting…");
  const client = mqtt.connect(websocketUrl(), {
    username: user,
    password,
    protocolVersion: 5,
    clean: true,
    clientId: `${user}-web-${Math.random().toString(36).slice(2, 10)}`,
    keepalive: 15,
    connectTimeout: 5000,
    reconnectPeriod: 1000,
    resubscribe: true,
    queueQoSZero: false,
  });
  page.client = client;
  let everConnected = false;
  let failures = 0;
  client.on("connect", () => {
    everConnected = true;
    $("cert-hint").hidden = true;
    $("login").hidden = true;
    $("remote").hidden = false;
    setLink(page.deviceOnline === false ? "device-offline" : "connected",
      page.deviceOnline === false ? "Device offline" : "Connected");
    client.subscribe(
      [`${page.base}/state`, `${page.base}/availability`, `${page.base}/cmd/reply`, replyTopic()],
      { qos: 1 },
    );
    showNoticeOnce();
  });
  client.on("message", onMessage);
  // The broker ties the client id to the user name: the same phone user signed in on another phone or tab
  // closes this connection (mosquitto 2.0.11 sends no "session taken over" over WebSockets, it just closes).
  // Reconnecting each time would start a tug of war; after three connections in a row that lasted under
  // 10 s, stop and offer to take the connection back instead.
  let connectedAt = 0;
  let shortLived = 0;
  const giveWay = () => {
    client.end(true);
    page.client = null;
    setLink("taken-over", "In use on another phone or tab");
    $("take-over").hidden = false;
  };
  client.on("connect", () => { connectedAt = Date.now(); });
  client.on("disconnect", (packet) => { if (packet && packet.reasonCode === 142) giveWay(); });
  client.on("close", () => {
    if (!connectedAt) return;
    shortLived = Date.now() - connectedAt < 10000 ? shortLived + 1 : 0;
    connectedAt = 0;
    if (shortLived >= 3 && page.client === client) giveWay();
  });
  client.on("reconnect", () => setLink("reconnecting", "Connection lost: reconnecting…"));
  client.on("offline", () => setLink("reconnecting", "Connection lost: reconnecting…"));
  client.on("close", () => {
    if (page.client === client && page.linkState !== "refused" && page.linkState !== "taken-over") {
      setLink("reconnecting", "Connection lost: reconnecting…");
    }
  });
  client.on("error", (err) => {
    const refused = [4, 5, 134, 135].includes(err && err.code);
    if (refused) {
      client.end(true);
      page.client = null;
      forgetLogin();
      showLogin("User name or password not accepted by the device.");
      setLink("refused", "Not signed in");
    } else if (!everConnected) {
      setLink("reconnecting", "Cannot reach the device: retrying…");
    }
  });
  client.on("close", () => {
    failures += 1;
    if (!everConnected && failures >= 3 && page.settings.websocket_tls) showCertHint();
  });
}

function showCertHint() {
  // A browser refuses a WebSocket to a certificate it does not trust without asking: open the listener's
  // address once as a page, where it does ask.
  const url = websocketUrl().replace(/^wss:/, "https:");
  const link = $("cert-link");
  link.href = url;
  link.textContent = url;
  $("cert-hint").hidden = false;
}

function disconnect() {
  if (page.client) page.client.end(true);
  page.client = null;
  for (const entry of page.pending.values()) clearTimeout(entry.timer);
  page.pending.clear();
}

function replyTopic() {
  return `${page.base}/cmd/reply/${page.user}`;
}

function onMessage(topic, payload, packet) {
  const text = new TextDecoder().decode(payload);
  if (topic === `${page.base}/availability`) {
    page.deviceOnline = text === "online";
    if (page.client && page.client.connected) {
      setLink(page.deviceOnline ? "connected" : "device-offline",
        page.deviceOnline ? "Connected" : "Device offline");
    }
    return;
  }
  let data;
  try {
    data = JSON.parse(text);
  } catch {
    return;
  }
  if (topic === `${page.base}/state`) {
    if (page.firstStateAt === undefined) page.firstStateAt = performance.now(); // ms after navigation
    page.state = data;
    render(data);
  } else if (topic.startsWith(`${page.base}/cmd/reply`)) {
    const correlation = packet && packet.properties && packet.properties.correlationData;
    const id = (data && data.id) || (correlation ? new TextDecoder().decode(correlation) : null);
    onReply(id, data);
  }
}

// ---- commands -----------------------------------------------------------------------------------

const ACTION_WORDS = {
  start: "Start", stop: "Stop", pause: "Pause", resume: "Resume", set: "Change", reset_fault: "Reset",
};

function send(action, fields, resultEl) {
  const label = ACTION_WORDS[action] || action;
  const client = page.client;
  if (!client || !client.connected) {
    const hint = action === "stop" ? " Press the power button on the device to stop it." : "";
    show(resultEl, "refused", `${label}: not sent, not connected to the device.${hint}`);
    return null;
  }
  page.counter += 1;
  const id = `web-${Date.now().toString(36)}-${page.counter}`;
  const timer = setTimeout(() => {
    if (page.pending.delete(id)) show(resultEl, "refused", `${label}: no answer from the device.`);
  }, REPLY_TIMEOUT_MS);
  page.pending.set(id, { label, el: resultEl, timer });
  show(resultEl, "pending", `${label}: sending…`);
  page.lastSent = { action, id, at: performance.timeOrigin + performance.now() }; // for massager's web bench
  const properties = { responseTopic: replyTopic(), correlationData: new TextEncoder().encode(id) };
  // A command the page has given up on ("no answer") must not run later, after a reconnection: the device
  // drops it once its MQTT 5 message expiry has passed. STOP never expires.
  if (action !== "stop") properties.messageExpiryInterval = Math.round(REPLY_TIMEOUT_MS / 1000);
  client.publish(`${page.base}/cmd`, JSON.stringify({ action, ...fields, id }), { qos: 1, properties });
  return id;
}

function onReply(id, reply) {
  const entry = id ? page.pending.get(id) : null;
  if (!entry) return; // another phone's command, or a duplicate on the second reply topic
  page.pending.delete(id);
  clearTimeout(entry.timer);
  if (reply.ok) show(entry.el, "done", `${entry.label}: done.`);
  else show(entry.el, "refused", `${entry.label} refused: ${reason(reply.error)}`);
}

function reason(error) {
  // "action: reset refused: X" reads "Reset refused: X" after the page's own "<Action> refused: ".
  return String(error || "no reason given").replace(/^action: /, "").replace(/^[a-z_]+ refused: /, "");
}

function show(el, kind, text) {
  el.dataset.result = kind;
  el.textContent = text;
}

// ---- rendering ----------------------------------------------------------------------------------

function formatRemaining(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.max(0, Math.round(seconds));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

function whatRuns(outputs) {
  const parts = [];
  if (Math.abs(outputs.foot_rollers || 0) > 0.01) parts.push("foot rollers");
  if (Math.abs(outputs.calf_rollers || 0) > 0.01) parts.push("calf rollers");
  if ((outputs.pump || 0) > 0.01) parts.push("pump");
  if ((outputs.heater || 0) > 0.01) parts.push("heat");
  return parts.length ? parts.join(", ") : "nothing running";
}

function render(state) {
  const status = state.status || "idle";
  $("status").textContent = STATUS_WORDS[status] || status;
  $("status").dataset.status = status;
  $("phase").textContent = state.phase && status !== "idle" ? state.phase.replace("_", "-") : "";
  $("remaining").textContent = formatRemaining(state.remaining_s);
  const pressures = state.pressure_mmhg || {};
  for (const zone of ZONES) {
    const value = pressures[zone];
    const bar = document.querySelector(`.bar[data-zone="${zone}"]`);
    const fill = bar.querySelector(".bar-fill");
    const percent = value == null ? 0 : Math.min(100, Math.max(0, (value / FULL_SCALE_MMHG[zone]) * 100));
    fill.style.width = `${percent.toFixed(1)}%`;
    bar.dataset.mmhg = value == null ? "" : String(value);
    $(`pressure-${zone}`).textContent = value == null ? "–" : `${Math.round(value)} mmHg`;
  }
  const temps = Object.values(state.temperature_c || {}).filter((t) => typeof t === "number");
  $("temperature").textContent = temps.length ? `${Math.max(...temps).toFixed(1)} °C` : "–";
  $("running").textContent = whatRuns(state.outputs || {});

  const fault = state.fault;
  $("fault").hidden = !fault;
  if (fault) {
    $("fault-code").textContent = fault.code;
    $("fault-message").textContent = fault.message;
    $("fault-help").textContent = faultHelp(fault.code);
  } else {
    $("reset-confirm").hidden = true;
  }
  const notes = (state.warnings || []).map((w) => `${w.message}`);
  if (state.sensor_doubt) notes.push(`A start is refused now: ${state.sensor_doubt}`);
  $("warnings").hidden = notes.length === 0;
  $("warnings").replaceChildren(...notes.map((n) => Object.assign(document.createElement("p"), { textContent: n })));
  $("child-lock").hidden = !state.child_lock;

  syncControls(state);
  renderButtons();
}

function renderButtons() {
  const state = page.state;
  const live = page.linkState === "connected";
  const status = state ? state.status : null;
  $("start").disabled = !live || !state || status !== "idle" || Boolean(state.fault);
  $("pause").disabled = !live || status !== "running";
  $("resume").disabled = !live || status !== "paused";
  $("reset").disabled = !live;
  document.body.classList.toggle("stale", !live);
}

function recentlyEdited(key) {
  const at = page.edited.get(key);
  return at !== undefined && Date.now() - at < EDIT_HOLD_MS;
}

function syncControls(state) {
  if (!recentlyEdited("program")) {
    ensureProgramCard(state.program);
    for (const input of document.querySelectorAll('input[name="program"]')) {
      input.checked = input.value === state.program;
    }
  }
  if (!recentlyEdited("intensity")) {
    for (const input of document.querySelectorAll('input[name="intensity"]')) {
      input.checked = Number(input.value) === state.intensity;
    }
  }
  if (!recentlyEdited("heat")) $("heat").checked = Boolean(state.heat);
  if (!recentlyEdited("heat_target_c") && state.heat_target_c != null) {
    $("heat-target").value = Number(state.heat_target_c).toFixed(1);
  }
  if (!recentlyEdited("timer_min") && state.timer_min != null) $("timer").value = String(state.timer_min);
  if (!recentlyEdited("skip_zones")) {
    const skipped = new Set(state.skip_zones || []);
    for (const input of document.querySelectorAll('input[name="skip"]')) input.checked = skipped.has(input.value);
  }
}

// ---- building the controls ----------------------------------------------------------------------

function programLength(p) {
  return p.fills_timer ? `fills the timer (${p.duration_min} min by default)` : `${p.duration_min} min`;
}

function programCard(p) {
  const label = document.createElement("label");
  label.className = "program";
  const input = Object.assign(document.createElement("input"), { type: "radio", name: "program", value: p.name });
  const title = Object.assign(document.createElement("span"), { className: "program-name", textContent: p.name });
  const length = Object.assign(document.createElement("span"), { className: "program-length",
    textContent: p.duration_min != null ? programLength(p) : "" });
  const what = Object.assign(document.createElement("span"), { className: "program-what",
    textContent: p.description || "" });
  const suits = Object.assign(document.createElement("span"), { className: "program-suits",
    textContent: p.suits ? `Good for: ${p.suits}` : "" });
  label.append(input, title, length, what, suits);
  input.addEventListener("change", () => {
    page.edited.set("program", Date.now());
    send("set", { program: p.name }, $("result"));
  });
  return label;
}

function ensureProgramCard(name) {
  if (!name || document.querySelector(`input[name="program"][value="${CSS.escape(name)}"]`)) return;
  $("programs").append(programCard({ name, description: "A program of this device.", suits: "" }));
}

function buildControls() {
  $("programs").replaceChildren(...page.builtin.programs.map(programCard));
  const limits = page.builtin.limits;
  const segments = [];
  for (let level = limits.intensity_min ?? 1; level <= (limits.intensity_max ?? 5); level += 1) {
    const label = document.createElement("label");
    label.className = "segment";
    const input = Object.assign(document.createElement("input"), { type: "radio", name: "intensity",
      value: String(level) });
    input.setAttribute("aria-label", `Intensity ${level}`);
    input.addEventListener("change", () => {
      page.edited.set("intensity", Date.now());
      send("set", { intensity: level }, $("result"));
    });
    label.append(input, Object.assign(document.createElement("span"), { textContent: String(level) }));
    segments.push(label);
  }
  $("intensity").replaceChildren(...segments);
  const targets = [];
  for (let t = limits.heat_target_min_c ?? 35; t <= (limits.heat_target_max_c ?? 42) + 1e-9; t += 0.5) {
    targets.push(new Option(`${t.toFixed(1)} °C`, t.toFixed(1)));
  }
  $("heat-target").replaceChildren(...targets);
  const timers = [];
  for (let m = limits.timer_min_min ?? 5; m <= (limits.timer_max_min ?? 30); m += 1) {
    timers.push(new Option(`${m} min`, String(m)));
  }
  $("timer").replaceChildren(...timers);
  $("notice-text").textContent = page.builtin.safety_notice;

  $("heat").addEventListener("change", () => {
    page.edited.set("heat", Date.now());
    send("set", { heat: $("heat").checked }, $("result"));
  });
  $("heat-target").addEventListener("change", () => {
    page.edited.set("heat_target_c", Date.now());
    send("set", { heat_target_c: Number($("heat-target").value) }, $("result"));
  });
  $("timer").addEventListener("change", () => {
    page.edited.set("timer_min", Date.now());
    send("set", { timer_min: Number($("timer").value) }, $("result"));
  });
  for (const input of document.querySelectorAll('input[name="skip"]')) {
    input.addEventListener("change", () => {
      page.edited.set("skip_zones", Date.now());
      const zones = [...document.querySelectorAll('input[name="skip"]:checked')].map((i) => i.value);
      send("set", { skip_zones: zones }, $("result"));
    });
  }
  $("start").addEventListener("click", () => {
    const fields = { heat: $("heat").checked, timer_min: Number($("timer").value) };
    const program = document.querySelector('input[name="program"]:checked');
    if (program) fields.program = program.value;
    const intensity = document.querySelector('input[name="intensity"]:checked');
    if (intensity) fields.intensity = Number(intensity.value);
    if ($("heat").checked) fields.heat_target_c = Number($("heat-target").value);
    send("start", fields, $("result"));
  });
  $("pause").addEventListener("click", () => send("pause", {}, $("result")));
  $("resume").addEventListener("click", () => send("resume", {}, $("result")));
  $("stop").addEventListener("click", () => send("stop", {}, $("stop-result")));
  $("reset").addEventListener("click", () => {
    $("reset-confirm").hidden = false;
    $("reset-confirm").focus();
  });
  $("reset-confirm").addEventListener("click", () => {
    $("reset-confirm").hidden = true;
    send("reset_fault", {}, $("reset-result"));
  });
  $("sign-out").addEventListener("click", () => {
    disconnect();
    forgetLogin();
    $("remote").hidden = true;
    showLogin("");
    setLink("refused", "Not signed in");
  });
  $("show-notice").addEventListener("click", () => $("notice").showModal());
  $("take-over").addEventListener("click", () => {
    $("take-over").hidden = true;
    connect(page.user, page.password);
  });
  $("notice").addEventListener("close", () => localStorage.setItem(STORE_NOTICE, "1"));
}

// ---- login and the safety notice ----------------------------------------------------------------

function showLogin(error) {
  $("login").hidden = false;
  $("login-error").textContent = error;
  $("login-user").focus();
}

function savedLogin() {
  try {
    return JSON.parse(localStorage.getItem(STORE_LOGIN) || "null");
  } catch {
    return null;
  }
}

function forgetLogin() {
  localStorage.removeItem(STORE_LOGIN);
}

function showNoticeOnce() {
  const dialog = $("notice");
  if (!localStorage.getItem(STORE_NOTICE) && !dialog.open) dialog.showModal();
}

async function main() {
  const [settings, builtin] = await Promise.all([fetchJson("device.json"), fetchJson("builtin.json")]);
  Object.assign(page.settings, settings || {});
  if (builtin) page.builtin = builtin;
  buildControls();
  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    const user = $("login-user").value.trim();
    const password = $("login-password").value;
    if ($("login-remember").checked) localStorage.setItem(STORE_LOGIN, JSON.stringify({ user, password }));
    else forgetLogin();
    $("login-error").textContent = "";
    connect(user, password);
  });
  if (settings && settings.phone_user) $("login-user").value = settings.phone_user;
  if (settings && settings.websocket_port === null) {
    setLink("refused", "No remote connection on this device");
    $("no-listener").hidden = false;
    document.body.dataset.ready = "1";
    return;
  }
  const saved = savedLogin();
  if (saved && saved.user) {
    connect(saved.user, saved.password);
  } else {
    setLink("refused", "Not signed in");
    showLogin("");
  }
  document.body.dataset.ready = "1";
}

main();

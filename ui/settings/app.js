// Workshop Bridge settings window. Plain JavaScript over Tauri's global API
// (app.withGlobalTauri): commands via invoke, live updates via events.
"use strict";

const tauri = window.__TAURI__;
const invoke = (cmd, args) => tauri.core.invoke(cmd, args);
const listen = (name, fn) => tauri.event.listen(name, (e) => fn(e.payload));

const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

const FIELDS = ["port", "bind", "token", "state_file", "inbox_dir", "outbox_dir", "allowed_origins", "workshop_url"];
const SECTIONS = ["general", "pairing", "security", "folders", "activity"];

let saved = null; // the settings in effect, as last loaded or applied
let status = { state: "stopped" };
let busy = false;

if (/Mac/.test(navigator.platform || navigator.userAgent)) {
  document.documentElement.classList.add("mac");
}

// ---------- sections ----------

function showSection(name) {
  if (!SECTIONS.includes(name)) name = "general";
  for (const s of $$("section")) s.classList.toggle("active", s.id === name);
  for (const a of $$(".nav a")) a.classList.toggle("active", a.dataset.section === name);
  if (location.hash !== "#" + name) history.replaceState(null, "", "#" + name);
  $("#form").scrollTop = 0;
}

for (const a of $$(".nav a")) {
  a.addEventListener("click", (e) => {
    e.preventDefault();
    showSection(a.dataset.section);
  });
}

// ---------- the form ----------

function formValues() {
  const v = {};
  for (const f of FIELDS) v[f] = $("#" + f).value;
  v.allowed_origins = v.allowed_origins.split(/[\n,]/).map((s) => s.trim()).filter(Boolean);
  return v;
}

function fill(settings) {
  saved = settings;
  for (const f of FIELDS) {
    const value = settings[f];
    $("#" + f).value = Array.isArray(value) ? value.join("\n") : value ?? "";
  }
  $("#start-on-launch").checked = settings.start_bridge_on_launch;
  $("#config-path").textContent = settings.config_path;
  showEnvironment(settings.env_overrides, settings.env_problems);
  clearErrors();
  updateDirty();
}

/**
 * The WORKSHOP_BRIDGE_* variables the app started with: those in effect, and those left
 * out, each named with the reason (the others applied without them).
 * @param {string[]} applied
 * @param {{variable: string, message: string}[]} refused
 */
function showEnvironment(applied, refused) {
  const note = $("#env-note");
  note.hidden = !applied.length;
  note.textContent = applied.length
    ? `Started with ${applied.join(", ")} from the environment. Apply saves what you see here.`
    : "";
  const list = $("#env-refused");
  list.replaceChildren(
    ...refused.map((p) => {
      const item = document.createElement("li");
      const name = document.createElement("code");
      name.textContent = p.variable;
      item.append(name, ` was left out: ${p.message.replace(/\.?$/, ".")}`);
      return item;
    }),
  );
  list.hidden = !refused.length;
  $("#env").hidden = !applied.length && !refused.length;
}

function isDirty() {
  if (!saved) return false;
  const now = formValues();
  return FIELDS.some((f) => {
    const a = now[f];
    const b = saved[f];
    return Array.isArray(a) ? a.join("\n") !== (b || []).join("\n") : String(a).trim() !== String(b ?? "").trim();
  });
}

function updateDirty() {
  const dirty = isDirty();
  $("#apply").disabled = !dirty || busy;
  $("#revert").disabled = !dirty || busy;
  const bar = $("#bar-message");
  if (dirty && !bar.classList.contains("error") && !busy) {
    message(HINT);
  } else if (!dirty && bar.textContent === HINT) {
    message("");
  }
}

const HINT = "Changes take effect when you apply them; the bridge restarts.";

function message(text, kind) {
  const m = $("#bar-message");
  m.textContent = text;
  m.className = "bar-message" + (kind ? " " + kind : "");
}

function clearErrors() {
  for (const p of $$(".error-text[data-for]")) p.textContent = "";
  for (const i of $$(".invalid")) i.classList.remove("invalid");
  for (const a of $$(".nav a")) a.classList.remove("has-error");
  $("#form-error").hidden = true;
}

function showErrors(err) {
  clearErrors();
  if (typeof err === "string") err = { fields: {}, message: err };
  const fields = err.fields || {};
  let first = null;
  for (const [field, text] of Object.entries(fields)) {
    const p = $(`.error-text[data-for="${field}"]`);
    const input = $("#" + field);
    if (p) p.textContent = text;
    if (input) input.classList.add("invalid");
    const section = input && input.closest("section");
    if (section) {
      $(`.nav a[data-section="${section.id}"]`).classList.add("has-error");
      if (!first) first = { section: section.id, input };
    }
  }
  // Field errors speak for themselves next to the fields; a banner is for the rest.
  const banner = $("#form-error");
  banner.textContent = err.message;
  banner.hidden = !err.message || Object.keys(fields).length > 0;
  message(err.message, "error");
  if (first) {
    showSection(first.section);
    first.input.focus();
  }
}

for (const f of FIELDS) {
  $("#" + f).addEventListener("input", (e) => {
    e.target.classList.remove("invalid");
    const p = $(`.error-text[data-for="${f}"]`);
    if (p) p.textContent = "";
    if ($("#bar-message").classList.contains("error")) message("");
    updateDirty();
  });
}

async function withBusy(fn) {
  busy = true;
  updateDirty();
  try {
    return await fn();
  } finally {
    busy = false;
    updateDirty();
  }
}

$("#form").addEventListener("submit", async (e) => {
  e.preventDefault();
  if (!isDirty() || busy) return;
  message("Applying…");
  await withBusy(async () => {
    try {
      const settings = await invoke("apply_settings", { form: formValues() });
      fill(settings);
      const live = await invoke("live");
      renderLive(live);
      message(appliedMessage(live.status), live.status.state === "running" ? "ok" : "");
      refreshPairing();
    } catch (err) {
      showErrors(err);
    }
  });
});

// What Apply says, from the bridge's status after it (not from what was hoped for).
function appliedMessage(s) {
  if (s.state === "running") return `Applied. The bridge is running on the new settings (port ${s.port}).`;
  if (s.state === "error") return `Applied and saved. The bridge is not running (${s.message}); start it to use them.`;
  return "Applied and saved. The bridge is stopped; it uses them when you start it.";
}

$("#revert").addEventListener("click", () => {
  if (saved) fill(saved);
  message("");
});

// ---------- general ----------

function renderStatus(s, line) {
  status = s;
  const kind = s.state === "running" ? "running" : s.state === "error" ? "error" : "";
  const side = $("#side-status");
  $(".dot", side).className = "dot " + kind;
  $(".text", side).textContent = s.state === "running" ? `Running · ${s.clients} client${s.clients === 1 ? "" : "s"}` : s.state === "error" ? "Error" : "Stopped";
  $("#hero-icon").className = "hero-icon " + kind;
  $(".hero").classList.toggle("error", s.state === "error");
  $("#hero-title").textContent = s.state === "running" ? "The bridge is running" : s.state === "error" ? "The bridge could not start" : "The bridge is stopped";
  $("#hero-line").textContent = s.state === "error" ? s.message : s.state === "running" ? line.replace(/^Running on /, "Listening on ") : "Devices cannot connect until you start it.";
  $("#toggle-bridge").textContent = s.state === "running" ? "Stop" : "Start";
  const badge = $("#client-badge");
  badge.hidden = !(s.state === "running" && s.clients > 0);
  badge.textContent = s.clients || "";
}

$("#toggle-bridge").addEventListener("click", async () => {
  const button = $("#toggle-bridge");
  button.disabled = true;
  try {
    const live = await invoke(status.state === "running" ? "stop_bridge" : "start_bridge");
    renderLive(live);
  } catch (err) {
    message(String(err), "error");
  } finally {
    button.disabled = false;
  }
});

$("#launch-at-login").addEventListener("change", async (e) => {
  const wanted = e.target.checked;
  $("#login-error").textContent = "";
  try {
    e.target.checked = await invoke("set_launch_at_login", { enabled: wanted });
  } catch (err) {
    e.target.checked = !wanted;
    $("#login-error").textContent = String(err);
  }
});

$("#start-on-launch").addEventListener("change", async (e) => {
  try {
    await invoke("set_start_on_launch", { enabled: e.target.checked });
  } catch (err) {
    e.target.checked = !e.target.checked;
    message(String(err), "error");
  }
});

// ---------- pairing ----------

function renderPairing(p) {
  $("#qr").innerHTML = p.svg; // generated by the app from the URL, not user HTML
  $("#pairing-url").textContent = p.url;
  const select = $("#address");
  select.innerHTML = "";
  const auto = new Option(p.bind_all ? `Automatic (${p.host})` : `${p.host} (the bridge listens only there)`, "");
  select.add(auto);
  const choices = [];
  if (p.bind_all) {
    // The Bonjour name first: it stays the same when the network gives the Mac a new address.
    if (p.local_name) {
      const answers = p.local_name.addresses.length > 0;
      const label = answers ? `${p.local_name.name} — Bonjour name` : `${p.local_name.name} — not answering on this network`;
      select.add(new Option(label, p.local_name.name));
      choices.push(p.local_name.name);
    }
    for (const a of p.addresses) {
      select.add(new Option(`${a.ip} — ${a.interface}`, a.ip));
      choices.push(a.ip);
    }
    select.value = p.address && choices.includes(p.address) ? p.address : "";
  }
  select.disabled = !p.bind_all || choices.length < 2;
  const warning = $("#pairing-warning");
  const text = !p.reachable
    ? "This address works on this Mac only. Listen on 0.0.0.0 (General) so the iPad can connect."
    : p.note
      ? `${p.note}.` // begins with an address or a name, which keep their case
      : "";
  warning.hidden = !text;
  warning.textContent = text;
}

async function refreshPairing() {
  try {
    renderPairing(await invoke("pairing"));
  } catch (err) {
    $("#pairing-url").textContent = String(err);
  }
}

$("#address").addEventListener("change", async (e) => {
  try {
    renderPairing(await invoke("set_pairing_address", { address: e.target.value }));
  } catch (err) {
    message(String(err), "error");
  }
});

async function copy(text, button) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    const area = document.createElement("textarea");
    area.value = text;
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  const label = button.textContent;
  button.textContent = "Copied";
  setTimeout(() => (button.textContent = label), 1200);
}

$("#copy-url").addEventListener("click", (e) => copy($("#pairing-url").textContent, e.currentTarget));
$("#copy-mcp").addEventListener("click", (e) => copy($("#mcp-command").textContent, e.currentTarget));

// ---------- security ----------

$("#reveal-token").addEventListener("click", (e) => {
  const input = $("#token");
  const show = input.type === "password";
  input.type = show ? "text" : "password";
  e.currentTarget.classList.toggle("on", show);
  e.currentTarget.title = show ? "Hide token" : "Show token";
});

$("#copy-token").addEventListener("click", (e) => copy($("#token").value, e.currentTarget));

$("#regenerate-token").addEventListener("click", () => {
  $("#confirm-regenerate").hidden = false;
  $("#do-regenerate").focus();
});
$("#cancel-regenerate").addEventListener("click", () => ($("#confirm-regenerate").hidden = true));
$("#do-regenerate").addEventListener("click", async () => {
  $("#confirm-regenerate").hidden = true;
  await withBusy(async () => {
    try {
      fill(await invoke("regenerate_token"));
      const live = await invoke("live");
      renderLive(live);
      message(
        live.status.state === "running"
          ? "New token saved. Clients holding the old one were disconnected; pair the iPad again."
          : "New token saved. Pair the iPad again with the new code.",
        "ok",
      );
      refreshPairing();
    } catch (err) {
      showErrors(err);
    }
  });
});

// ---------- folders ----------

for (const b of $$("[data-choose]")) {
  b.addEventListener("click", async () => {
    const field = b.dataset.choose;
    try {
      const picked = await invoke("choose_path", { field, current: $("#" + field).value });
      if (picked) {
        $("#" + field).value = picked;
        $("#" + field).dispatchEvent(new Event("input"));
      }
    } catch (err) {
      message(String(err), "error");
    }
  });
}

for (const b of $$("[data-open]")) {
  b.addEventListener("click", async (e) => {
    e.preventDefault();
    try {
      await invoke("open_folder", { which: b.dataset.open });
    } catch (err) {
      message(String(err), "error");
    }
  });
}

// ---------- activity ----------

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });

function since(iso) {
  const seconds = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (seconds < 60) return seconds < 5 ? "just now" : `${seconds} s ago`;
  const minutes = Math.round(seconds / 60);
  if (minutes < 60) return `${minutes} min ago`;
  const hours = Math.floor(minutes / 60);
  return `${hours} h ${minutes % 60} min ago`;
}

function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  Object.assign(e, props);
  e.append(...children);
  return e;
}

function renderLive(live) {
  renderStatus(live.status, live.line);

  const body = $("#clients");
  body.replaceChildren(
    ...live.clients.map((c) =>
      el("tr", {},
        el("td", { className: "mono", textContent: c.peer }),
        el("td", { className: "mono", textContent: c.path }),
        el("td", {}, c.agentId ? el("span", { textContent: c.agentId }) : el("span", { className: "muted", textContent: "—" }),
          ...(c.role ? [el("span", { className: "role", textContent: c.role })] : [])),
        el("td", { textContent: since(c.connected_at), title: new Date(c.connected_at).toLocaleString() }),
      ),
    ),
  );
  $("#no-clients").hidden = live.clients.length > 0;
  $("#no-clients").textContent = live.status.state === "running" ? "No one is connected." : "The bridge is not running.";

  const st = live.state;
  const dot = $("#state-dot");
  const error = $("#state-error");
  if (!st) {
    dot.className = "dot";
    $("#state-text").textContent = "Not watched while the bridge is stopped.";
    error.hidden = true;
  } else {
    dot.className = "dot " + (st.last_error ? "error" : st.last_load ? "running" : "");
    const loaded = st.last_load ? `loaded ${since(st.last_load)} (version ${st.seq})` : "not loaded yet";
    $("#state-text").textContent = `${st.path} — ${loaded}`;
    error.hidden = !st.last_error;
    error.textContent = st.last_error || "";
  }

  const log = $("#log");
  const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 24;
  log.replaceChildren(
    ...live.logs.slice(-200).map((l) =>
      el("li", { className: l.level },
        el("time", { textContent: timeFormat.format(new Date(l.at_ms)) }),
        el("span", { className: "level", textContent: l.level }),
        el("span", { className: "msg", textContent: l.text }),
      ),
    ),
  );
  if (atBottom) log.scrollTop = log.scrollHeight;
}

// ---------- start ----------

// Listeners first, so the window follows the bridge even if a first read fails; each read
// that fails says so in the window instead of leaving it blank.
async function start() {
  showSection(location.hash.slice(1));
  try {
    await listen("live", (live) => {
      const wasRunning = status.state === "running";
      renderLive(live);
      if (wasRunning !== (live.status.state === "running")) refreshPairing();
    });
    // The Mac's addresses changed (a new DHCP lease, Wi-Fi off): a fresh URL and QR code.
    await listen("pairing", (p) => renderPairing(p));
    await listen("launch-at-login", (on) => ($("#launch-at-login").checked = on));
    await listen("show-section", (name) => showSection(name));
  } catch (err) {
    showErrors(`The window cannot follow the bridge (${err}). Close it and open Settings again.`);
  }
  try {
    fill(await invoke("get_settings"));
  } catch (err) {
    showErrors(`The settings could not be read (${err}). Close the window and open Settings again.`);
  }
  try {
    $("#launch-at-login").checked = await invoke("get_launch_at_login");
  } catch (err) {
    $("#launch-at-login").disabled = true;
    $("#login-error").textContent = String(err);
  }
  try {
    renderLive(await invoke("live"));
  } catch (err) {
    $("#side-status .text").textContent = "Unknown";
    $("#hero-title").textContent = "The bridge’s status is unknown";
    $("#hero-line").textContent = `The window could not ask the app (${err}).`;
    message(`The bridge’s status could not be read (${err}). Close the window and open Settings again.`, "error");
  }
  refreshPairing();
  try {
    $("#mcp-command").textContent = (await invoke("mcp_command")).claude;
  } catch (err) {
    $("#mcp-command").textContent = `The command could not be made (${err}).`;
    $("#copy-mcp").disabled = true;
  }
  document.body.dataset.ready = "true";
}

start();

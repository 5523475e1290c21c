// The status page: reads the admin JSON API every few seconds and fills the
// tables. No framework, no build step. With an admin token configured, the
// API answers 401 until the page sends it: the page then asks for it once,
// keeps it in sessionStorage (this tab only) and sends it as a bearer token.
"use strict";

const REFRESH_MS = 3000;
let viewer = null; // {port, ip} of the HTTP viewer listener, if it runs

function token() {
  return sessionStorage.getItem("streamcache-token");
}

async function api(path) {
  const headers = {};
  if (token()) headers["Authorization"] = "Bearer " + token();
  const response = await fetch(path, { headers });
  if (response.status === 401) {
    document.getElementById("token-form").hidden = false;
    throw new Error("the admin token is needed");
  }
  if (!response.ok) throw new Error(path + ": " + response.status);
  return response.json();
}

function cell(row, text, cls) {
  const td = row.insertCell();
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function fill(tbody, items, columns, render) {
  tbody.replaceChildren();
  if (items.length === 0) {
    const td = tbody.insertRow().insertCell();
    td.colSpan = columns;
    td.className = "empty";
    td.textContent = "none";
    return;
  }
  for (const item of items) render(tbody.insertRow(), item);
}

function bytes(n) {
  if (n == null) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return n.toFixed(i ? 1 : 0) + " " + units[i];
}

function secs(s) {
  return s.toFixed(1) + " s";
}

function definitions(dl, pairs) {
  dl.replaceChildren();
  for (const [name, value] of pairs) {
    const dt = document.createElement("dt");
    dt.textContent = name;
    const dd = document.createElement("dd");
    dd.textContent = value;
    dl.append(dt, dd);
  }
}

function renderSessions(sessions) {
  fill(document.querySelector("#sessions tbody"), sessions, 8, (row, s) => {
    cell(row, s.id);
    cell(row, s.player);
    cell(row, s.path, "key");
    cell(row, s.transport);
    cell(row, s.state);
    cell(row, s.source + (s.cache ? " (" + s.cache + ")" : ""));
    cell(row, bytes(s.bytes_sent));
    cell(row, secs(s.since_secs));
  });
}

function renderPresentations(presentations) {
  fill(document.querySelector("#presentations tbody"), presentations, 7, (row, p) => {
    const td = row.insertCell();
    if (p.state === "complete" && viewer) {
      const button = document.createElement("button");
      button.className = "play";
      button.textContent = "▶ play";
      button.dataset.id = p.id;
      button.addEventListener("click", () => play(p));
      td.append(button);
    }
    cell(row, p.key, "key");
    cell(row, p.state + (p.recording ? ", recording" : ""));
    cell(row, p.spans.map((s) => s.start.toFixed(1) + "–" + s.end.toFixed(1) + " s").join(", ") || "–");
    cell(row, p.tracks.map((t) => t.media + " " + t.encoding).join(", "));
    cell(row, bytes(p.bytes));
    cell(row, String(p.viewers));
  });
}

function renderStatus(status) {
  viewer = status.http;
  const c = status.cache;
  definitions(document.getElementById("cache"), [
    ["titles", String(c.titles)],
    ["used", bytes(c.used_bytes)],
    ["budget", bytes(c.budget_bytes)],
    ["disk free", bytes(c.disk_available_bytes)],
    ["HTTP viewers", viewer ? "port " + viewer.port : "off ([http] listen)"],
  ]);
  const origins = document.getElementById("origins");
  origins.replaceChildren();
  for (const key of status.origin_sessions) {
    const li = document.createElement("li");
    li.textContent = key;
    origins.append(li);
  }
  if (status.origin_sessions.length === 0) origins.textContent = "none";
  const box = document.getElementById("cluster-box");
  box.hidden = !status.cluster;
  if (status.cluster) {
    definitions(document.getElementById("cluster"), [
      ["node", status.cluster.node_id],
      ["master", status.cluster.master],
      ["connected", String(status.cluster.connected)],
    ]);
  }
}

// Plays a stored title from the HTTP viewer listener (another port of the
// same host). Progressive MP4 (moov first) plays in every browser with
// H.264/AAC; a browser that cannot play MP4 but has native HLS gets the
// playlist.
function play(p) {
  const base = location.protocol + "//" + location.hostname + ":" + viewer.port + "/by-id/" + p.id;
  const video = document.getElementById("player");
  const mp4 = video.canPlayType('video/mp4; codecs="avc1.42E01E, mp4a.40.2"');
  const hls = video.canPlayType("application/vnd.apple.mpegurl");
  video.src = mp4 || !hls ? base + "/export.mp4" : base + "/index.m3u8";
  document.getElementById("playing").textContent = p.key;
  document.getElementById("player-box").hidden = false;
  const state = document.getElementById("player-state");
  state.className = "";
  state.textContent = "loading " + video.src;
  video.play().catch((e) => { state.textContent = "cannot start: " + e.message; });
}

function watchPlayer() {
  const video = document.getElementById("player");
  const state = document.getElementById("player-state");
  video.addEventListener("playing", () => { state.textContent = "playing"; });
  video.addEventListener("error", () => {
    state.className = "error";
    state.textContent = "error: " + (video.error ? video.error.message || video.error.code : "unknown");
  });
}

async function refresh() {
  try {
    const [status, sessions, presentations] = await Promise.all([
      api("/api/v1/status"),
      api("/api/v1/sessions"),
      api("/api/v1/presentations"),
    ]);
    renderStatus(status);
    renderSessions(sessions.sessions);
    renderPresentations(presentations.presentations);
    document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (e) {
    document.getElementById("updated").textContent = String(e.message || e);
  }
}

document.getElementById("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem("streamcache-token", document.getElementById("token").value);
  document.getElementById("token-form").hidden = true;
  refresh();
});

watchPlayer();
refresh();
setInterval(refresh, REFRESH_MS);

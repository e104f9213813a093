// The page of `vsalmonn serve`: streams, search on per-stream timelines, the live event feed, ask.
// Plain script, no framework and no build step. Every API call goes through `api()`, which adds the token
// (kept in localStorage) and turns a refusal into its one-line `detail`. Both SSE feeds (the event stream
// and the streamed answer) are read from fetch()'s body by one parser, `readSSE`: EventSource can neither
// POST nor send an Authorization header.
"use strict";

const TOKEN_KEY = "vsalmonn.token";
const STREAMS_EVERY_MS = 5000;
const EVENTS_SHOWN = 100; // items the feed keeps on the page
const CONTEXT_S = 15; // transcript shown either side of a selected moment
const LANES_MAX = 4; // rows of marks a timeline grows to before marks overlap

const $ = (id) => document.getElementById(id);

const state = {
  streams: [], // entries of /api/streams
  moments: [], // the last search's moments
  citations: [], // the last answer's citations
  shape: null, // the streams' names and covered times the timelines were last drawn for
  locked: false, // the server asked for a token (401) that the page does not have yet
  selected: null, // {stream, t0, t1, kind: "moment" | "citation" | "event", index}
  thumbs: new Map(), // stream -> [{t, path}] from its events, for the moments' thumbnails
  blobs: new Map(), // thumbnail path -> object URL (fetched with the token)
};

// ---------------------------------------------------------------- formatting

function hms(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "–";
  const s = Math.max(0, Math.floor(seconds));
  const pad = (n) => String(n).padStart(2, "0");
  return `${pad(Math.floor(s / 3600))}:${pad(Math.floor((s % 3600) / 60))}:${pad(s % 60)}`;
}

function span(t0, t1) {
  return hms(t0) === hms(t1) ? hms(t0) : `${hms(t0)}–${hms(t1)}`;
}

function clock(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "";
  const today = new Date().toDateString() === d.toDateString();
  const time = d.toLocaleTimeString([], { hour12: false });
  return today ? time : `${d.toLocaleDateString()} ${time}`;
}

function ago(seconds) {
  if (!Number.isFinite(seconds)) return "";
  if (seconds < 90) return `${Math.round(seconds)} s ago`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 172800) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86400)} days ago`;
}

/** An element with attributes and children; strings become text nodes (never HTML). */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "style") Object.assign(node.style, value); // CSSOM: a style attribute breaks the CSP
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function showError(id, message) {
  const node = $(id);
  node.textContent = message || "";
  node.hidden = !message;
}

// ---------------------------------------------------------------- the API

class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

function authHeaders(extra = {}) {
  const headers = { ...extra };
  const token = localStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  return headers;
}

/** The one-line reason of a refused response: its JSON `detail`, else its status. */
async function detailOf(response) {
  try {
    const body = await response.json();
    if (body && typeof body.detail === "string") return body.detail;
  } catch (_) {
    /* not JSON */
  }
  return `${response.status} ${response.statusText || "error"}`.trim();
}

/** fetch() of an API path (relative, so the page works behind a path prefix) with the token; a response
 * that is not 2xx becomes an ApiError with its detail, and a 401 asks for a token. */
async function api(path, { headers = {}, ...options } = {}) {
  let response;
  try {
    response = await fetch(path, { ...options, headers: authHeaders(headers) });
  } catch (exc) {
    if (exc.name === "AbortError") throw exc;
    throw new ApiError(0, "the server cannot be reached");
  }
  if (!response.ok) {
    const detail = await detailOf(response);
    if (response.status === 401) needToken(detail);
    throw new ApiError(response.status, detail);
  }
  return response;
}

async function getJSON(path) {
  return (await api(path, { headers: { Accept: "application/json" } })).json();
}

function query(params) {
  const q = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== "") q.set(key, value);
  }
  const text = q.toString();
  return text ? `?${text}` : "";
}

const streamPath = (name) => `api/streams/${encodeURIComponent(name)}`;

/** Server-sent events from a fetch() response body: calls onEvent({event, data, id}) for each one. The
 * stream's format (WHATWG): lines of `field: value`, a blank line ends an event, `:` starts a comment. */
async function readSSE(response, onEvent) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let event = { event: "message", data: [], id: null };
  const line = (text) => {
    if (text === "") {
      if (event.data.length) onEvent({ event: event.event, data: event.data.join("\n"), id: event.id });
      event = { event: "message", data: [], id: event.id };
      return;
    }
    if (text.startsWith(":")) return;
    const colon = text.indexOf(":");
    const field = colon < 0 ? text : text.slice(0, colon);
    let value = colon < 0 ? "" : text.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") event.event = value;
    else if (field === "data") event.data.push(value);
    else if (field === "id") event.id = value;
  };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let match;
    // A lone "\r" at the end may be the first half of "\r\n": wait for the next piece.
    while ((match = /\r\n|\n|\r(?!$)/.exec(buffer)) !== null) {
      line(buffer.slice(0, match.index));
      buffer = buffer.slice(match.index + match[0].length);
    }
  }
  if (buffer) line(buffer.replace(/\r$/, ""));
  line("");
}

// ---------------------------------------------------------------- the token

function needToken(detail) {
  state.locked = true;
  const form = $("token-form");
  const hadToken = Boolean(localStorage.getItem(TOKEN_KEY));
  form.hidden = false;
  $("token-forget").hidden = true;
  showError("token-error", hadToken ? `the token was refused: ${detail}` : "");
  if (document.activeElement?.tagName !== "INPUT") $("token-input").focus();
}

function setupToken() {
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const token = $("token-input").value.trim();
    if (!token) return;
    localStorage.setItem(TOKEN_KEY, token);
    state.locked = false;
    $("token-input").value = "";
    $("token-form").hidden = true;
    $("token-forget").hidden = false;
    refreshStreams();
    restartFeed();
  });
  $("token-forget").hidden = !localStorage.getItem(TOKEN_KEY);
  $("token-forget").addEventListener("click", () => {
    localStorage.removeItem(TOKEN_KEY);
    $("token-forget").hidden = true;
    refreshStreams();
    restartFeed();
  });
}

// ---------------------------------------------------------------- streams

/** A stream's covered time, stream seconds: from 0 to its committed offset (or where it is now). */
function coveredOf(entry) {
  const cp = entry.checkpoint || {};
  const end = Math.max(cp.source_offset ?? 0, cp.t_end ?? 0, 0);
  return { t0: 0, t1: end };
}

function stateClass(entry) {
  if (entry.stale) return "state-stale";
  return `state-${String(entry.state || "new").replace(/[^a-z_-]/gi, "")}`;
}

function renderStreams() {
  const list = $("streams");
  list.replaceChildren();
  if (state.locked) {
    list.append(el("li", { class: "empty" }, "Give this server's token (at the top of the page) to see its streams."));
  } else if (!state.streams.length) {
    list.append(
      el("li", { class: "empty" }, "No streams yet. Ingest a file or start the daemon (",
        el("code", {}, "vsalmonn daemon"), "); they appear here by themselves."),
    );
  }
  for (const entry of state.streams) {
    const cp = entry.checkpoint;
    const facts = [];
    if (entry.position !== undefined && entry.position !== null) facts.push(`at ${hms(entry.position)}`);
    if (cp) facts.push(`committed to ${hms(coveredOf(entry).t1)}`);
    if (entry.rate) facts.push(`${entry.rate.toFixed(1)}× real time`);
    if (entry.lag_s) facts.push(`lag ${entry.lag_s.toFixed(1)} s`);
    if (entry.drops) facts.push(`${entry.drops} dropped`);
    const state_ = entry.stale ? `${entry.state} (not reporting)` : entry.state || "new";
    list.append(
      el("li", { class: "stream", dataset: { stream: entry.stream } },
        el("div", { class: "stream-head" },
          el("span", { class: "stream-name" }, entry.stream),
          el("span", { class: `badge ${stateClass(entry)}` }, state_)),
        el("div", { class: "stream-facts" }, facts.join(" · ") || "nothing committed yet"),
        entry.source ? el("div", { class: "stream-source", title: entry.source }, entry.kind ? `${entry.kind}: ` : "", entry.source) : null,
        cp ? el("div", { class: "muted small" }, `checkpoint ${cp.seq}, ${ago(cp.age_s)}`) : null,
        entry.last_error ? el("div", { class: "detail" }, entry.last_error) : null),
    );
  }
  const select = $("search-stream");
  const chosen = select.value;
  const names = JSON.stringify(state.streams.map((e) => e.stream));
  if (select.dataset.names === names) return; // unchanged: leave an open list alone
  select.dataset.names = names;
  select.replaceChildren(el("option", { value: "" }, "all streams"),
    ...state.streams.map((e) => el("option", { value: e.stream }, e.stream)));
  select.value = state.streams.some((e) => e.stream === chosen) ? chosen : "";
}

let streamsTimer = null;
async function refreshStreams() {
  clearTimeout(streamsTimer);
  try {
    const body = await getJSON("api/streams");
    state.streams = body.streams || [];
    state.locked = false;
    showError("streams-error", "");
    $("streams-age").textContent = `updated ${new Date().toLocaleTimeString([], { hour12: false })}`;
  } catch (exc) {
    if (exc.status === 503) {
      state.streams = []; // no catalog yet: nothing ingested, which the list says; the reason as a note
      showError("streams-error", "");
      $("streams-age").textContent = exc.message;
    } else showError("streams-error", exc.status === 401 ? "" : exc.message);
  }
  renderStreams();
  // Timelines are redrawn only when a stream's covered time changed: a redraw every few seconds would
  // take the mark away from under the pointer.
  const shape = JSON.stringify([state.locked, state.streams.map((e) => [e.stream, coveredOf(e)])]);
  if (shape !== state.shape) {
    state.shape = shape;
    renderTimelines();
  }
  streamsTimer = setTimeout(refreshStreams, STREAMS_EVERY_MS);
}

// ---------------------------------------------------------------- timelines

/** One bar per stream spanning its covered time, with the search's moments and the answer's citations
 * as marks at their t0–t1. */
function renderTimelines() {
  const box = $("timelines");
  const names = [];
  for (const e of state.streams) names.push(e.stream);
  for (const m of [...state.moments, ...state.citations]) if (!names.includes(m.stream)) names.push(m.stream);
  box.replaceChildren();
  if (!names.length) {
    box.append(el("p", { class: "muted" }, state.locked ? "The streams' timelines show once the token is given." : "No streams yet: nothing to search."));
    return;
  }
  const trackPx = Math.max(200, box.clientWidth - 170); // the bar's width, for the marks' label room
  for (const name of names) {
    const entry = state.streams.find((e) => e.stream === name);
    const covered = entry ? coveredOf(entry) : { t0: 0, t1: 0 };
    let lo = covered.t0;
    let hi = covered.t1;
    const marks = [];
    state.moments.forEach((m, i) => m.stream === name && marks.push({ ...m, kind: "moment", index: i }));
    state.citations.forEach((c, i) => c.stream === name && marks.push({ ...c, kind: "citation", index: i }));
    const sel = state.selected;
    if (sel && sel.kind === "event" && sel.stream === name) marks.push({ ...sel });
    for (const m of marks) {
      lo = Math.min(lo, m.t0);
      hi = Math.max(hi, m.t1);
    }
    if (hi <= lo) hi = lo + 1;
    const frac = (t) => (t - lo) / (hi - lo);
    const pct = (f) => `${(f * 100).toFixed(3)}%`;
    // Marks that would cover each other go to the next lane down (moments and citations apart).
    const room = 30 / trackPx; // a label's width, as a fraction of the bar
    const lanes = { moment: [], citation: [] };
    const laneOf = (m) => {
      const ends = lanes[m.kind === "citation" ? "citation" : "moment"];
      const left = frac(m.t0);
      const right = Math.max(frac(m.t1), left + room);
      let lane = ends.findIndex((end) => end <= left);
      if (lane < 0) lane = ends.length < LANES_MAX ? ends.length : ends.indexOf(Math.min(...ends));
      ends[lane] = right;
      return lane;
    };
    const placed = marks.slice().sort((a, b) => a.t0 - b.t0).map((m) => ({ m, lane: m.kind === "event" ? 0 : laneOf(m) }));
    const momentLanes = Math.max(1, lanes.moment.length);
    const citationLanes = lanes.citation.length;
    const LANE = 1.45; // rem
    const height = 0.3 + momentLanes * LANE + citationLanes * 1.15 + (citationLanes ? 0.15 : 0);
    const bar = el("div", { class: "bar", style: { height: `${height}rem` } },
      el("div", { class: "covered", style: { left: pct(frac(covered.t0)), width: pct(frac(covered.t1) - frac(covered.t0)) } }));
    for (const { m, lane } of placed) {
      const isSelected = sel && sel.kind === m.kind && sel.index === m.index;
      const label = m.kind === "moment" ? String(m.index + 1) : m.kind === "citation" ? `[${m.index + 1}]` : "";
      const what = m.kind === "moment" ? `moment ${m.index + 1}` : m.kind === "citation" ? `citation ${m.index + 1}` : "event";
      const title = `${what}: ${name} ${span(m.t0, m.t1)}`;
      const top = m.kind === "event" ? 0.1 : m.kind === "moment" ? 0.2 + lane * LANE : 0.35 + momentLanes * LANE + lane * 1.15;
      const tall = m.kind === "event" ? height - 0.2 : m.kind === "moment" ? LANE - 0.2 : 1.0;
      bar.append(
        el("button", {
          type: "button", class: `mark ${m.kind}${isSelected ? " selected" : ""}`, title, "aria-label": title,
          style: { left: pct(frac(m.t0)), width: `max(0.5rem, ${pct(frac(m.t1) - frac(m.t0))})`, top: `${top}rem`, height: `${tall}rem` },
          dataset: { kind: m.kind, index: m.index, t0: m.t0, t1: m.t1, stream: name },
          onclick: () => select({ ...m, stream: name }),
        }, el("span", { class: "mark-label" }, label)),
      );
    }
    box.append(
      el("div", { class: "timeline", dataset: { stream: name } },
        el("div", { class: "timeline-name", title: name }, name),
        el("div", { class: "timeline-track" }, bar,
          el("div", { class: "axis" },
            el("span", {}, hms(lo)), el("span", {}, hms((lo + hi) / 2)), el("span", {}, hms(hi))))),
    );
  }
}

// ---------------------------------------------------------------- a selected moment

/** Show one moment: its mark highlighted, its card marked, the transcript around it. */
async function select(moment) {
  state.selected = { stream: moment.stream, t0: moment.t0, t1: moment.t1, kind: moment.kind, index: moment.index };
  renderTimelines();
  for (const card of document.querySelectorAll(".moment-card")) {
    card.classList.toggle("selected", moment.kind === "moment" && Number(card.dataset.index) === moment.index);
  }
  for (const link of document.querySelectorAll("a.citation")) {
    link.classList.toggle("selected", moment.kind === "citation" && Number(link.dataset.index) === moment.index);
  }
  const view = $("moment");
  view.hidden = false;
  const heading = el("h3", {}, `${moment.stream} · ${span(moment.t0, moment.t1)}`,
    el("button", { type: "button", class: "link close", "aria-label": "close", onclick: () => { view.hidden = true; state.selected = null; renderTimelines(); } }, "close"));
  const body = el("div", { class: "transcript muted" }, "loading the transcript…");
  view.replaceChildren(heading, body);
  view.scrollIntoView({ block: "nearest", behavior: "smooth" });
  const start = Math.max(0, moment.t0 - CONTEXT_S);
  const end = moment.t1 + CONTEXT_S;
  try {
    let transcript;
    try {
      transcript = await getJSON(`${streamPath(moment.stream)}/transcript${query({ start, end })}`);
    } catch (exc) {
      // `end` past what is committed is refused by some stores' checks; ask up to the committed offset
      if (exc.status !== 422) throw exc;
      transcript = await getJSON(`${streamPath(moment.stream)}/transcript${query({ start })}`);
    }
    const lines = transcript.lines || [];
    body.className = "transcript";
    body.replaceChildren(
      ...(lines.length
        ? lines.map((l) => el("p", { class: l.t1 >= moment.t0 && l.t0 <= moment.t1 ? "line hit" : "line" },
          el("time", {}, hms(l.t0)), " ", l.text))
        : [el("p", { class: "muted" }, `nothing was said between ${hms(start)} and ${hms(end)}`)]),
    );
    if (transcript.more) body.append(el("p", { class: "muted" }, `and ${transcript.more} more lines`));
  } catch (exc) {
    body.className = "transcript detail";
    body.textContent = exc.message;
  }
}

// ---------------------------------------------------------------- search

/** Thumbnails near a moment: the stream's events whose payload names one, within the moment's span. */
function thumbnailsFor(moment) {
  const found = (state.thumbs.get(moment.stream) || []).filter((t) => t.t >= moment.t0 - 1 && t.t <= moment.t1 + 1);
  return found.slice(0, 3);
}

/** An <img> of a thumbnail, fetched with the token (an <img src> cannot send it). */
function thumbnail(path, alt) {
  const img = el("img", { class: "thumb", alt, loading: "lazy" });
  const show = (url) => { img.src = url; };
  if (state.blobs.has(path)) show(state.blobs.get(path));
  else {
    const rel = path.replace(/^thumbs\//, "");
    api(`api/thumbnails/${rel.split("/").map(encodeURIComponent).join("/")}`)
      .then((r) => r.blob())
      .then((blob) => {
        const url = URL.createObjectURL(blob);
        state.blobs.set(path, url);
        show(url);
      })
      .catch(() => img.replaceWith(el("span", { class: "muted small" }, "(thumbnail gone)")));
  }
  return img;
}

async function loadThumbs(streams) {
  await Promise.all(streams.map(async (name) => {
    try {
      const body = await getJSON(`api/events${query({ stream: name, limit: 200 })}`);
      state.thumbs.set(name, body.events
        .filter((e) => e.payload && typeof e.payload.thumbnail === "string" && e.t !== null)
        .map((e) => ({ t: e.t, path: e.payload.thumbnail, kind: e.kind })));
    } catch (_) {
      state.thumbs.set(name, []); // thumbnails are extra: a moment is shown without them
    }
  }));
}

function renderResults(q) {
  const list = $("results");
  list.replaceChildren();
  const n = state.moments.length;
  $("search-summary").textContent = n ? `${n} moment${n === 1 ? "" : "s"} for “${q}”, best first` : `nothing found for “${q}”`;
  state.moments.forEach((m, i) => {
    const said = m.evidence.filter((e) => e.startsWith("said: ")).map((e) => e.slice(6));
    const seen = m.evidence.filter((e) => e.startsWith("seen: ")).map((e) => e.slice(6));
    const other = m.evidence.filter((e) => !e.startsWith("said: ") && !e.startsWith("seen: "));
    const thumbs = thumbnailsFor(m);
    list.append(
      el("li", { class: "moment-card", dataset: { index: i, stream: m.stream }, tabindex: "0",
        onclick: () => select({ ...m, kind: "moment", index: i }),
        onkeydown: (e) => { if (e.key === "Enter") select({ ...m, kind: "moment", index: i }); } },
        el("div", { class: "card-head" },
          el("span", { class: "rank" }, String(i + 1)),
          el("time", { class: "moment-time", datetime: `PT${Math.floor(m.t0)}S` }, span(m.t0, m.t1)),
          m.wall_t0 ? el("time", { class: "wall", datetime: m.wall_t0, title: "on the wall clock" }, clock(m.wall_t0)) : null,
          el("span", { class: "stream-name" }, m.stream),
          el("span", { class: `modality ${m.modality}` }, m.modality),
          el("span", { class: "score", title: "match score" }, m.score.toFixed(2))),
        el("div", { class: "evidence" },
          thumbs.length ? el("div", { class: "thumbs" }, thumbs.map((t) => thumbnail(t.path, `${t.kind} at ${hms(t.t)}`))) : null,
          el("div", { class: "evidence-text" },
            said.length ? el("p", { class: "said" }, el("span", { class: "tag" }, "said"), said.join(" ")) : null,
            seen.length ? el("p", { class: "seen" }, el("span", { class: "tag" }, "seen"), seen.join(", ")) : null,
            other.map((o) => el("p", { class: "other" }, o)),
            !m.evidence.length ? el("p", { class: "muted" }, "no transcript or labels in this span") : null))),
    );
  });
}

let searching = null;
async function search(e) {
  e.preventDefault();
  const q = $("search-q").value.trim();
  if (!q) return;
  searching?.abort();
  searching = new AbortController();
  const button = e.submitter || $("search-form").querySelector("button");
  button.disabled = true;
  showError("search-error", "");
  $("search-summary").textContent = "searching…";
  try {
    const path = `api/search${query({ q, stream: $("search-stream").value, k: $("search-k").value })}`;
    const body = await (await api(path, { signal: searching.signal, headers: { Accept: "application/json" } })).json();
    state.moments = body.moments || [];
    state.selected = null;
    $("moment").hidden = true;
    await loadThumbs([...new Set(state.moments.map((m) => m.stream))]);
    renderTimelines();
    renderResults(q);
  } catch (exc) {
    if (exc.name === "AbortError") return;
    showError("search-error", exc.message);
    $("search-summary").textContent = "";
  } finally {
    button.disabled = false;
  }
}

// ---------------------------------------------------------------- events

const feed = { lastId: null, controller: null, retry: 1000, timer: null };

function eventClass(record) {
  const kind = record.kind || "";
  if (kind === "alert" || kind.startsWith("surveillance.") || kind === "meeting.keyword") return "alert";
  if (/fail|error|fault|stopped|reconnect/.test(kind)) return "fault";
  return "info";
}

function renderEvent(record, { fresh = false } = {}) {
  const list = $("events");
  list.querySelector(".empty")?.remove();
  const item = el("li", { class: `event ${eventClass(record)}${fresh ? " fresh" : ""}`, dataset: { id: record.id } },
    el("div", { class: "event-head" },
      el("span", { class: "event-kind" }, record.kind),
      record.stream ? el("span", { class: "stream-name" }, record.stream) : null,
      record.t !== null && record.t !== undefined ? el("time", {}, hms(record.t)) : null,
      el("span", { class: "muted small event-clock", title: record.created_at }, clock(record.created_at))),
    el("div", { class: "event-message" }, record.message),
    record.payload && typeof record.payload.thumbnail === "string" ? thumbnail(record.payload.thumbnail, record.message) : null);
  if (record.stream && record.t !== null && record.t !== undefined) {
    item.classList.add("clickable");
    item.title = "show this moment";
    item.addEventListener("click", () => select({ stream: record.stream, t0: record.t, t1: record.t, kind: "event", index: record.id }));
  }
  list.prepend(item);
  while (list.children.length > EVENTS_SHOWN) list.lastElementChild.remove();
}

function setFeedState(text, cls) {
  const node = $("feed-state");
  node.textContent = text;
  node.className = `feed-state ${cls}`;
}

async function loadRecentEvents() {
  try {
    const body = await getJSON(`api/events${query({ limit: 50 })}`);
    $("events").replaceChildren();
    const records = (body.events || []).slice().reverse(); // oldest first, so the newest ends on top
    for (const record of records) renderEvent(record);
    feed.lastId = records.length ? Math.max(...records.map((r) => r.id)) : 0;
    if (!records.length) $("events").append(el("li", { class: "empty muted" }, "No events yet. New ones appear here as they happen."));
    showError("events-error", "");
    return null;
  } catch (exc) {
    if (exc.status === 503) {
      // no catalog yet: no events either; try again until there is one
      $("events").replaceChildren(el("li", { class: "empty muted" }, "No events yet: nothing has been ingested."));
      showError("events-error", "");
    } else showError("events-error", exc.status === 401 ? "" : exc.message);
    return exc;
  }
}

/** Follow /api/events/stream, resuming after the last id seen (Last-Event-ID) whenever it reconnects. */
async function follow() {
  clearTimeout(feed.timer);
  feed.controller?.abort();
  const controller = new AbortController();
  feed.controller = controller;
  if (feed.lastId === null) {
    const failed = await loadRecentEvents();
    if (feed.controller !== controller) return; // restarted meanwhile
    if (failed) return retryFeed(controller, failed.status === 401);
  }
  const headers = { Accept: "text/event-stream" };
  if (feed.lastId !== null) headers["Last-Event-ID"] = String(feed.lastId);
  try {
    const response = await api("api/events/stream", { headers, signal: controller.signal, cache: "no-store" });
    setFeedState("live", "live");
    showError("events-error", "");
    feed.retry = 1000;
    await readSSE(response, (message) => {
      let record;
      try {
        record = JSON.parse(message.data);
      } catch (_) {
        return;
      }
      if (message.id !== null && Number(message.id) <= (feed.lastId ?? -1)) return; // seen already
      feed.lastId = Number(message.id ?? record.id);
      renderEvent(record, { fresh: true });
    });
    if (controller.signal.aborted) return;
    retryFeed(controller);
  } catch (exc) {
    if (controller.signal.aborted) return;
    if (exc instanceof ApiError && exc.status !== 401) showError("events-error", exc.message);
    retryFeed(controller, exc.status === 401);
  }
}

function retryFeed(controller, needsToken = false) {
  if (feed.controller !== controller) return;
  if (needsToken) {
    setFeedState("needs a token", "down");
    return; // restarted when a token is given
  }
  setFeedState(feed.lastId === null ? "waiting for the server…" : `reconnecting in ${Math.round(feed.retry / 1000)} s…`, "down");
  feed.timer = setTimeout(follow, feed.retry);
  feed.retry = Math.min(feed.retry * 2, 10000);
}

function restartFeed() {
  feed.retry = 1000;
  follow();
}

// ---------------------------------------------------------------- ask

let asking = null;
async function ask(e) {
  e.preventDefault();
  const question = $("ask-q").value.trim();
  if (!question) return;
  asking?.abort();
  const controller = new AbortController();
  asking = controller;
  const button = $("ask-button");
  button.disabled = true;
  showError("ask-error", "");
  const text = $("answer-text");
  text.textContent = "";
  text.classList.remove("partial");
  text.classList.add("streaming");
  $("citations").replaceChildren();
  $("answer").hidden = false;
  state.citations = [];
  renderTimelines();
  let answered = false;
  try {
    const body = { question };
    if ($("search-stream").value) body.stream = $("search-stream").value;
    const response = await api("api/ask", {
      method: "POST", signal: controller.signal, body: JSON.stringify(body),
      headers: { Accept: "text/event-stream", "Content-Type": "application/json" },
    });
    const type = response.headers.get("content-type") || "";
    const onEvent = (message) => {
      let data;
      try {
        data = JSON.parse(message.data);
      } catch (_) {
        return;
      }
      if (message.event === "token" && typeof data.text === "string") {
        text.textContent += data.text;
      } else if (message.event === "answer") {
        answered = true;
        showAnswer(data);
      } else if (message.event === "error") {
        showError("ask-error", data.detail || "the answer failed");
      }
    };
    if (type.startsWith("text/event-stream")) await readSSE(response, onEvent);
    else onEvent({ event: "answer", data: await response.text() }); // a server that answered in one piece
    if (!answered && $("ask-error").hidden) showError("ask-error", "the answer ended before it was complete");
  } catch (exc) {
    if (exc.name !== "AbortError") showError("ask-error", exc.message);
  } finally {
    text.classList.remove("streaming");
    if (!answered) text.classList.add("partial"); // what came before a failure, shown as such
    if (!text.textContent) $("answer").hidden = answered ? false : true;
    if (asking === controller) button.disabled = false;
  }
}

function showAnswer(data) {
  $("answer-text").textContent = typeof data.answer === "string" ? data.answer : "";
  state.citations = Array.isArray(data.citations) ? data.citations.filter((c) => c && c.stream && Number.isFinite(c.t0)) : [];
  for (const c of state.citations) if (!Number.isFinite(c.t1)) c.t1 = c.t0;
  const box = $("citations");
  box.replaceChildren();
  if (state.citations.length) {
    box.append(el("span", { class: "muted" }, "cited: "));
    state.citations.forEach((c, i) => {
      box.append(el("a", {
        href: "#", class: "citation", dataset: { index: i },
        onclick: (e) => { e.preventDefault(); select({ ...c, kind: "citation", index: i }); },
      }, `[${i + 1}] ${c.stream} ${span(c.t0, c.t1)}`));
    });
  } else {
    box.append(el("span", { class: "muted" }, "no moments cited"));
  }
  renderTimelines();
}

// ---------------------------------------------------------------- start

function start() {
  setupToken();
  $("search-form").addEventListener("submit", search);
  $("ask-form").addEventListener("submit", ask);
  refreshStreams();
  follow();
  // Leaving the page ends its streams at once: Chromium may keep a streamed response's socket open after
  // the page is gone, and the server would feed it until it shuts down.
  window.addEventListener("pagehide", () => {
    clearTimeout(feed.timer);
    feed.controller?.abort();
    asking?.abort();
  });
}

document.addEventListener("DOMContentLoaded", start);

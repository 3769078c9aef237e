// The dashboard: a HubMonitor (Rust/wasm, the same handshake code as every client) polls the hub's
// stats every second; this page only draws them.
import init, { HubMonitor } from "./pkg/wasm_worker.js";
import { readLink, refusal } from "./link.js";
import { COLORS, bars, lines } from "./chart.js";

const $ = (id) => document.getElementById(id);
const { params, credential: key } = readLink();
const hub = params.get("hub") || `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/`;

let previous = null; // {at, acked, perSession: Map}

// What the charts show: a sample per stats update, the last five minutes of them.
const SPAN_MS = 5 * 60 * 1000;
const history = []; // {t, rate, depth: Map(queue -> ready tasks)}
// Each worker's done count over the last ten seconds, for its rate: session -> [[t, acked], ...].
const RATE_WINDOW_MS = 10 * 1000;
const recent = new Map();
// A queue keeps its colour while it is charted.
const queueColors = new Map();

// The dead-letter actions: the monitor's session sends them, the answers come back by request id.
let monitor = null;
const waiting = new Map(); // req -> resolve
function act(action, queue) {
  return new Promise((resolve, reject) => {
    try {
      waiting.set(monitor.deadLetters(action, queue), resolve);
    } catch (err) {
      reject(err);
    }
  });
}

function say(text, bad) {
  $("action").textContent = text;
  $("action").className = bad ? "bad" : "";
}

async function deadAction(action, queue) {
  if (action === "purge" && !confirm(`Drop every dead letter of ${queue} for good?`)) return;
  let answer;
  try {
    answer = await act(action, queue);
  } catch (err) {
    say(`${action} ${queue}: ${err.message || err}`, true);
    return;
  }
  if (answer.type === "error") {
    say(`${action} ${queue}: ${answer.message}`, true);
  } else if (answer.type === "requeued") {
    say(`requeued ${answer.count} dead letter(s) on ${queue}${answer.more ? " (more left: requeue again)" : ""}`);
  } else if (answer.type === "deleted") {
    say(`dropped ${answer.tasks} dead letter(s) of ${queue}`);
  } else if (answer.type === "dead_letters") {
    say("");
    $("dead-card").hidden = false;
    $("dead-queue").textContent = queue;
    $("dead-total").textContent = `${answer.total} in all${answer.total > answer.entries.length ? `, the oldest ${answer.entries.length} shown` : ""}`;
    rows($("dead").tBodies[0], answer.entries, (e) => [
      cell(e.id, "num"),
      cell(e.kind ?? "-"),
      cell(e.attempts, "num"),
      cell(e.error ?? ""),
      cell(e.payload_bytes !== undefined ? `(${e.payload_bytes} bytes)` : JSON.stringify(e.payload).slice(0, 80)),
    ]);
  }
}

function button(label, action, queue) {
  const b = document.createElement("button");
  b.textContent = label;
  b.dataset.action = action;
  b.dataset.queue = queue;
  b.addEventListener("click", () => deadAction(action, queue));
  return b;
}

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

// What a tab said of itself: visible or hidden, paused by its link's policy, its battery and
// how long its tasks take.
function tabState(s) {
  if (!s) return "";
  const parts = [s.visible ? "visible" : "hidden"];
  if (s.paused) parts.push("paused");
  if (s.charging === false) parts.push(`on battery${s.battery != null ? ` ${Math.round(s.battery * 100)}%` : ""}`);
  else if (s.battery != null && s.battery < 1) parts.push(`charging ${Math.round(s.battery * 100)}%`);
  if (s.ms_per_task != null) parts.push(`${s.ms_per_task < 10 ? s.ms_per_task.toFixed(2) : Math.round(s.ms_per_task)} ms/task`);
  return parts.join(" · ");
}

// A worker's running tasks that reported progress: a bar and the message for each.
function progressCell(list) {
  const td = cell("", "progress");
  for (const p of list) {
    const line = document.createElement("div");
    const bar = document.createElement("progress");
    bar.max = 1;
    bar.value = p.fraction;
    const percent = Math.round(p.fraction * 100);
    line.append(bar, ` #${p.task} ${percent}%${p.message ? ` ${p.message}` : ""}`);
    line.title = `task ${p.task} on ${p.queue}`;
    td.append(line);
  }
  return td;
}

function rows(tbody, items, toCells) {
  tbody.replaceChildren(
    ...items.map((item) => {
      const tr = document.createElement("tr");
      tr.append(...toCells(item));
      return tr;
    }),
  );
}

function draw(stats) {
  const at = performance.now();
  const dt = previous ? (at - previous.at) / 1000 : 0;
  const rate = (now, before) => (dt > 0 && before !== undefined ? Math.max(0, (now - before) / dt) : 0);
  const fmt = (r) => (r >= 10 ? String(Math.round(r)) : r.toFixed(1));
  const overall = rate(stats.acked, previous?.acked);
  $("rate").textContent = fmt(overall);
  $("acked").textContent = stats.acked;
  $("native").textContent = stats.sessions.worker ?? 0;
  $("browser").textContent = stats.sessions.browser ?? 0;
  const queues = stats.queues.filter((q) => !q.name.endsWith(".dead"));
  rows($("queues").tBodies[0], queues, (q) => {
    const actions = cell("", "actions");
    if (q.dead > 0) {
      actions.append(button("list", "list", q.name), button("requeue", "requeue", q.name), button("purge", "purge", q.name));
    }
    return [cell(q.name), cell(q.depth, "num"), cell(q.in_flight, "num"), cell(q.scheduled ?? 0, "num"), cell(q.voting ?? 0, "num"), cell(q.dead, "num"), cell(q.consumers, "num"), actions];
  });
  const perSession = new Map(stats.workers.map((w) => [w.session, w.acked]));
  rows($("workers").tBodies[0], stats.workers, (w) => [
    cell(w.name ? `${w.name} (#${w.session})` : `#${w.session}`),
    cell(w.role === "browser" ? "browser" : "native"),
    cell(w.acked, "num"),
    cell(w.in_flight, "num"),
    cell(fmt(rate(w.acked, previous?.perSession.get(w.session))), "num"),
    cell(tabState(w.state), "tab-state"),
    progressCell(w.progress || []),
  ]);
  // The first update has nothing to compare with: it starts the charts at the next.
  if (previous) chart(at, overall, queues, stats.workers);
  previous = { at, acked: stats.acked, perSession };
  window.taskhubStats = stats;
}

// Add this update to the charts' history (five minutes of it) and redraw them.
function chart(at, overall, queues, workers) {
  history.push({ t: at, rate: overall, depth: new Map(queues.map((q) => [q.name, q.depth])) });
  while (history.length && at - history[0].t > SPAN_MS) history.shift();
  lines($("throughput-chart"), [
    { name: "tasks/s", color: COLORS[0], points: history.map((h) => [h.t, h.rate]) },
  ], at, SPAN_MS);
  // The queues seen in the window, deepest first, at most as many as there are colours.
  const deepest = new Map();
  for (const h of history) for (const [name, d] of h.depth) deepest.set(name, Math.max(d, deepest.get(name) ?? 0));
  const shown = [...deepest.entries()].sort((a, b) => b[1] - a[1]).slice(0, COLORS.length).map(([n]) => n);
  for (const name of queueColors.keys()) if (!shown.includes(name)) queueColors.delete(name);
  for (const name of shown) {
    if (!queueColors.has(name)) {
      const used = new Set(queueColors.values());
      queueColors.set(name, COLORS.find((c) => !used.has(c)) ?? COLORS[0]);
    }
  }
  lines($("depth-chart"), shown.map((name) => ({
    name,
    color: queueColors.get(name),
    points: history.filter((h) => h.depth.has(name)).map((h) => [h.t, h.depth.get(name)]),
  })), at, SPAN_MS);
  // Each worker's rate over the last ten seconds, fastest first.
  const alive = new Set();
  const rates = workers.map((w) => {
    alive.add(w.session);
    const seen = recent.get(w.session) ?? [];
    seen.push([at, w.acked]);
    while (seen.length > 1 && at - seen[0][0] > RATE_WINDOW_MS) seen.shift();
    recent.set(w.session, seen);
    const [t0, a0] = seen[0];
    const r = at > t0 ? ((w.acked - a0) * 1000) / (at - t0) : 0;
    const name = w.name ? `${w.name} #${w.session}` : `#${w.session}`;
    return { name, value: Math.max(0, r), color: w.role === "browser" ? COLORS[1] : COLORS[0] };
  });
  for (const s of recent.keys()) if (!alive.has(s)) recent.delete(s);
  rates.sort((a, b) => b.value - a.value);
  bars($("workers-chart"), rates);
  window.taskhubCharts = { samples: history.length, queues: shown, workers: rates.length };
}

async function main() {
  if (!key) {
    $("notice").textContent = "This link has no token: open the dashboard link taskhub serve printed (it ends in #token=...).";
    return;
  }
  await init();
  monitor = new HubMonitor(hub, key);
  monitor.onUpdate((update) => {
    if (update.type === "stats") {
      draw(update.stats);
      return;
    }
    if (update.type === "answer") {
      waiting.get(update.req)?.(update.answer);
      waiting.delete(update.req);
      return;
    }
    if (update.state !== "connected") {
      // Answers to actions sent on a connection that is gone will not come.
      for (const resolve of waiting.values()) resolve({ type: "error", message: "the connection to the hub was lost" });
      waiting.clear();
    }
    $("state").textContent = update.state;
    $("state").className = `pill ${update.state}`;
    if (update.hub) $("state").title = update.hub;
    const text =
      update.state === "failed" && /authentication failed|credentials expired|token revoked/.test(update.message)
        ? refusal(update.message)
        : update.state === "retrying"
          ? `hub unreachable, retrying in ${Math.round(update.in_ms / 1000)} s`
          : "";
    $("notice").textContent = text;
  });
  monitor.start(1000);
  window.taskhubMonitor = monitor;
}

main().catch((err) => ($("notice").textContent = `Could not start: ${err.message || err}`));

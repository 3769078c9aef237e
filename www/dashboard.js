// The dashboard: a HubMonitor (Rust/wasm, the same handshake code as every client) polls the hub's
// stats every second; this page only draws them.
import init, { HubMonitor } from "./pkg/wasm_worker.js";
import { readLink, refusal } from "./link.js";

const $ = (id) => document.getElementById(id);
const { params, credential: key } = readLink();
const hub = params.get("hub") || `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/`;

let previous = null; // {at, acked, perSession: Map}

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
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
  $("rate").textContent = fmt(rate(stats.acked, previous?.acked));
  $("acked").textContent = stats.acked;
  $("native").textContent = stats.sessions.worker ?? 0;
  $("browser").textContent = stats.sessions.browser ?? 0;
  const queues = stats.queues.filter((q) => !q.name.endsWith(".dead"));
  rows($("queues").tBodies[0], queues, (q) => [
    cell(q.name), cell(q.depth, "num"), cell(q.in_flight, "num"), cell(q.dead, "num"), cell(q.consumers, "num"),
  ]);
  const perSession = new Map(stats.workers.map((w) => [w.session, w.acked]));
  rows($("workers").tBodies[0], stats.workers, (w) => [
    cell(w.name ? `${w.name} (#${w.session})` : `#${w.session}`),
    cell(w.role === "browser" ? "browser" : "native"),
    cell(w.acked, "num"),
    cell(w.in_flight, "num"),
    cell(fmt(rate(w.acked, previous?.perSession.get(w.session))), "num"),
  ]);
  previous = { at, acked: stats.acked, perSession };
  window.taskhubStats = stats;
}

async function main() {
  if (!key) {
    $("notice").textContent = "This link has no token: open the dashboard link taskhub serve printed (it ends in #token=...).";
    return;
  }
  await init();
  const monitor = new HubMonitor(hub, key);
  monitor.onUpdate((update) => {
    if (update.type === "stats") {
      draw(update.stats);
      return;
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

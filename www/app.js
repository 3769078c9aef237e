// The join page: read the link's fragment, start a BrowserWorker (Rust, from the same core as the
// native worker), and show what it does. The token travels in the fragment, which browsers never
// send to servers or in Referer headers, and leaves the address bar once read (link.js).
import init, { BrowserWorker } from "./pkg/wasm_worker.js";
import { readLink, refusal } from "./link.js";

const $ = (id) => document.getElementById(id);
const { params, credential: key } = readLink();
const queues = params.get("queue") || "tasks";
const cap = 16;
const workers = Math.max(1, Math.min(cap, parseInt(params.get("workers"), 10) || navigator.hardwareConcurrency || 2));
const hub = params.get("hub") || `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/`;
const wanted = params.get("bundle");
// `when=visible`: work only while this tab is visible and not on battery; `always` (the
// default): always, one task at a time while hidden or on battery.
const when = params.get("when") || "always";

const view = { done: 0, failed: 0, history: [], notice: "" };
// For tests and the curious: window.taskhub.status(), .notice(), .bundle.
window.taskhub = { status: () => ({ state: "starting" }), notice: () => view.notice, bundle: null };

function say(text) {
  view.notice = text;
  $("notice").textContent = text;
}

function plain(event) {
  switch (event.type) {
    case "failed":
      return /authentication failed|credentials expired|token revoked/.test(event.reason)
        ? refusal(event.reason)
        : `Stopped: ${event.reason}`;
    case "retrying": {
      const secs = Math.max(1, Math.round(event.in_ms / 1000));
      const why = /unreachable|refused|closed|1006/.test(event.reason) ? "hub unreachable" : event.reason;
      return `${why}, retrying in ${secs} s`;
    }
    case "error":
      return event.message;
    default:
      return "";
  }
}

function render(worker) {
  const s = worker.status();
  if (!s) return;
  const state = s.paused && s.state === "connected" ? "paused" : s.state;
  $("state").textContent = state;
  $("state").className = `pill ${state}`;
  $("detail").textContent = s.session ? `session ${s.session}` : "";
  $("done").textContent = s.done;
  $("failed").textContent = s.failed;
  $("cancelled").textContent = s.cancelled ?? 0;
  $("running").textContent = s.running;
  $("kinds").textContent = s.kinds.length ? s.kinds.join(", ") : "none";
  const now = performance.now();
  view.history.push([now, s.done]);
  while (view.history.length > 2 && now - view.history[0][0] > 5000) view.history.shift();
  const [t0, d0] = view.history[0];
  const rate = now > t0 ? ((s.done - d0) * 1000) / (now - t0) : 0;
  $("rate").textContent = rate >= 10 ? Math.round(rate) : rate.toFixed(1);
}

function fail(state, text) {
  say(text);
  $("state").textContent = state;
  $("state").className = "pill failed";
}

// Tell the worker whether this tab is visible and, where the browser says, whether it runs on
// battery: its policy (`when=`) decides how hard it works, and the dashboard shows it.
function watchConditions(worker) {
  const now = { visible: document.visibilityState === "visible", charging: undefined, battery: undefined };
  const tell = () => worker.setConditions(now.visible, now.charging, now.battery);
  document.addEventListener("visibilitychange", () => {
    now.visible = document.visibilityState === "visible";
    tell();
  });
  if (navigator.getBattery) {
    navigator.getBattery().then((b) => {
      const update = () => {
        now.charging = b.charging;
        now.battery = b.level;
        tell();
      };
      b.addEventListener("chargingchange", update);
      b.addEventListener("levelchange", update);
      update();
    }, () => {});
  }
  tell();
}

// Which worker bundle this tab runs: `bundle=NAME` in the link, else the hub's default.
async function chooseBundle() {
  const index = await (await fetch(new URL("./bundles.json", import.meta.url))).json();
  const name = wanted || index.default;
  const bundle = index.bundles.find((b) => b.name === name);
  if (!bundle) {
    const names = index.bundles.map((b) => b.name).join(", ") || "none";
    throw new Error(`this hub serves no worker bundle named "${name}" (it serves: ${names})`);
  }
  // Load it here once, so a broken bundle is reported now rather than as failing tasks, and so
  // the page can list what it really runs.
  const mod = await import(new URL(`./${bundle.module}`, import.meta.url).href);
  let kinds;
  if (bundle.type === "js") {
    kinds = Object.keys(mod).filter((k) => typeof mod[k] === "function").sort();
  } else {
    await mod.default();
    if (typeof mod.taskhubInstall === "function") mod.taskhubInstall();
    kinds = JSON.parse(mod.taskhubKinds()).map((k) => k.kind);
  }
  if (!kinds.length) throw new Error(`worker bundle "${name}" has no task handlers`);
  const compute = new URL("./compute.js", import.meta.url);
  compute.searchParams.set("type", bundle.type);
  compute.searchParams.set("module", bundle.module);
  return { name, kinds, compute: compute.href };
}

async function main() {
  $("queues").textContent = queues;
  $("workers").textContent = workers;
  if (!key) {
    fail("no token", "This link has no token. Open the link that `taskhub serve` printed (it ends in #token=...).");
    return;
  }
  await init();
  let bundle;
  try {
    bundle = await chooseBundle();
  } catch (err) {
    fail("no bundle", `Could not load the worker bundle: ${err.message || err}`);
    return;
  }
  $("bundle").textContent = bundle.name;
  $("bundle-kinds").textContent = bundle.kinds.join(", ");
  const worker = new BrowserWorker(hub, key, queues, workers, bundle.compute);
  try {
    worker.setPolicy(when);
  } catch (err) {
    fail("bad link", `This link cannot be used: ${err.message || err}`);
    return;
  }
  watchConditions(worker);
  worker.onEvent((event) => {
    if (event.type === "connected") say("");
    const text = plain(event);
    if (text) say(text);
    if (event.type === "stopped" || event.type === "failed") $("stop").disabled = true;
  });
  worker.start();
  $("stop").disabled = false;
  $("stop").onclick = async () => {
    $("stop").disabled = true;
    say("Stopping: finishing the tasks in hand and giving the rest back.");
    await worker.stop();
    say("Stopped. Reload the page to start again.");
    render(worker);
  };
  // Closing the tab: hand every leased task back right away (the hub would also notice the socket
  // closing, but this is faster and does not depend on it).
  addEventListener("pagehide", () => worker.abandon());
  setInterval(() => render(worker), 250);
  Object.assign(window.taskhub, { worker, status: () => worker.status(), bundle });
}

main().catch((err) => fail("unavailable", `Could not start: ${err.message || err}`));

// A dedicated Web Worker that runs task handlers off the page's thread. It loads one worker
// bundle, named in its own URL (`compute.js?type=wasm|js&module=PATH`, same origin only):
// - wasm: wasm-bindgen glue; `taskhubInstall()` (a user's bundle) replaces the built-in handlers,
//   then `runTask(kind, payload, id, attempt, session)` runs the same Rust code as the native worker.
// - js: an ES module whose named exports are handlers, `(payload, task) => result` (or a Promise).
// Jobs arrive as {token, kind, payload (JSON text), id, attempt, session}; the answer is
// {token, out}, `out` being {"ok": true, "result": ..[, "wait_ms": n]} or
// {"ok": false, "error": "..", "retry": bool} as JSON text.
const here = new URL(import.meta.url);
const type = here.searchParams.get("type") || "wasm";
const moduleUrl = new URL(here.searchParams.get("module") || "./pkg/wasm_worker.js", new URL("./", here));

let instances = 0;
let runner = load();

// Import the bundle. Each call after the first imports it under a fresh URL, so a wasm module gets
// a new instance: one whose handler panicked (a trap) is never used again.
async function load() {
  if (moduleUrl.origin !== here.origin) throw new Error(`refusing a bundle from another origin: ${moduleUrl.origin}`);
  const url = new URL(moduleUrl);
  if (instances++) url.searchParams.set("instance", String(instances));
  const mod = await import(url.href);
  if (type === "js") return jsRunner(mod);
  await mod.default();
  if (typeof mod.taskhubInstall === "function") mod.taskhubInstall();
  return (job) => {
    try {
      return mod.runTask(job.kind, job.payload, job.id, job.attempt, job.session);
    } catch (e) {
      const panic = typeof mod.taskhubTakePanic === "function" ? mod.taskhubTakePanic() : null;
      runner = load();
      return JSON.stringify({ ok: false, error: `handler panicked: ${panic || e.message || e}`, retry: true });
    }
  };
}

function jsRunner(mod) {
  const kinds = Object.keys(mod).filter((k) => typeof mod[k] === "function").sort();
  return async (job) => {
    if (job.kind == null) {
      return JSON.stringify({ ok: false, error: "task has no kind; give one with --kind", retry: false });
    }
    if (!kinds.includes(job.kind)) {
      const known = kinds.length ? kinds.join(", ") : "no kinds at all";
      return JSON.stringify({ ok: false, error: `unknown task kind ${JSON.stringify(job.kind)}; this worker knows ${known}`, retry: false });
    }
    let payload;
    try {
      payload = JSON.parse(job.payload);
    } catch (e) {
      return JSON.stringify({ ok: false, error: `payload is not JSON: ${e.message}`, retry: false });
    }
    try {
      const result = await mod[job.kind](payload, { id: job.id, kind: job.kind, attempt: job.attempt, session: job.session });
      return JSON.stringify({ ok: true, result: result === undefined ? null : result });
    } catch (e) {
      // A thrown Error fails the task with its message; `err.retry = false` dead-letters it at once.
      const error = e instanceof Error ? e.message : String(e);
      return JSON.stringify({ ok: false, error, retry: !(e && e.retry === false) });
    }
  };
}

self.onmessage = async (event) => {
  const job = event.data;
  let out;
  let run;
  try {
    run = await runner;
  } catch (e) {
    // The bundle could not be loaded (the hub was restarting, the network blipped): this task
    // fails and may be retried, and the next one loads the bundle afresh instead of failing
    // forever on the same rejected import.
    runner = load();
    out = JSON.stringify({ ok: false, error: `this tab could not load its handlers: ${e.message || e}`, retry: true });
  }
  if (run) {
    try {
      out = await run(job);
    } catch (e) {
      out = JSON.stringify({ ok: false, error: `this tab could not run the task: ${e.message || e}`, retry: true });
    }
  }
  const waitMs = JSON.parse(out).wait_ms;
  if (waitMs) {
    setTimeout(() => self.postMessage({ token: job.token, out }), waitMs);
  } else {
    self.postMessage({ token: job.token, out });
  }
};

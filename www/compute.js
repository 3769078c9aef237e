// A dedicated Web Worker that runs task handlers off the page's thread. It loads one worker
// bundle, named in its own URL (`compute.js?type=wasm|js&module=PATH`, same origin only):
// - wasm: wasm-bindgen glue; `taskhubInstall()` (a user's bundle) replaces the built-in handlers,
//   then `runTask(kind, payload, id, attempt, session, last_error, progress)` runs the same Rust
//   code as the native worker.
// - js: an ES module whose named exports are handlers, `(payload, task) => result` (or a Promise);
//   `task.progress(fraction, message)` reports how far it has got.
// A handler's progress reports go to the page as they happen, {progress: {token, fraction,
// message}}, not with the batch's results.
// Jobs arrive in batches, {jobs: [{token, kind, payload, id, attempt, session}, ...]}, `payload`
// being JSON text or, for a binary payload, a Uint8Array. They run one after another and their
// answers go back together, {results: [{token, out, bytes, ms} | {token, unstarted}, ...]}: `out` is
// {"ok": true, "result": ..[, "wait_ms": n]}, {"ok": true, "binary": true} (the result is
// `bytes`, a Uint8Array) or {"ok": false, "error": "..", "retry": bool} as JSON text, and `ms` the
// handler's own run time, from which the page sizes the next batches. One message each way per
// batch: with tiny tasks the messages, not the handlers, were the cost.
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
      return mod.runTask(job.kind, job.payload, job.id, job.attempt, job.session, job.last_error ?? undefined, reporter(job));
    } catch (e) {
      const panic = typeof mod.taskhubTakePanic === "function" ? mod.taskhubTakePanic() : null;
      runner = load();
      return failed(`handler panicked: ${panic || e.message || e}`, true);
    }
  };
}

// Where job's progress reports go: straight to the page, while the handler still runs.
function reporter(job) {
  return (fraction, message) => {
    self.postMessage({ progress: { token: job.token, fraction: Number(fraction), message: message ?? null } });
  };
}

// `retry_after_ms`: the handler's own wait before the retry (a thrown error's `retryAfterMs`).
function failed(error, retry, retry_after_ms) {
  return { out: JSON.stringify({ ok: false, error, retry, retry_after_ms }) };
}

function jsRunner(mod) {
  const kinds = Object.keys(mod).filter((k) => typeof mod[k] === "function").sort();
  return async (job) => {
    if (job.kind == null) {
      return failed("task has no kind; give one with --kind", false);
    }
    if (!kinds.includes(job.kind)) {
      const known = kinds.length ? kinds.join(", ") : "no kinds at all";
      return failed(`unknown task kind ${JSON.stringify(job.kind)}; this worker knows ${known}`, false);
    }
    // A binary payload is handed over as the Uint8Array it came as.
    let payload = job.payload;
    if (typeof payload === "string") {
      try {
        payload = JSON.parse(payload);
      } catch (e) {
        return failed(`payload is not JSON: ${e.message}`, false);
      }
    }
    try {
      const report = reporter(job);
      const progress = (fraction, message) => {
        const f = Number(fraction);
        if (Number.isNaN(f)) return;
        report(Math.min(1, Math.max(0, f)), message == null ? null : String(message).slice(0, 1024));
      };
      const info = { id: job.id, kind: job.kind, attempt: job.attempt, session: job.session, last_error: job.last_error ?? null, progress };
      const result = await mod[job.kind](payload, info);
      // Bytes back (a typed array or an ArrayBuffer) are a binary result. They are copied, so
      // the handler may go on using its own buffer after the copy is handed to the page.
      if (result instanceof ArrayBuffer) return { out: '{"ok":true,"binary":true}', bytes: new Uint8Array(result.slice(0)) };
      if (ArrayBuffer.isView(result)) {
        return { out: '{"ok":true,"binary":true}', bytes: new Uint8Array(result.buffer.slice(result.byteOffset, result.byteOffset + result.byteLength)) };
      }
      return { out: JSON.stringify({ ok: true, result: result === undefined ? null : result }) };
    } catch (e) {
      // A thrown Error fails the task with its message; `err.retry = false` dead-letters it at
      // once, `err.retryAfterMs = n` retries it after n ms instead of after its backoff.
      const error = e instanceof Error ? e.message : String(e);
      const after = e && Number.isFinite(e.retryAfterMs) && e.retryAfterMs >= 0 ? Math.round(e.retryAfterMs) : undefined;
      return failed(error, !(e && e.retry === false), after);
    }
  };
}

// The runner, or why there is none (the bundle could not be loaded: the hub was restarting, the
// network blipped). Then the task fails and may be retried, and the next one loads the bundle
// afresh instead of failing forever on the same rejected import.
async function currentRunner() {
  try {
    return await runner;
  } catch (e) {
    runner = load();
    const why = `this tab could not load its handlers: ${e.message || e}`;
    return () => failed(why, true);
  }
}

// A batch is sized for about 2 ms of work. One that has run this long holds a task slower than
// its size assumed: the jobs not started yet go back unstarted ({token, unstarted: true}), so the
// page can hand them to the hub for idle workers instead of queueing them behind a slow one.
const CUT_BATCH_MS = 10;

self.onmessage = async (event) => {
  const results = [];
  const transfer = [];
  let loaded = runner;
  let run = await currentRunner();
  const jobs = event.data.jobs || [];
  const batchStart = performance.now();
  for (const [i, job] of jobs.entries()) {
    if (i > 0 && performance.now() - batchStart > CUT_BATCH_MS) {
      for (const rest of jobs.slice(i)) results.push({ token: rest.token, unstarted: true });
      break;
    }
    if (runner !== loaded) {
      // The last job trapped its wasm instance: the rest run on a fresh one.
      loaded = runner;
      run = await currentRunner();
    }
    const started = performance.now();
    let out;
    try {
      out = run(job);
      if (out instanceof Promise) out = await out;
    } catch (e) {
      out = failed(`this tab could not run the task: ${e.message || e}`, true);
    }
    const answer = { token: job.token, out: out.out, ms: performance.now() - started };
    // A binary result's buffer is handed to the page, not copied.
    const moved = [];
    if (out.bytes) {
      answer.bytes = out.bytes;
      moved.push(out.bytes.buffer);
    }
    if (out.wait_ms) {
      // A handler that waits (the `sleep` kind) reports on its own when its time is up, the
      // wait counted in its run time.
      setTimeout(() => {
        answer.ms = performance.now() - started;
        self.postMessage({ results: [answer] }, moved);
      }, out.wait_ms);
    } else {
      results.push(answer);
      transfer.push(...moved);
    }
  }
  if (results.length) self.postMessage({ results }, transfer);
};

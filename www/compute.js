// A dedicated Web Worker that runs task handlers off the page's thread. It loads one worker
// bundle, named in its own URL (`compute.js?type=wasm|js&module=PATH`, same origin only):
// - wasm: wasm-bindgen glue; `taskhubInstall()` (a user's bundle) replaces the built-in handlers,
//   then `runTask(kind, payload, id, attempt, session)` runs the same Rust code as the native worker.
// - js: an ES module whose named exports are handlers, `(payload, task) => result` (or a Promise).
// Jobs arrive as {token, kind, payload, id, attempt, session}, `payload` being JSON text or, for
// a binary payload, a Uint8Array; the answer is {token, out, bytes}, `out` being
// {"ok": true, "result": ..[, "wait_ms": n]}, {"ok": true, "binary": true} (the result is
// `bytes`, a Uint8Array) or {"ok": false, "error": "..", "retry": bool} as JSON text.
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
      return failed(`handler panicked: ${panic || e.message || e}`, true);
    }
  };
}

function failed(error, retry) {
  return { out: JSON.stringify({ ok: false, error, retry }) };
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
      const result = await mod[job.kind](payload, { id: job.id, kind: job.kind, attempt: job.attempt, session: job.session });
      // Bytes back (a typed array or an ArrayBuffer) are a binary result. They are copied, so
      // the handler may go on using its own buffer after the copy is handed to the page.
      if (result instanceof ArrayBuffer) return { out: '{"ok":true,"binary":true}', bytes: new Uint8Array(result.slice(0)) };
      if (ArrayBuffer.isView(result)) {
        return { out: '{"ok":true,"binary":true}', bytes: new Uint8Array(result.buffer.slice(result.byteOffset, result.byteOffset + result.byteLength)) };
      }
      return { out: JSON.stringify({ ok: true, result: result === undefined ? null : result }) };
    } catch (e) {
      // A thrown Error fails the task with its message; `err.retry = false` dead-letters it at once.
      const error = e instanceof Error ? e.message : String(e);
      return failed(error, !(e && e.retry === false));
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
    out = failed(`this tab could not load its handlers: ${e.message || e}`, true);
  }
  if (run) {
    try {
      out = await run(job);
    } catch (e) {
      out = failed(`this tab could not run the task: ${e.message || e}`, true);
    }
  }
  const answer = { token: job.token, out: out.out };
  // A binary result's buffer is handed to the page, not copied.
  const transfer = [];
  if (out.bytes) {
    answer.bytes = out.bytes;
    transfer.push(out.bytes.buffer);
  }
  const waitMs = JSON.parse(out.out).wait_ms;
  if (waitMs) {
    setTimeout(() => self.postMessage(answer, transfer), waitMs);
  } else {
    self.postMessage(answer, transfer);
  }
};

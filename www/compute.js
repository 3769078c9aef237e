// A dedicated Web Worker that runs task handlers (the same Rust functions the native worker runs),
// so heavy tasks never block the page. Jobs arrive as {token, kind, payload, id, attempt, session};
// the answer is {token, out} where `out` is runTask's JSON text, passed through untouched.
import init, { runTask } from "./pkg/wasm_worker.js";

const ready = init();

self.onmessage = async (event) => {
  await ready;
  const { token, kind, payload, id, attempt, session } = event.data;
  const out = runTask(kind, payload, id, attempt, session);
  const waitMs = JSON.parse(out).wait_ms;
  if (waitMs) {
    setTimeout(() => self.postMessage({ token, out }), waitMs);
  } else {
    self.postMessage({ token, out });
  }
};

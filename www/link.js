// What a page's link carries after `#`: its token (or, from older links, a key) and options.
// The credential is taken out of the address bar and the history as soon as it is read, and kept
// for this tab only (sessionStorage), so a reload still works but the history never shows it.

export function readLink() {
  const params = new URLSearchParams(location.hash.slice(1));
  const slot = `taskhub-credential:${location.pathname}`;
  const given = params.get("token") || params.get("key");
  if (given) {
    sessionStorage.setItem(slot, given);
    params.delete("token");
    params.delete("key");
    const rest = params.toString();
    history.replaceState(null, "", `${location.pathname}${location.search}${rest ? `#${rest}` : ""}`);
  }
  return { params, credential: given || sessionStorage.getItem(slot) || "" };
}

// A refusal in words: the hub names why (wrong credentials, expired, revoked).
export function refusal(reason) {
  if (/expired/.test(reason)) return "This link has expired. Ask for a fresh one.";
  if (/revoked/.test(reason)) return "This link was revoked. Ask for a fresh one.";
  return "The hub refused this link's token. Ask for a fresh link.";
}

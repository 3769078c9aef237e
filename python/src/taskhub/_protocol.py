"""The wire protocol (docs/protocol.md), sans I/O: the handshake's proofs, credentials from a key
or a token, and frames to and from messages. The blocking client, the asyncio client and the
worker all use it."""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import hmac
import json
import os
import struct
from dataclasses import dataclass
from typing import Any, Dict, List, NamedTuple, Optional, Tuple, Union

PROTOCOL_VERSION = 1
TOKEN_PREFIX = "th1."
DEFAULT_KEY_ID = "default"

Frame = Union[str, bytes]


@dataclass(frozen=True)
class Credentials:
    """A key id and the secret the handshake proves knowledge of."""

    key_id: str
    secret: bytes

    def __repr__(self) -> str:  # never show the secret
        return f"Credentials(key_id={self.key_id!r}, secret=<redacted>)"


def hub_urls(urls: str) -> List[str]:
    """The hub URLs in `urls`: one, or several separated by commas, tried in order."""
    return [u.strip() for u in urls.split(",") if u.strip()]


def _unbase64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def credentials(key: Optional[str] = None, token: Optional[str] = None,
                key_id: Optional[str] = None, key_file: Optional[str] = None) -> Credentials:
    """What to authenticate with: a token (`th1.CLAIMS.SIGNATURE`: its key id is the token up to
    its last dot, its secret the decoded signature), or a key (given, or read from `key_file`)
    under `key_id`.

    With none given, the environment the other taskhub tools read: `TASKHUB_TOKEN`,
    `TASKHUB_KEY`, `TASKHUB_KEY_FILE` (and `TASKHUB_KEY_ID`)."""
    if not (key or token or key_file):
        token = os.environ.get("TASKHUB_TOKEN")
        key = os.environ.get("TASKHUB_KEY")
        key_file = os.environ.get("TASKHUB_KEY_FILE")
    key_id = key_id or os.environ.get("TASKHUB_KEY_ID") or DEFAULT_KEY_ID
    if key_file and not key and not token:
        key = read_key_file(key_file)
    if token:
        token = token.strip()
        head, _, signature = token.rpartition(".")
        if not head.startswith(TOKEN_PREFIX) or not signature:
            raise ValueError("not a taskhub token: expected th1.CLAIMS.SIGNATURE")
        try:
            secret = _unbase64url(signature)
        except ValueError as e:
            raise ValueError(f"not a taskhub token: {e}") from None
        if len(secret) != 32:
            raise ValueError("not a taskhub token: its signature is not 32 bytes")
        return Credentials(head, secret)
    if not key:
        raise ValueError("no key: pass key=..., key_file=... or token=... (or set TASKHUB_KEY, "
                         "TASKHUB_KEY_FILE or TASKHUB_TOKEN)")
    return Credentials(key_id, key.encode())


def read_key_file(path: str) -> str:
    """The key in the file `path`: its text without surrounding whitespace."""
    try:
        with open(path, encoding="utf-8") as f:
            key = f.read().strip()
    except OSError as e:
        raise ValueError(f"cannot read the key file {path}: {e.strerror}") from None
    if not key:
        raise ValueError(f"the key file {path} is empty")
    return key


def _mac(secret: bytes, label: str, key_id: str, nonce: str, client_nonce: str) -> str:
    msg = "\n".join([label, key_id, nonce, client_nonce]).encode()
    return hmac.new(secret, msg, hashlib.sha256).hexdigest()


class Handshake:
    """The client side of the mutual challenge-response (docs/protocol.md, "Handshake")."""

    def __init__(self, creds: Credentials, role: str = "producer", name: Optional[str] = None,
                 batch: bool = False):
        self.creds = creds
        self.role = role
        self.name = name
        self.batch = batch
        self.client_nonce = os.urandom(32).hex()
        self.nonce = ""

    def answer(self, challenge: Dict[str, Any]) -> Dict[str, Any]:
        """The `auth` message answering the hub's `challenge`."""
        if challenge.get("type") != "challenge":
            raise ProtocolError(f"expected a challenge, got {challenge.get('type')!r}")
        if challenge.get("version") != PROTOCOL_VERSION:
            raise ProtocolError(f"the hub speaks protocol version {challenge.get('version')}")
        self.nonce = str(challenge["nonce"])
        c = self.creds
        auth: Dict[str, Any] = {
            "type": "auth",
            "key_id": c.key_id,
            "client_nonce": self.client_nonce,
            "proof": _mac(c.secret, "taskhub-client", c.key_id, self.nonce, self.client_nonce),
            "role": self.role,
        }
        if self.name:
            auth["name"] = self.name
        if self.batch:
            auth["batch"] = True
        return auth

    def finish(self, welcome: Dict[str, Any]) -> Dict[str, Any]:
        """Check the hub's answer: a `welcome` whose proof shows it holds the key."""
        if welcome.get("type") == "error":
            raise AuthError(welcome.get("message", "refused"), welcome.get("reason"))
        if welcome.get("type") != "welcome":
            raise ProtocolError(f"expected welcome, got {welcome.get('type')!r}")
        c = self.creds
        expected = _mac(c.secret, "taskhub-hub", c.key_id, self.nonce, self.client_nonce)
        if not hmac.compare_digest(expected, str(welcome.get("proof", ""))):
            raise AuthError("the hub could not prove it holds the key (wrong key, or not the "
                            "hub you meant)", "impostor")
        return welcome


class TaskhubError(Exception):
    """Base of every error this package raises."""


class ProtocolError(TaskhubError):
    """The hub sent something the protocol does not allow."""


class AuthError(TaskhubError):
    """The hub refused the credentials; `reason` is `credentials`, `expired`, `revoked` or
    `impostor` (the hub could not prove it holds the key)."""

    def __init__(self, message: str, reason: Optional[str] = None):
        super().__init__(f"authentication failed: {message}")
        self.reason = reason


class HubError(TaskhubError):
    """The hub answered a request with an error (`code` is from docs/protocol.md, "Errors")."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{message} ({code})")
        self.code = code
        self.message = message


#: Longest `message` a progress report may carry, in bytes (the hub's limit).
MAX_PROGRESS_MESSAGE_BYTES = 1024


def cut_utf8(text: str, limit: int) -> str:
    """`text` cut to at most `limit` bytes of UTF-8, at a character boundary."""
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[:limit].decode(errors="ignore")


class TaskFailed(TaskhubError):
    """A submitted task ended in failure (its worker failed it, it ran out of attempts, or it
    was cancelled: then `cancelled` is true)."""

    def __init__(self, task: int, error: str, cancelled: bool = False):
        what = "was cancelled" if cancelled else f"failed: {error}"
        super().__init__(f"task {task} {what}")
        self.task = task
        self.error = error
        self.cancelled = cancelled


class ConnectionClosed(TaskhubError):
    """The connection to the hub is gone; `code` is the WebSocket close code, if one came."""

    def __init__(self, message: str, code: Optional[int] = None):
        super().__init__(message)
        self.code = code


def encode(msg: Dict[str, Any], place: Optional[str] = None) -> Frame:
    """A message as a frame: JSON text, or, when `place` names a field holding bytes, a binary
    frame (4-byte big-endian header length, the JSON header with `binary`, the bytes)."""
    if place is None:
        return json.dumps(msg, separators=(",", ":"))
    data = msg[place]
    header = dict(msg)
    header[place] = None
    header["binary"] = place
    head = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack(">I", len(head)) + head + bytes(data)


def decode(frame: Frame) -> List[Dict[str, Any]]:
    """The messages in a frame from the hub (a text frame may hold several, one per line)."""
    if isinstance(frame, str):
        return [json.loads(line) for line in frame.split("\n") if line.strip()]
    if len(frame) < 4:
        raise ProtocolError("a binary frame shorter than its header length")
    (n,) = struct.unpack(">I", frame[:4])
    if 4 + n > len(frame):
        raise ProtocolError("a binary frame's header runs past its end")
    msg = json.loads(frame[4:4 + n])
    path = msg.pop("binary", None)
    if not isinstance(path, str):
        raise ProtocolError("a binary frame's header names no place for its bytes")
    *parents, last = path.split(".")
    node = msg
    for p in parents:
        node = node[p]
    node[last] = frame[4 + n:]
    return [msg]


def decode_one(frame: Frame) -> Dict[str, Any]:
    """The one message a handshake frame holds."""
    msgs = decode(frame)
    if len(msgs) != 1:
        raise ProtocolError("expected one message in the handshake")
    return msgs[0]


def matches(pattern: str, topic: str) -> bool:
    """Whether `topic` matches `pattern`: `*` is one token, a final `>` one or more."""
    pat, top = pattern.split("."), topic.split(".")
    for i, t in enumerate(pat):
        if t == ">":
            return len(top) > i
        if i >= len(top) or (t != "*" and t != top[i]):
            return False
    return len(pat) == len(top)


def payload_place(payload: Any, field: str) -> Tuple[Any, Optional[str]]:
    """`(value, place)`: bytes travel in a binary frame at `field`."""
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return bytes(payload), field
    return payload, None


#: Most text a joined frame holds (the hub's own limit for the frames it joins).
JOINED_FRAME_BYTES = 64 << 10


def join(frames: List[Frame], limit: int = JOINED_FRAME_BYTES) -> List[Frame]:
    """Frames to send for `frames`, in order: consecutive text frames joined into one (one
    message per line) while it stays within `limit` bytes; binary frames go alone."""
    out: List[Frame] = []
    run: List[str] = []
    size = 0
    for f in frames:
        if isinstance(f, str) and (not run or size + 1 + len(f) <= limit):
            run.append(f)
            size += len(f) + (1 if len(run) > 1 else 0)
            continue
        if run:
            out.append("\n".join(run))
            run, size = [], 0
        if isinstance(f, str):
            run, size = [f], len(f)
        else:
            out.append(f)
    if run:
        out.append("\n".join(run))
    return out


# -- requests and answers shared by the blocking and the asyncio client ------------------------

#: The longest one `get` request asks the hub to wait; a longer wait asks again.
GET_WAIT_MS = 30_000


class Message(NamedTuple):
    """A pub/sub message."""

    topic: str
    payload: Any


When = Union[float, _dt.datetime]
"""A time: a `datetime` (naive ones are local time) or Unix seconds."""


def schedule_fields(priority: int = 0, delay: Optional[float] = None,
                    not_before: Optional[When] = None, backoff: Optional[float] = None,
                    backoff_max: Optional[float] = None, replicas: int = 0,
                    quorum: Optional[int] = None,
                    max_replicas: Optional[int] = None) -> Dict[str, Any]:
    """A put's scheduling fields: `priority` 0 to 9 (higher first), ready `delay` seconds after
    the hub stores it or at `not_before`, not before; a retry waits `backoff` seconds, doubling
    per attempt up to `backoff_max` (default: the hub's); run on `replicas` different workers,
    accepted when `quorum` return the same bytes, up to `max_replicas` runs when they
    disagree."""
    if delay is not None and not_before is not None:
        raise ValueError("give delay or not_before, not both")
    fields: Dict[str, Any] = {}
    if priority:
        fields["priority"] = priority
    if delay is not None:
        fields["delay_ms"] = max(0, round(delay * 1000))
    if not_before is not None:
        unix = not_before.timestamp() if isinstance(not_before, _dt.datetime) else not_before
        fields["not_before"] = max(0, round(unix * 1000))
    if backoff is not None:
        fields["backoff_ms"] = max(0, round(backoff * 1000))
    if backoff_max is not None:
        fields["backoff_max_ms"] = max(0, round(backoff_max * 1000))
    if replicas:
        fields["replicas"] = replicas
    if quorum is not None:
        fields["quorum"] = quorum
    if max_replicas is not None:
        fields["max_replicas"] = max_replicas
    return fields


def put_request(queue: str, payload: Any, kind: Optional[str] = None,
                reply_to: Optional[str] = None, max_attempts: Optional[int] = None,
                dedup_id: Optional[str] = None,
                schedule: Optional[Dict[str, Any]] = None) -> Tuple[Dict[str, Any], Optional[str]]:
    """A `put` and the place of its bytes, if the payload is bytes. `schedule` is what
    `schedule_fields` made."""
    value, place = payload_place(payload, "payload")
    msg: Dict[str, Any] = {"type": "put", "queue": queue, "payload": value}
    for field, v in (("kind", kind), ("reply_to", reply_to), ("max_attempts", max_attempts),
                     ("dedup_id", dedup_id)):
        if v is not None:
            msg[field] = v
    if schedule:
        msg.update(schedule)
    return msg, place


def get_request(queue: str, timeout: Optional[float]) -> Dict[str, Any]:
    """A `get` waiting `timeout` seconds (`None`: the longest one request may wait)."""
    ms = GET_WAIT_MS if timeout is None else max(0, int(timeout * 1000))
    return {"type": "get", "queue": queue, "timeout_ms": ms}


def checked(answer: Dict[str, Any]) -> Dict[str, Any]:
    """The answer, or `HubError` if it is an `error`."""
    if answer.get("type") == "error":
        raise HubError(answer.get("code", "?"), answer.get("message", ""))
    return answer


def results(outcomes: List[Dict[str, Any]]) -> List[Any]:
    """The results of `submit`'s outcomes, in order; `TaskFailed` for the first that failed."""
    out = []
    for o in outcomes:
        if not o.get("ok"):
            raise TaskFailed(o["id"], o.get("error", ""), bool(o.get("cancelled")))
        out.append(o.get("result"))
    return out


def stats_of(answer: Dict[str, Any]) -> Dict[str, Any]:
    """A `stats` answer without its envelope."""
    return {k: v for k, v in answer.items() if k not in ("type", "req")}


def closed_message(code: Optional[int], reason: str) -> "ConnectionClosed":
    """The error for a connection the hub closed (`code` None: lost without a close frame)."""
    if code is None:
        return ConnectionClosed("the connection to the hub was lost")
    return ConnectionClosed(f"the hub closed the connection ({code} {reason})", code)

"""A taskhub client written from docs/protocol.md alone, with Python's standard library.

It proves the document is enough to interoperate: the Rust test `python.rs` runs it against a real
hub. Usage: client.py HOST PORT KEY [CA_FILE] (with a CA file it speaks wss://)
"""

import base64
import hashlib
import hmac
import json
import os
import socket
import ssl
import struct
import sys


class WebSocket:
    """Just enough RFC 6455: masked sends, unmasked receives, pong on ping; text frames for JSON
    messages, binary frames for messages carrying bytes (docs/protocol.md, "Binary frames")."""

    def __init__(self, host, port, cafile=None):
        self.sock = socket.create_connection((host, port), timeout=10)
        if cafile:
            # wss:// (docs/protocol.md, "TLS"): the hub's certificate, checked against its CA.
            context = ssl.create_default_context(cafile=cafile)
            self.sock = context.wrap_socket(self.sock, server_hostname=host)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)
        assert head.startswith(b"HTTP/1.1 101"), head

    def _recv_exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
        return buf

    def _send_frame(self, opcode, data):
        header = bytes([0x80 | opcode])
        n = len(data)
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 65536:
            header += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", n)
        mask = os.urandom(4)
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def send(self, obj):
        self._send_frame(0x1, json.dumps(obj).encode())

    def send_many(self, objs):
        """Several messages in one text frame, one per line."""
        self._send_frame(0x1, "\n".join(json.dumps(o) for o in objs).encode())

    def _recv_raw(self):
        """The next data or close frame as (opcode, payload); pings are answered on the way."""
        while True:
            b0, b1 = self._recv_exact(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._recv_exact(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._recv_exact(8))[0]
            data = self._recv_exact(n)
            opcode = b0 & 0x0F
            if opcode == 0x9:
                self._send_frame(0xA, data)
                continue
            return opcode, data

    def recv_frame(self):
        """The messages of the next text frame (several, for a session that asked for batch)."""
        opcode, data = self._recv_raw()
        assert opcode == 0x1, opcode
        text, messages, decoder, at = data.decode(), [], json.JSONDecoder(), 0
        while at < len(text):
            while text[at].isspace():
                at += 1
            msg, at = decoder.raw_decode(text, at)
            messages.append(msg)
        return messages

    def send_binary(self, header, data):
        """A message whose bytes go where header["binary"] says: a 4-byte big-endian header
        length, the JSON header, then the bytes."""
        head = json.dumps(header).encode()
        self.send_raw_binary(struct.pack("!I", len(head)) + head + data)

    def send_raw_binary(self, frame):
        self._send_frame(0x2, frame)

    def recv(self):
        """The next JSON message, or None when the hub closes."""
        while True:
            opcode, data = self._recv_raw()
            if opcode == 0x1:
                return json.loads(data)
            if opcode == 0x2:
                (h,) = struct.unpack("!I", data[:4])
                msg = json.loads(data[4 : 4 + h])
                *parents, last = msg["binary"].split(".")
                spot = msg
                for field in parents:
                    spot = spot[field]
                assert spot.get(last) is None, f"the header holds {spot.get(last)!r} at {last}"
                spot[last] = data[4 + h :]
                return msg
            if opcode == 0x8:
                # "Closing": the status code is the first two bytes, then a reason.
                self.close_code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None
                return None


def authenticate(ws, key, key_id="default", role="worker", batch=False):
    challenge = ws.recv()
    assert challenge["type"] == "challenge" and challenge["version"] == 1, challenge
    nonce = challenge["nonce"]
    client_nonce = os.urandom(32).hex()
    proof = hmac.new(
        key, "\n".join(["taskhub-client", key_id, nonce, client_nonce]).encode(), hashlib.sha256
    ).hexdigest()
    auth = {"type": "auth", "key_id": key_id, "client_nonce": client_nonce, "proof": proof, "role": role}
    if batch:
        auth["batch"] = True
    ws.send(auth)
    welcome = ws.recv()
    if welcome is None or welcome["type"] != "welcome":
        return welcome
    expected = hmac.new(
        key, "\n".join(["taskhub-hub", key_id, nonce, client_nonce]).encode(), hashlib.sha256
    ).hexdigest()
    assert hmac.compare_digest(expected, welcome["proof"]), "hub failed to prove the key"
    return welcome


def unbase64url(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def token_session(host, port, token, cafile):
    """A consume-only token for `tasks` (docs/protocol.md, "Tokens" and "Rights"): the key id is the
    token up to its last dot, the key the decoded signature."""
    key_id, signature = token.rsplit(".", 1)
    claims = json.loads(unbase64url(key_id[len("th1."):]))
    assert claims["rights"] == {"consume": ["tasks"]}, claims
    ws = WebSocket(host, port, cafile)
    welcome = authenticate(ws, unbase64url(signature), key_id=key_id)
    assert welcome["type"] == "welcome", welcome
    ws.send({"type": "stats", "req": 1})
    refused = ws.recv()
    assert refused["code"] == "forbidden" and refused["req"] == 1, refused
    ws.send({"type": "consume", "req": 2, "queues": ["tasks"], "prefetch": 1})
    assert ws.recv() == {"type": "ok", "req": 2}


def main():
    host, port, key = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
    cafile = sys.argv[4] if len(sys.argv) > 4 else None

    refused_ws = WebSocket(host, port, cafile)
    refused = authenticate(refused_ws, b"not-the-key")
    assert refused["type"] == "error" and refused["code"] == "auth_failed", refused
    # "closed (1008)": the error is the last message, then a Close frame with that code.
    assert refused_ws.recv() is None and refused_ws.close_code == 1008, refused_ws.close_code

    producer = WebSocket(host, port, cafile)
    welcome = authenticate(producer, key, role="producer")
    ids = []
    for req, n in enumerate([3411, 1605], start=1):
        producer.send({"type": "put", "req": req, "queue": "py", "payload": n, "kind": "square",
                       "reply_to": welcome["inbox"]})
        answer = producer.recv()
        assert answer["type"] == "queued" and answer["req"] == req, answer
        ids.append(answer["task"])

    worker = WebSocket(host, port, cafile)
    authenticate(worker, key)
    worker.send({"type": "consume", "req": 1, "queues": ["py"], "prefetch": 2})
    assert worker.recv() == {"type": "ok", "req": 1}
    delivered = [worker.recv(), worker.recv()]
    assert [m["type"] for m in delivered] == ["deliver", "deliver"], delivered
    for req, msg in zip((2, 3), delivered):
        task = msg["task"]
        n = task["payload"]
        worker.send({"type": "ack", "req": req, "task": task["id"], "result": f"{n} * {n} = {n * n}"})
    assert [worker.recv(), worker.recv()] == [{"type": "ok", "req": 2}, {"type": "ok", "req": 3}]

    replies = {}
    while len(replies) < 2:
        msg = producer.recv()
        assert msg["type"] == "reply", msg
        replies[msg["id"]] = msg["result"]
    print(replies[ids[0]])
    print(replies[ids[1]])

    producer.send({"type": "stats", "req": 9})
    stats = producer.recv()
    assert stats["sessions"]["worker"] >= 1, stats
    producer.send({"type": "get", "req": 10, "queue": "py", "timeout_ms": 0})
    assert producer.recv() == {"type": "empty", "req": 10, "queue": "py"}

    # delete_queue drops the ready tasks and the unused queue; a second delete finds nothing.
    for req in (11, 12):
        producer.send({"type": "put", "req": req, "queue": "py-old", "payload": req})
        assert producer.recv()["type"] == "queued"
    producer.send({"type": "delete_queue", "req": 13, "queue": "py-old"})
    assert producer.recv() == {"type": "deleted", "req": 13, "queue": "py-old", "tasks": 2,
                               "removed": True}
    producer.send({"type": "delete_queue", "req": 14, "queue": "py-old"})
    gone = producer.recv()
    assert gone["type"] == "error" and gone["code"] == "unknown_queue" and gone["req"] == 14, gone

    binary_frames(host, port, key, cafile)
    several_per_frame(host, port, key, cafile)
    if os.environ.get("TASKHUB_TOKEN"):
        token_session(host, port, os.environ["TASKHUB_TOKEN"], cafile)

    # A frame over max_message_bytes: too_large, then Close 1009.
    limit = welcome["limits"]["max_message_bytes"]
    try:
        producer.send({"type": "put", "req": 15, "queue": "py", "payload": "x" * limit})
    except (OSError, ssl.SSLError):
        # The hub answers and closes before the whole frame is in; over TLS the rest of the
        # send can fail. The answer is still there to read.
        pass
    too_large = producer.recv()
    assert too_large["type"] == "error" and too_large["code"] == "too_large", too_large
    assert producer.recv() is None and producer.close_code == 1009, producer.close_code


def binary_frames(host, port, key, cafile):
    """Bytes go through as bytes: a binary put, its delivery, a binary ack, the reply to the
    producer's inbox, and an outcome kept on a results queue; bad binary frames are named."""
    producer = WebSocket(host, port, cafile)
    welcome = authenticate(producer, key, role="producer")
    image = bytes(range(256)) * 3
    producer.send_binary({"type": "put", "req": 1, "queue": "py-bin", "kind": "flip",
                          "reply_to": welcome["inbox"], "binary": "payload"}, image)
    first = producer.recv()
    assert first["type"] == "queued" and first["req"] == 1, first
    producer.send_binary({"type": "put", "req": 2, "queue": "py-bin", "kind": "flip",
                          "reply_to": "py-bin-results", "payload": None, "binary": "payload"}, b"")
    second = producer.recv()
    assert second["type"] == "queued", second

    worker = WebSocket(host, port, cafile)
    authenticate(worker, key)
    worker.send({"type": "consume", "req": 1, "queues": ["py-bin"], "prefetch": 2})
    assert worker.recv() == {"type": "ok", "req": 1}
    delivered = [worker.recv(), worker.recv()]
    for req, expected, msg in zip((2, 3), (image, b""), delivered):
        assert msg["type"] == "deliver" and msg["binary"] == "task.payload", msg
        task = msg["task"]
        assert task["payload"] == expected and task["kind"] == "flip", task
        worker.send_binary({"type": "ack", "req": req, "task": task["id"], "binary": "result"},
                           task["payload"][::-1] + b"!")
    assert [worker.recv(), worker.recv()] == [{"type": "ok", "req": 2}, {"type": "ok", "req": 3}]

    reply = producer.recv()
    assert reply["type"] == "reply" and reply["id"] == first["task"], reply
    assert reply["ok"] is True and reply["result"] == image[::-1] + b"!", reply["binary"]
    producer.send({"type": "get", "req": 3, "queue": "py-bin-results", "timeout_ms": 5000})
    kept = producer.recv()
    assert kept["type"] == "task" and kept["binary"] == "task.payload.result", kept
    assert kept["task"]["payload"]["id"] == second["task"] and kept["task"]["payload"]["ok"], kept
    assert kept["task"]["payload"]["result"] == b"!", kept

    # Bad binary frames get an error naming the problem, and the session stays open.
    def refused(header, code, says, data=b"x"):
        producer.send_binary(header, data)
        err = producer.recv()
        assert err["type"] == "error" and err["code"] == code and says in err["message"], err
        return err

    err = refused({"type": "get", "req": 4, "queue": "q", "binary": "payload"}, "bad_request",
                  "put, publish or ack")
    assert err["req"] == 4, err
    refused({"type": "put", "req": 5, "queue": "q"}, "bad_request", '"binary": "payload"')
    refused({"type": "ack", "req": 6, "task": 1, "binary": "payload"}, "bad_request", "`result`")
    refused({"type": "put", "req": 7, "queue": "q", "payload": 1, "binary": "payload"},
            "bad_request", "null")
    producer.send_raw_binary(b"\x00\x00\x01\x00{}")
    err = producer.recv()
    assert err["type"] == "error" and err["code"] == "bad_frame", err
    producer.send({"type": "ping", "req": 8})
    assert producer.recv() == {"type": "ok", "req": 8}


def several_per_frame(host, port, key, cafile):
    """Several requests in one frame are each answered, in order, a bad one on its own; a
    session that asked for batch gets several answers per frame."""
    ws = WebSocket(host, port, cafile)
    authenticate(ws, key, role="producer")
    ws.send_many([{"type": "ping", "req": 1}, {"type": "nope", "req": 2},
                  {"type": "put", "req": 3, "queue": "py-many", "payload": 1}])
    answers = [ws.recv(), ws.recv(), ws.recv()]
    assert answers[0] == {"type": "ok", "req": 1}, answers
    assert answers[1]["code"] == "unknown_type" and answers[1]["req"] == 2, answers
    assert answers[2]["type"] == "queued" and answers[2]["req"] == 3, answers
    # Unreadable JSON ends the frame: the ping after it is not read.
    ws._send_frame(0x1, b'{"type":"ping","req":4}\n{"type":"ping","req":5,\n{"type":"ping","req":6}')
    assert ws.recv() == {"type": "ok", "req": 4}
    cut = ws.recv()
    assert cut["code"] == "bad_frame" and "message 2 of this frame" in cut["message"], cut
    ws.send({"type": "ping", "req": 7})
    assert ws.recv() == {"type": "ok", "req": 7}

    batched = WebSocket(host, port, cafile)
    authenticate(batched, key, role="producer", batch=True)
    batched.send_many([{"type": "ping", "req": n} for n in range(100)])
    got, frames = [], 0
    while len(got) < 100:
        got += batched.recv_frame()
        frames += 1
    assert got == [{"type": "ok", "req": n} for n in range(100)], got
    assert frames < 100, "the hub joined no answers"


if __name__ == "__main__":
    main()

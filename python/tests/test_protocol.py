"""The sans-I/O protocol layer: proofs as docs/protocol.md computes them, tokens, frames."""

import hashlib
import hmac
import json
import struct

import pytest

from taskhub import _protocol as p


def test_the_proofs_are_the_documented_hmacs():
    hs = p.Handshake(p.credentials(key="s3cret"), role="worker")
    auth = hs.answer({"type": "challenge", "version": 1, "nonce": "ab" * 32})
    msg = "\n".join(["taskhub-client", "default", "ab" * 32, auth["client_nonce"]]).encode()
    assert auth["proof"] == hmac.new(b"s3cret", msg, hashlib.sha256).hexdigest()
    assert auth["role"] == "worker" and auth["key_id"] == "default"
    good = hmac.new(b"s3cret", "\n".join(["taskhub-hub", "default", "ab" * 32,
                                          auth["client_nonce"]]).encode(),
                    hashlib.sha256).hexdigest()
    assert hs.finish({"type": "welcome", "proof": good})["proof"] == good
    with pytest.raises(p.AuthError) as bad:
        hs.finish({"type": "welcome", "proof": "00" * 32})
    assert bad.value.reason == "impostor"


def test_a_refusal_keeps_its_reason():
    hs = p.Handshake(p.credentials(key="k"))
    hs.answer({"type": "challenge", "version": 1, "nonce": "00" * 32})
    with pytest.raises(p.AuthError) as e:
        hs.finish({"type": "error", "code": "auth_failed", "reason": "expired",
                   "message": "the token expired at 2026-01-01T00:00:00Z"})
    assert e.value.reason == "expired" and "expired at" in str(e.value)


def test_a_token_is_its_key_id_and_signature():
    claims = p.base64.urlsafe_b64encode(b'{"id":"0123456789abcdef"}').decode().rstrip("=")
    sig = p.base64.urlsafe_b64encode(bytes(range(32))).decode().rstrip("=")
    c = p.credentials(token=f"th1.{claims}.{sig}")
    assert c.key_id == f"th1.{claims}" and c.secret == bytes(range(32))
    assert "redacted" in repr(c) and "th1" in repr(c)
    for bad in ["", "abc", "th1.x.", "th1.x.AAAA"]:
        with pytest.raises(ValueError):
            p.credentials(token=bad or "x")


def test_bytes_travel_after_a_json_header():
    frame = p.encode({"type": "put", "req": 1, "queue": "q", "payload": b"\x00\xff"}, "payload")
    (n,) = struct.unpack(">I", frame[:4])
    header = json.loads(frame[4:4 + n])
    assert header["binary"] == "payload" and header["payload"] is None
    assert frame[4 + n:] == b"\x00\xff"
    # And back, as the hub sends a delivery of bytes.
    head = json.dumps({"type": "task", "req": 2, "task": {"id": 1, "payload": None},
                       "binary": "task.payload"}).encode()
    (msg,) = p.decode(struct.pack(">I", len(head)) + head + b"\x89PNG")
    assert msg["task"]["payload"] == b"\x89PNG" and "binary" not in msg
    assert p.decode('{"type":"ok","req":1}\n{"type":"ok","req":2}\n') == [
        {"type": "ok", "req": 1}, {"type": "ok", "req": 2}]


def test_patterns_match_as_the_hub_matches():
    cases = [("metrics.cpu", "metrics.cpu", True), ("metrics.*", "metrics.cpu", True),
             ("metrics.>", "metrics.cpu", True), ("*.cpu", "metrics.cpu", True),
             (">", "metrics.cpu", True), ("metrics.>", "metrics.cpu.core0", True),
             ("metrics.*", "metrics.cpu.core0", False), ("metrics.>", "metrics", False),
             ("metrics", "metrics.cpu", False), ("a.b", "a", False)]
    for pattern, topic, expected in cases:
        assert p.matches(pattern, topic) is expected, (pattern, topic)


def test_credentials_come_from_a_key_file_or_the_environment(tmp_path, monkeypatch):
    for name in ("TASKHUB_KEY", "TASKHUB_KEY_FILE", "TASKHUB_TOKEN", "TASKHUB_KEY_ID"):
        monkeypatch.delenv(name, raising=False)
    key_file = tmp_path / "hub.key"
    key_file.write_text("from-the-file\n")
    assert p.credentials(key_file=str(key_file)).secret == b"from-the-file"
    with pytest.raises(ValueError, match="is empty"):
        (tmp_path / "empty.key").write_text("\n")
        p.credentials(key_file=str(tmp_path / "empty.key"))
    with pytest.raises(ValueError, match="cannot read the key file"):
        p.credentials(key_file=str(tmp_path / "missing.key"))
    with pytest.raises(ValueError, match="no key"):
        p.credentials()
    monkeypatch.setenv("TASKHUB_KEY_FILE", str(key_file))
    monkeypatch.setenv("TASKHUB_KEY_ID", "ops")
    c = p.credentials()
    assert (c.key_id, c.secret) == ("ops", b"from-the-file")
    monkeypatch.setenv("TASKHUB_KEY", "from-the-env")
    assert p.credentials().secret == b"from-the-env", "a key beats a key file"
    assert p.credentials(key="given").secret == b"given", "arguments beat the environment"

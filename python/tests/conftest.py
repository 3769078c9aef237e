"""Real hubs for the tests: `taskhub serve` on a free port (the binary from TASKHUB_BIN, or the
workspace's debug build), and native workers."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KEY = "python-test-key-0123456789"


def binary(name):
    path = Path(os.environ.get("TASKHUB_BIN_DIR", ROOT / "target" / "debug")) / name
    if not path.exists():
        pytest.fail(f"{path} is missing: build the workspace first (cargo build)")
    return str(path)


HERE = Path(__file__).resolve().parent


class Serve:
    def __init__(self, *extra, listen="127.0.0.1:0"):
        self.proc = subprocess.Popen(
            [binary("taskhub"), "serve", "--listen", listen, "--key", KEY, "--ready-json",
             *extra],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            env=dict(os.environ, RUST_LOG="warn"))
        first = self.proc.stdout.readline()
        self.url = json.loads(first)["url"]
        assert self.url.startswith("ws"), first

    def worker(self, *args, credential=("--key", KEY)):
        return subprocess.Popen(
            [binary("taskhub-worker"), "--hub", self.url, *credential, *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=dict(os.environ, RUST_LOG="warn"))

    def python_worker(self, *args, stdout=subprocess.PIPE):
        """`python -m taskhub worker ARGS` in this directory (so `handlers:...` imports), its
        output as text lines."""
        return subprocess.Popen(
            [sys.executable, "-m", "taskhub", "worker", "--hub", self.url, *args],
            cwd=HERE, stdout=stdout, stderr=subprocess.PIPE, text=True,
            env=dict(os.environ, TASKHUB_KEY=KEY, PYTHONUNBUFFERED="1"))

    @property
    def port(self):
        return int(self.url.rsplit(":", 1)[1])

    def stop(self):
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def hub():
    s = Serve()
    yield s
    s.stop()


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    """A test CA and a certificate for 127.0.0.1 it signed (openssl), as file paths."""
    d = tmp_path_factory.mktemp("pki")

    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=taskhub test CA")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "hub.key", "-out", "hub.csr", "-subj", "/CN=127.0.0.1")
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "hub.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "hub.pem", "-days", "2", "-extfile", "ext.cnf")
    return {"ca": str(d / "ca.pem"), "cert": str(d / "hub.pem"), "key": str(d / "hub.key")}

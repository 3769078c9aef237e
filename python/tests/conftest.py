"""Real hubs for the tests: `taskhub serve` on a free port (the binary from TASKHUB_BIN, or the
workspace's debug build), and native workers."""

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KEY = "python-test-key-0123456789"


def binary(name):
    path = Path(os.environ.get("TASKHUB_BIN_DIR", ROOT / "target" / "debug")) / name
    if not path.exists():
        pytest.fail(f"{path} is missing: build the workspace first (cargo build)")
    return str(path)


class Serve:
    def __init__(self, *extra):
        self.proc = subprocess.Popen(
            [binary("taskhub"), "serve", "--listen", "127.0.0.1:0", "--key", KEY, *extra],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            env=dict(os.environ, RUST_LOG="warn"))
        first = self.proc.stdout.readline()
        self.url = first.split()[-1]
        assert self.url.startswith("ws"), first

    def worker(self, *args, credential=("--key", KEY)):
        return subprocess.Popen(
            [binary("taskhub-worker"), "--hub", self.url, *credential, *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=dict(os.environ, RUST_LOG="warn"))

    def stop(self):
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def hub():
    s = Serve()
    yield s
    s.stop()

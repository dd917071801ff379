"""Fixtures: a real jnhpd per test (the binary in $JNHPD, which
tests/python.rs sets to the one cargo built), configured by the test."""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Callable, List, Optional

import pytest

HERE = Path(__file__).resolve().parent


class Jnhpd:
    def __init__(self, config: str, tmp: Path) -> None:
        binary = os.environ.get("JNHPD") or shutil.which("jnhpd")
        if not binary:
            pytest.fail("set $JNHPD to the jnhpd binary (cargo test does)")
        self.dir = tmp
        path = tmp / "jnhp.toml"
        path.write_text(config)
        self.proc = subprocess.Popen(
            [binary, "--config", str(path), "--listen", "127.0.0.1:0"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.lines: List[str] = []
        self.changed = threading.Condition()
        threading.Thread(target=self._collect, daemon=True).start()
        line = self.wait_for("listening on")
        listed = line.split("listening on ", 1)[1].split(";")[0].split(", ")
        self.addr = next(a for a in listed if not a.startswith("tls "))
        tls = [a[4:] for a in listed if a.startswith("tls ")]
        self.tls_addr = tls[0] if tls else None

    def _collect(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            with self.changed:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self.changed.notify_all()
        with self.changed:
            self.lines.append("<stderr closed>")
            self.changed.notify_all()

    def wait_for(self, needle: str, timeout: float = 30) -> str:
        with self.changed:
            found = self.changed.wait_for(
                lambda: next((l for l in self.lines if needle in l or l == "<stderr closed>"), None),
                timeout,
            )
        if not found or found == "<stderr closed>" and needle != "<stderr closed>":
            pytest.fail(f"jnhpd never logged {needle!r}; its log:\n" + "\n".join(self.lines))
        return found

    def log(self) -> str:
        with self.changed:
            return "\n".join(self.lines)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def jnhpd_factory(tmp_path: Path):
    started: List[Jnhpd] = []

    def start(config: str = "") -> Jnhpd:
        server = Jnhpd(config, tmp_path)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def server(jnhpd_factory) -> Jnhpd:
    return jnhpd_factory("")


def helper_config(script: Path, **keys: object) -> str:
    """A [[validator]] table running `script` (Python) as a helper."""
    lines = [
        "[[validator]]",
        'kind = "helper"',
        'name = "py"',
        f"command = [{sys.executable!r}, {str(script)!r}]".replace("'", '"'),
    ]
    for key, value in keys.items():
        lines.append(f"{key} = {value!r}".replace("'", '"'))
    return "\n".join(lines) + "\n"


def write_script(tmp: Path, name: str, body: str) -> Path:
    path = tmp / name
    path.write_text(body)
    return path

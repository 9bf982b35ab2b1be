"""Dataset lineage in MLflow: what a run read, logged on its run as dataset inputs (the UI's Dataset column).

Three datasets, each with a name, a source URI without credentials, a digest and a row count:

- context ``inference``: the scanned input. Its digest is the manifest's content hash (every file's path and
  content hash), so two runs over the same unchanged files show the same digest, wherever they ran.
- context ``evaluation``: the labels CSV, when given (digest of its bytes).
- context ``optimization``: the sample the optimize stage measured the variants on (its files' paths and hashes).

mlflow is imported inside the functions (seconds to import); the digests need only pyarrow.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from helios.redact import redact_uri

DIGEST_CHARS = 32  # MLflow stores a dataset digest in 36 characters at most
CONTEXT_INPUT, CONTEXT_LABELS, CONTEXT_SAMPLE = "inference", "evaluation", "optimization"
CONTEXT_TAG = "mlflow.data.context"  # mlflow.utils.mlflow_tags.MLFLOW_DATASET_CONTEXT, readable without mlflow


@dataclass(frozen=True)
class RunInputs:
    """What a run read: the input root (a directory or fsspec URL), the labels CSV, the optimize sample (paths
    relative to the root; empty when the optimize stage did not run)."""

    input_root: str
    labels_csv: str | None
    sample: tuple[str, ...] = ()


@dataclass(frozen=True)
class DatasetRecord:
    """One dataset input of a run, before it becomes an MLflow dataset."""

    name: str
    source: str
    digest: str
    rows: int
    context: str


def _hasher():
    import hashlib

    return hashlib.blake2b(digest_size=DIGEST_CHARS // 2)


def _lines(rows: Iterable[tuple[str, str]]) -> bytes:
    """What the digest hashes of (path, file hash) pairs, in the order given."""
    return "".join(f"{path}\0{content_hash}\n" for path, content_hash in rows).encode("utf-8", "surrogateescape")


def digest_rows(rows: Iterable[tuple[str, str]]) -> str:
    """The content hash of (path, file hash) pairs, independent of their order."""
    h = _hasher()
    h.update(_lines(sorted(rows)))
    return h.hexdigest()


def manifest_digest(manifest_path: Path, only: Iterable[str] | None = None, chunk: int = 8192) -> tuple[str, int]:
    """(``digest_rows`` of the manifest's (path, content hash) rows, or of the paths in ``only``; row count), sorted
    and hashed in Arrow chunk by chunk: no Python tuple per file (200,000 files held ~45 MB as tuples). Unreadable
    files hash as ''."""
    table = pq.read_table(manifest_path, columns=["path", "content_hash"])
    if only is not None:
        table = table.filter(pc.is_in(table["path"], value_set=pa.array(list(only), pa.string())))
    table = table.set_column(1, "content_hash", pc.fill_null(table["content_hash"], ""))
    table = table.sort_by([("path", "ascending"), ("content_hash", "ascending")])  # bytewise: UTF-8 = code points
    h = _hasher()
    for batch in table.to_batches(chunk):
        h.update(_lines(zip(batch.column(0).to_pylist(), batch.column(1).to_pylist())))
    return h.hexdigest(), table.num_rows


def source_uri(location: str) -> str:
    """``location`` as a URI (a local path becomes ``file://``), with any credentials masked."""
    if "://" not in location:
        return Path(location).resolve().as_uri()
    return redact_uri(location)


def dataset_name(location: str) -> str:
    """A readable name: the last two parts of the path (``demo-mnist-2000-0/files``, ``photos/2026-11``)."""
    parts = [p for p in redact_uri(location).split("?")[0].replace("\\", "/").split("/") if p]
    return "/".join(parts[-2:]) or location


def run_datasets(inputs: RunInputs, manifest_path: Path) -> list[DatasetRecord]:
    """The run's dataset inputs: the scanned input, the labels when given, the optimize sample when there is one."""
    digest, rows = manifest_digest(manifest_path)
    name = dataset_name(inputs.input_root)
    records = [DatasetRecord(name, source_uri(inputs.input_root), digest, rows, CONTEXT_INPUT)]
    if inputs.labels_csv:
        labels = Path(inputs.labels_csv)
        data = labels.read_bytes()
        h = _hasher()
        h.update(data)
        lines = sum(1 for line in data.decode("utf-8", "replace").splitlines()[1:] if line.strip())
        records.append(DatasetRecord(dataset_name(str(labels)), source_uri(str(labels)), h.hexdigest(), lines,
                                     CONTEXT_LABELS))
    if inputs.sample:
        digest, rows = manifest_digest(manifest_path, inputs.sample)
        records.append(DatasetRecord(f"{name} (optimize sample)", source_uri(inputs.input_root), digest, rows,
                                     CONTEXT_SAMPLE))
    return records


def log_datasets(client: Any, run_id: str, records: list[DatasetRecord]) -> None:
    """Log ``records`` as the dataset inputs of run ``run_id`` (``MlflowClient.log_inputs``, by explicit run id:
    the fluent ``mlflow.log_input`` needs an active run, which the pipeline's worker threads do not have)."""
    from mlflow.entities import DatasetInput, InputTag

    inputs = [DatasetInput(_dataset(r), [InputTag(CONTEXT_TAG, r.context)]) for r in records]
    client.log_inputs(run_id, datasets=inputs)


def _dataset(record: DatasetRecord) -> Any:
    """The MLflow dataset entity: metadata only (the files stay where they are), its row count as the profile."""
    import json

    from mlflow.entities import Dataset

    source = _source(record.source)
    return Dataset(record.name, record.digest, source._get_source_type(), source.to_json(),
                   profile=json.dumps({"num_rows": record.rows}))


def _source(uri: str) -> Any:
    """MLflow's dataset source for ``uri`` (local files, s3, gs ... as MLflow knows them); any other fsspec
    scheme (``memory://``, ``abfs://`` ...) as a URL source, which records the address only."""
    import warnings

    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.http_dataset_source import HTTPDatasetSource
    from mlflow.exceptions import MlflowException

    try:
        with warnings.catch_warnings():  # MLflow registers file:// twice and warns that it is ambiguous
            warnings.simplefilter("ignore", UserWarning)
            return resolve_dataset_source(uri)
    except MlflowException:
        return HTTPDatasetSource(uri)

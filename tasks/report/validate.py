"""validate_outputs: Great Expectations suites over the manifest and the predictions, Data Docs in the run directory.

great_expectations is imported inside ``validate_outputs`` only: importing it costs seconds (about 9 s of the 28 s
the report took alone over 200,000 files here). Validation is a function of the two files' bytes, the label set and
the suites, so a rerun whose outputs did not change reuses the last result and its Data Docs (``validation.json``
in the Data Docs folder holds that key) without importing GX at all.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pandas as pd

from helios.catalog import RunCatalog
from helios.frames import is_in
from tasks.report.config import ReportConfig

SAMPLE_COLUMNS = {"manifest": ("path", "size_bytes", "content_hash"),
                  "predictions": ("path", "status", "label", "confidence", "error", "path_in_manifest")}
STATUSES = ("ok", "error")
# The columns the suites look at (and the sample rows show): only these are read, so memory does not grow with the
# columns refine and review add. Bump SUITES when an expectation changes: it is part of the reuse key.
READ_COLUMNS = {"manifest": ("path", "size_bytes", "content_hash", "scan_error"),
                "predictions": ("path", "status", "label", "confidence", "error")}
SUITES = 1
KEPT = "validation.json"


@dataclass(frozen=True)
class ValidationResult:
    success: bool
    failures: list[dict] = field(default_factory=list)
    docs_path: Path | None = None
    reused: bool = False  # the outputs were byte-identical to the last validated ones: that result was kept

    def to_dict(self, mode: str) -> dict:
        return {"mode": mode, "success": self.success, "failures": self.failures,
                "docs_path": str(self.docs_path) if self.docs_path else None, "reused": self.reused}


class ValidationFailed(Exception):
    """Raised by the report wrapper when a run's outputs break an expectation and validation is 'fail'."""

    def __init__(self, result: ValidationResult):
        self.result = result
        super().__init__(format_failures(result))


def format_failures(result: ValidationResult) -> str:
    """The failing expectations, each with its details and sample rows, one block per expectation."""
    docs = f" (Data Docs: {result.docs_path})" if result.docs_path else ""
    lines = [f"output validation failed: {len(result.failures)} expectation(s) not met{docs}"]
    for f in result.failures:
        column = f"({f['column']})" if f.get("column") else ""
        lines.append(f"- {f.get('suite', '?')}: {f['expectation']}{column}: {f['details']}")
        lines += [f"    {json.dumps(row, ensure_ascii=False)}" for row in f.get("sample_rows") or []]
    lines.append("Fix the stage that wrote these rows, or set report.validation=warn to report without failing.")
    return "\n".join(lines)


def _manifest_expectations(gxe: Any) -> list:
    # The scan refuses what it must not open (FIFOs, links out of the root, loops): such a row has a scan_error and no
    # hash by contract, and becomes the file's error row; only the rows the scan read must carry a hash.
    scanned = {"row_condition": "scanned==True", "condition_parser": "pandas"}
    return [
        *(gxe.ExpectColumnToExist(column=c) for c in ("path", "size_bytes", "content_hash")),
        gxe.ExpectColumnValuesToNotBeNull(column="path", description="every file has a path"),
        gxe.ExpectColumnValuesToBeUnique(column="path", description="each file is listed once"),
        gxe.ExpectColumnValuesToNotBeNull(column="size_bytes", description="every file has a size"),
        gxe.ExpectColumnValuesToBeBetween(column="size_bytes", min_value=0, description="sizes are >= 0"),
        gxe.ExpectColumnValuesToNotBeNull(column="content_hash", description="every file the scan read has a content hash",
                                          **scanned),
        gxe.ExpectColumnValueLengthsToBeBetween(column="content_hash", min_value=1, description="hashes are not empty",
                                                **scanned),
    ]


def _prediction_expectations(gxe: Any, labels: tuple[str, ...], manifest_rows: int | None) -> list:
    ok_rows = {"row_condition": 'status=="ok"', "condition_parser": "pandas"}
    expectations = [
        *(gxe.ExpectColumnToExist(column=c) for c in ("path", "status", "label", "confidence")),
        gxe.ExpectColumnValuesToNotBeNull(column="path", description="every row names its file"),
        gxe.ExpectColumnValuesToBeUnique(column="path", description="one row per file"),
        gxe.ExpectColumnValuesToBeInSet(column="status", value_set=list(STATUSES), description="status is ok or error"),
        gxe.ExpectColumnValuesToNotBeNull(column="status", description="every row has a status"),
        gxe.ExpectColumnValuesToBeBetween(column="confidence", min_value=0, max_value=1, description="confidence in [0, 1]"),
        gxe.ExpectColumnValuesToNotBeNull(column="confidence", description="ok rows have a confidence", **ok_rows),
    ]
    if labels:
        expectations += [
            gxe.ExpectColumnValuesToBeInSet(column="label", value_set=list(labels), description="labels are in the label set"),
            gxe.ExpectColumnValuesToNotBeNull(column="label", description="ok rows have a label", **ok_rows),
        ]
    if manifest_rows is not None:
        expectations += [
            gxe.ExpectTableRowCountToEqual(value=manifest_rows, description="one row per manifest file"),
            gxe.ExpectColumnValuesToBeInSet(column="path_in_manifest", value_set=[True],
                                            description="every predicted path is in the manifest"),
        ]
    return expectations


def _sample(frames: dict[str, pd.DataFrame], suite: str, index: Any, n: int) -> list[dict]:
    """Up to n rows of a frame, in the columns that explain a failure; JSON-safe (NaN -> null)."""
    frame = frames[suite]
    columns = [c for c in SAMPLE_COLUMNS[suite] if c in frame]
    return json.loads(frame.loc[list(index)[:n], columns].to_json(orient="records", force_ascii=False))


def _exception_message(info: dict) -> str | None:
    """GX puts the error either at the top level or per metric (keyed by metric id); the first message found."""
    if info.get("exception_message"):
        return str(info["exception_message"])
    messages = [v.get("exception_message") for v in info.values() if isinstance(v, dict) and v.get("exception_message")]
    return str(messages[0]) if messages else None


def _failure(suite: str, outcome: Any, frames: dict[str, pd.DataFrame], n: int) -> dict:
    """One failed expectation as suite/expectation/column/description/details/sample_rows."""
    config = outcome.expectation_config
    column = config.kwargs.get("column")
    result = outcome.result or {}
    rows: list[dict] = []
    exception = _exception_message(outcome.exception_info or {})
    if exception:
        details = f"could not be evaluated: {exception}"
    elif config.type == "expect_column_to_exist":
        have = frames[suite].attrs.get("file_columns", list(frames[suite].columns))
        details = f"column {column!r} is missing; the file has {', '.join(map(str, have))}"
    elif config.type == "expect_table_row_count_to_equal":
        details = f"{result.get('observed_value')} rows, expected {config.kwargs['value']} (one per manifest file)"
        manifest, predictions = frames["manifest"], frames["predictions"]
        missing = manifest.index[~is_in(manifest["path"], predictions["path"])]
        rows = (_sample(frames, "manifest", missing, n)
                or _sample(frames, "predictions", predictions.index[predictions["path"].duplicated(keep=False)], n))
    elif "unexpected_count" in result:
        unexpected = json.dumps((result.get("partial_unexpected_list") or [])[:n], ensure_ascii=False, default=str)
        details = f"{result['unexpected_count']} of {result.get('element_count')} values unexpected, e.g. {unexpected}"
        rows = _sample(frames, suite, result.get("partial_unexpected_index_list") or [], n)
    else:
        details = f"observed {result.get('observed_value')!r}"
    return {"suite": suite, "expectation": config.type, "column": column,
            "description": config.description, "details": details, "sample_rows": rows}


def _context(docs_dir: Path) -> Any:
    """An ephemeral GX context (in-memory stores, no analytics, no progress bars) with one Data Docs site on disk."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig, InMemoryStoreBackendDefaults, ProgressBarsConfig)

    site = {"class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"}}
    config = DataContextConfig(store_backend_defaults=InMemoryStoreBackendDefaults(), analytics_enabled=False,
                               progress_bars=ProgressBarsConfig(globally=False), data_docs_sites={"helios": site})
    return gx.get_context(project_config=config, mode="ephemeral")


def _read(path: Path, wanted: tuple[str, ...]) -> pd.DataFrame:
    """The ``wanted`` columns the file has (vectors never), with the file's column names in ``attrs``."""
    import pyarrow.parquet as pq

    names = pq.read_schema(path).names
    frame = pd.read_parquet(path, columns=[c for c in wanted if c in names]).reset_index(drop=True)
    frame.attrs["file_columns"] = names
    return frame


def load_frames(run_dir: Path) -> dict[str, pd.DataFrame]:
    """The frames to validate (only the columns the suites use); the manifest gains ``scanned`` (no scan_error),
    predictions ``path_in_manifest``."""
    frames: dict[str, pd.DataFrame] = {}
    catalog = RunCatalog(Path(run_dir))
    if catalog.manifest.is_file():
        manifest = _read(catalog.manifest, READ_COLUMNS["manifest"])
        refused = manifest["scan_error"].notna() if "scan_error" in manifest else pd.Series(False, index=manifest.index)
        frames["manifest"] = manifest.assign(scanned=~refused)  # assign keeps attrs (the file's columns)
    predictions = _read(catalog.predictions, READ_COLUMNS["predictions"])
    if "manifest" in frames and "path" in predictions and "path" in frames["manifest"]:
        predictions["path_in_manifest"] = is_in(predictions["path"], frames["manifest"]["path"])
    frames["predictions"] = predictions
    return frames


def reuse_key(run_dir: Path, labels: tuple[str, ...], cfg: ReportConfig) -> str:
    """What a validation result depends on: both files' bytes, the label set, the sample size, the suites, GX."""
    catalog, digest = RunCatalog(Path(run_dir)), hashlib.sha256()
    for path in (catalog.manifest, catalog.predictions):
        digest.update(f"{path.name}:{path.is_file()}".encode())
        if path.is_file():
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
    digest.update(json.dumps([list(labels), cfg.sample_rows, SUITES, version("great_expectations")]).encode())
    return digest.hexdigest()


def _kept(docs_dir: Path, key: str) -> ValidationResult | None:
    try:
        kept = json.loads((docs_dir / KEPT).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if kept.get("key") != key or not (docs_dir / "index.html").is_file():
        return None
    return ValidationResult(bool(kept["success"]), kept["failures"], docs_dir / "index.html", reused=True)


def validate_outputs(cfg: ReportConfig, run_dir: Path, labels: tuple[str, ...]) -> ValidationResult:
    """Check manifest.parquet and predictions.parquet with GX; Data Docs go to ``run_dir/data_docs``. Never raises
    for failed expectations: the caller decides (see ``ValidationFailed``)."""
    run_dir = Path(run_dir)
    if cfg.validation == "off":
        return ValidationResult(success=True)
    predictions_path = RunCatalog(run_dir).predictions
    if not predictions_path.is_file():
        return ValidationResult(False, [{"suite": "predictions", "expectation": "file_exists", "column": None,
                                         "details": f"{predictions_path} is missing", "sample_rows": []}])
    docs_dir = run_dir / "data_docs"
    key = reuse_key(run_dir, tuple(labels), cfg)
    kept = _kept(docs_dir, key)
    if kept is not None:
        return kept
    frames = load_frames(run_dir)
    import great_expectations as gx
    import great_expectations.expectations as gxe

    shutil.rmtree(docs_dir, ignore_errors=True)  # docs of an earlier attempt would list stale results
    context = _context(docs_dir)
    source = context.data_sources.add_pandas("helios")
    manifest_rows = len(frames["manifest"]) if "manifest" in frames and "path_in_manifest" in frames["predictions"] else None
    result_format = {"result_format": "SUMMARY", "partial_unexpected_count": cfg.sample_rows}
    suites = {"manifest": _manifest_expectations(gxe),
              "predictions": _prediction_expectations(gxe, tuple(labels), manifest_rows)}
    failures = []
    for name, frame in frames.items():
        batch = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe(name)
        suite = context.suites.add(gx.ExpectationSuite(name=name, expectations=suites[name]))
        definition = context.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite))
        # ValidationDefinition.run stores its result in the context, where build_data_docs finds it.
        outcome = definition.run(batch_parameters={"dataframe": frame}, result_format=result_format)
        failures += [_failure(name, r, frames, cfg.sample_rows) for r in outcome.results if not r.success]
    context.build_data_docs(site_names=["helios"])
    (docs_dir / KEPT).write_text(json.dumps({"key": key, "success": not failures, "failures": failures},
                                            ensure_ascii=False), encoding="utf-8")
    return ValidationResult(not failures, failures, docs_dir / "index.html")

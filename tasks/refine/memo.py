"""What a refine run keeps for the next one, in the refine work folder: each round's adaptation step (the adapted
ONNX file, the torch state to continue from, what the guards decided), the mixture split, and TTA answers.

Kept under a key of the source model (its ONNX file's hash and recipe) and the settings that change answers. A
rerun with the same key replays the kept steps without torch work; their re-inference comes back from the caller's
index. A kill between steps loses at most the step in progress. Files that are new since the adaptation are
answered by the kept models; ``open_memo`` says how many there are, and advises adapting again when their share of
the set exceeds ``refine.readapt_share``: the kept statistics then describe too little of what is being answered.
Above ``refine.readapt_auto_share`` (most of the set is new: another set, not an increment) it adapts again itself.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from helios.files import atomic_path
from tasks.refine.context import RefineContext
from tasks.refine.items import Keys
from tasks.refine.state import Compute, Run, Step

if TYPE_CHECKING:  # torch is imported only where a step is saved or loaded: a rerun whose answers are kept needs none
    from tasks.refine.ttt import Adaptation

KEY_FILE, SET_FILE = "adaptation.json", "adapted-set.parquet"
KEPT = (KEY_FILE, SET_FILE, "adapted", "like-source", "shifted", "tta", "probe", "routed", "mixture.json",
        "groups.parquet", "answers.json", "answers.parquet")
COMPUTE_ONLY = {"enabled", "batch_size", "device", "reuse_adaptation", "readapt_share", "readapt_auto_share"}  # change speed or advice, not answers


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def adaptation_key(ctx: RefineContext) -> str:
    """Hash of the source ONNX file, the model's recipe and the settings that change answers."""
    recipe = {"source_onnx": file_sha256(ctx.onnx_path), "model": ctx.adapter.recipe,
              "settings": ctx.cfg.model_dump(mode="json", exclude=COMPUTE_ONLY)}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:16]


def write_json(data: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(data, sort_keys=True, default=str))


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def write_table(frame: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        pq.write_table(pa.table(frame), tmp)


@dataclass
class Memo:
    """The kept adaptation of one key under ``root``; each set (or mixture group) keeps its steps in its own work
    folder. Counts the steps replayed and run, and hashes each model file once."""

    root: Path
    key: str
    reused_steps: int = 0
    run_steps: int = 0
    _sha: dict = field(default_factory=dict)
    _fresh: dict = field(default_factory=dict)  # step folder -> Step, written by this run (loading it is no replay)

    def sha(self, path: Path) -> str:
        if path not in self._sha:
            self._sha[path] = file_sha256(path)
        return self._sha[path]

    def save_step(self, run: Run, round_no: int, step: Step) -> None:
        """Keep one round's torch step; ``step.json`` is written last, so a half-written step is redone."""
        import torch

        folder = run.ctx.work_dir / "adapted" / f"round-{round_no}"
        folder.mkdir(parents=True, exist_ok=True)
        state: Adaptation = step.state
        with atomic_path(folder / "state.pt") as tmp:
            torch.save({"module": state.module.state_dict(),
                        "optimizer": None if state.optimizer is None else state.optimizer.state_dict()}, tmp)
        bn_pos, bn_labels = step.bn if step.bn is not None else (np.zeros(0, np.int64), np.zeros(0, np.int64))
        with atomic_path(folder / "arrays.npz") as tmp, open(tmp, "wb") as fh:
            np.savez(fh, source_labels=state.source_labels, fit=state.fit,
                     probs=state.probs if state.probs is not None else np.zeros((0, 0)),
                     bn_keys=np.asarray(run.items.keys[bn_pos]).astype(str), bn_labels=bn_labels)
        write_json({"computes": {m: [c.forward, c.backward] for m, c in step.computes.items()}, "kept": state.kept,
                    "reverted": state.reverted, "shift": state.shift, "skipped": state.skipped,
                    "bn": step.bn is not None, "onnx_sha": None if step.path is None else self.sha(step.path),
                    "rng": run.rng.bit_generator.state, "n_classes": state.n_classes}, folder / "step.json")
        self.run_steps += 1

    def hold(self, run: Run, round_no: int, step: Step) -> None:
        """The next ``load_step`` of this round returns ``step``'s computes and model (a mixed set's first steps
        run on its sample before its groups are known: the groups then take them up)."""
        self._fresh[run.ctx.work_dir / "adapted" / f"round-{round_no}"] = step

    def load_step(self, run: Run, round_no: int) -> Step | None:
        """A kept step of this round as the round would have left it (None: not kept, or its model file changed)."""
        folder = run.ctx.work_dir / "adapted" / f"round-{round_no}"
        meta = read_json(folder / "step.json")
        path = folder / "model.onnx"
        if meta is None or (meta["onnx_sha"] and (not path.is_file() or self.sha(path) != meta["onnx_sha"])):
            return None
        import torch

        from tasks.refine.ttt import Adaptation

        arrays = np.load(folder / "arrays.npz")
        saved = torch.load(folder / "state.pt", weights_only=True, map_location="cpu")  # a GPU run's too
        run.module.load_state_dict(saved["module"])
        probs = arrays["probs"] if arrays["probs"].size else None
        state = Adaptation(run.module, None, arrays["source_labels"], meta["n_classes"], arrays["fit"], None,
                           list(meta["kept"]), probs, meta["shift"], meta["skipped"], list(meta["reverted"]),
                           saved["optimizer"])
        run.rng.bit_generator.state = meta["rng"]
        bn = None
        if meta["bn"]:
            known = pd.Series(arrays["bn_labels"], index=arrays["bn_keys"])
            known = known[~known.index.duplicated()].reindex(np.asarray(run.items.keys))
            bn = (np.flatnonzero(known.notna()), known.dropna().to_numpy(dtype=np.int64))
        computes = {m: Compute(f, b, 0.0) for m, (f, b) in meta["computes"].items()}
        fresh = self._fresh.pop(folder, None)
        if fresh is not None:  # taken by this very run a moment ago (a mixed set's first steps): counted then
            return Step(state, fresh.computes, bn, fresh.path, fresh.export_seconds)
        self.reused_steps += 1
        return Step(state, computes, bn, path if meta["onnx_sha"] else None)


def clear(root: Path) -> None:
    """Remove what an earlier adaptation kept under ``root`` (another key, or adapting again was asked for)."""
    for name in KEPT:
        target = root / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def open_memo(ctx: RefineContext, keys: Keys) -> tuple[Memo, dict]:
    """This model and settings' memo, and the facts for the report: whether an adaptation is kept, how many files
    it did not see, whether adapting again is advised, or was done because most files are new (``readapted``)."""
    key, root, cfg = adaptation_key(ctx), ctx.work_dir, ctx.cfg
    meta = read_json(root / KEY_FILE)
    facts = {"key": key, "kept": False, "new_files": 0, "new_share": 0.0, "readapt_advised": False}
    if meta is not None and meta.get("key") == key and cfg.reuse_adaptation and (root / SET_FILE).is_file():
        seen = pq.read_table(root / SET_FILE)["key"].combine_chunks().cast(keys.values.type)
        new = int((~pc.is_in(keys.values, value_set=seen).to_numpy(zero_copy_only=False)).sum())
        share = new / max(len(keys), 1)
        facts.update(new_files=new, new_share=round(share, 4))
        if share <= cfg.readapt_auto_share:
            facts.update(kept=True, adapted_at=meta["created"], readapt_advised=share > cfg.readapt_share)
            return Memo(root, key), facts
        facts["readapted"] = True
    clear(root)
    write_table({"key": pc.unique(keys.values).cast(pa.string())}, root / SET_FILE)
    write_json({"key": key, "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "files": int(len(keys))}, root / KEY_FILE)
    return Memo(root, key), facts


def describe(facts: dict, memo: Memo, cfg) -> tuple[dict, list[str]]:
    """The report's ``adaptation`` facts (with the steps replayed and run) and the notes a person should read."""
    facts = {**facts, "reused_steps": memo.reused_steps, "run_steps": memo.run_steps}
    notes = []
    if memo.reused_steps and not memo.run_steps:
        notes.append(f"the adaptation kept from {facts.get('adapted_at')} answered (same source model and "
                     "settings): no torch work")
    if facts.get("readapted"):
        notes.append(f"{facts['new_files']} of the files ({facts['new_share']:.0%}) were not in the set the kept "
                     f"adaptation learned from (> refine.readapt_auto_share={cfg.readapt_auto_share}): adapted again "
                     "to this set")
    if facts["readapt_advised"]:
        notes.append(f"{facts['new_files']} of the files ({facts['new_share']:.0%}) are new since the kept adaptation "
                     f"learned its statistics (> refine.readapt_share={cfg.readapt_share}): adapting again would fit "
                     "this set better: rerun with --set refine.reuse_adaptation=false")
    return facts, notes

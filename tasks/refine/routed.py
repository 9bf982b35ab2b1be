"""Round 1 of a mixed set in one pass over its files: place each file in its group and answer it with that group's
adapted model, instead of a placement pass (the probe) and then one re-inference per group.

The groups are found on the sample (``domains.find_groups``) and each group's first adaptation step runs on its
part of the sample, so before any other file is read both adapted models exist. ``Routed`` is one graph of the
source model's probe (``probe.FeatureProbe``: the item's statistics at the first BN layers), the split's nearer-centre
rule (``domains.Splitter``, in float64 as there) and the adapted models: each item goes through its own group's
model only (the batch is split by group inside the graph and put back in order), and the graph's ``embeddings``
are ``[shifted flag, logits]``, so the caller reads the group and the answer together. It re-infers through
``Items.vectors``, which in the pipeline is the infer machinery (shards, the index, its cache: a rerun with the same
models answers from the index).
"""
from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tasks.prepare.export import write_recipe
from tasks.refine.context import RefineContext
from tasks.refine.domains import LAYERS, Splitter
from tasks.refine.items import Items, capped_batch
from tasks.refine.memo import read_json, write_json
from tasks.refine.probe import FeatureProbe
from tasks.refine.state import scores
from tasks.refine.writeback import source_opset
from tasks.session import open_session


CHUNK = 8192  # answers scored at once


class Routed(nn.Module):
    """Source probe, split rule and adapted models as one module: ``(logits of the item's group, embeddings)``."""

    def __init__(self, source: nn.Module, splitter: Splitter, models: list[nn.Module], owners: list[bool]):
        super().__init__()
        self.probe = FeatureProbe(source, LAYERS)
        self.models = nn.ModuleList(copy.deepcopy(m).cpu().eval() for m in models)
        # owners[k]: whether models[k] answers the shifted group (True) or the like-source one; a group without a
        # model of its own keeps its answers, so which logits its items get here does not matter
        self.shifted_index = owners.index(True) if True in owners else 0
        self.like_index = owners.index(False) if False in owners else 0
        self.shifted_second = splitter.shifted_second
        for name in ("mean", "scale", "centers"):
            self.register_buffer(name, torch.from_numpy(np.asarray(getattr(splitter, name), dtype=np.float64)))

    def forward(self, x: torch.Tensor):
        z = (self.probe(x).double() - self.mean) / self.scale
        second = ((z - self.centers[1]) ** 2).sum(1) < ((z - self.centers[0]) ** 2).sum(1)
        shifted = second if self.shifted_second else ~second
        if len(self.models) == 1:
            routed = _logits(self.models[0], x)
        else:  # each item through its own group's model only (a group may be empty in a batch: zero rows)
            mine, others = torch.nonzero(shifted).flatten(), torch.nonzero(~shifted).flatten()
            out = torch.cat([_logits(self.models[self.shifted_index], x.index_select(0, mine)),
                             _logits(self.models[self.like_index], x.index_select(0, others))])
            order = torch.cat([mine, others])[:, None].expand(-1, out.shape[1])
            routed = torch.zeros(x.shape[0], out.shape[1], dtype=out.dtype).scatter(0, order, out)
        return routed, torch.cat([shifted.to(routed.dtype)[:, None], routed], 1)


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    return out[0] if isinstance(out, tuple) else out


def export_routed(ctx: RefineContext, routed: Routed, sample: np.ndarray, folder: Path, meta: dict) -> Path | None:
    """``routed -> <folder>/model.onnx`` with its recipe, parity-checked on ``sample`` (the same group for every
    item, each item's logits within ``refine.parity_max_abs_logit_diff`` of torch); None when parity fails (the
    caller then places the files with the probe as before). A file kept for the same ``meta`` is reused as it is."""
    path, kept = folder / "model.onnx", folder / "routed.json"
    if path.is_file() and read_json(kept) == meta:
        return path
    folder.mkdir(parents=True, exist_ok=True)
    name = ctx.adapter.input_names[0]
    routed.eval()  # the exporter restores the mode it found, recursively: BatchNorm layers must stay in eval
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings are about torch internals
        torch.onnx.export(routed, (torch.from_numpy(sample[:2]),), str(path), dynamo=False,
                          opset_version=source_opset(ctx.onnx_path), input_names=[name],
                          output_names=["logits", "embeddings"],
                          dynamic_axes={name: {0: "n"}, "logits": {0: "n"}, "embeddings": {0: "n"}})
        session = open_session(path, ("CPUExecutionProvider",), ctx.threads)
        worst = 0.0
        for i in range(0, len(sample), 64):
            x = sample[i:i + 64]
            want = routed(torch.from_numpy(x))[1].numpy()
            got = session.run({name: x})[1]
            if not (want[:, 0] == got[:, 0]).all():
                return None
            worst = max(worst, float(np.abs(want[:, 1:] - got[:, 1:]).max()))
    if worst > ctx.cfg.parity_max_abs_logit_diff:
        return None
    write_recipe(path, {"variant": "test-time-adapted-routed", "source": ctx.adapter.recipe,
                        "source_onnx": str(ctx.onnx_path), "parity_max_abs_logit_diff": worst, **meta})
    write_json(meta, kept)
    return path


def answer(ctx: RefineContext, items: Items, path: Path, positions: np.ndarray):
    """(shifted flag, labels, confidences) of items ``positions`` from the routed graph at ``path``: each answer is
    from the model of the group the graph put the item in (label -1 and flag False where no answer came back: the
    file no longer decodes)."""
    classes = len(ctx.adapter.labels)
    if items.vectors is not None:
        emb = items.vectors(path, positions)
    else:  # in this process, chunk by chunk
        session = open_session(path, ("CPUExecutionProvider",), ctx.threads)
        name = ctx.adapter.input_names[0]
        emb = np.full((len(positions), 1 + classes), np.nan, dtype=np.float32)
        for part, x in items.read(positions, capped_batch(ctx.cfg.batch_size, items.item_bytes)):
            emb[np.searchsorted(positions, part)] = session.run({name: x})[1]
    ok = ~np.isnan(emb[:, 0])
    flag = np.where(ok, emb[:, 0], 0) > 0.5
    label, conf = np.full(len(positions), -1, dtype=np.int64), np.full(len(positions), np.nan)
    for start in range(0, len(positions), CHUNK):  # chunks: the scores' float64 copies stay small
        rows = start + np.flatnonzero(ok[start:start + CHUNK])
        logits = emb[rows, 1:1 + classes]
        if items.vectors is not None:  # as the infer machinery scores the files it answers
            scored = ctx.adapter.postprocess(logits)
            label[rows], conf[rows] = scored.label_idx, scored.confidence
        else:  # as ``Run.infer`` does in this process
            label[rows], conf[rows] = scores(logits)
    return flag, label, conf

"""The LLM review's requests as MLflow traces on the pipeline's run: where Helios spends money per call.

One trace per reviewed item that was sent to a model (cache hits send nothing): the root span holds the item,
the verdict and how many retries and fallbacks it took; one LLM span per request holds the model, prompt and
completion tokens, cost and latency (MLflow's own attribute names, so the UI's token and cost views add them up).
Spans are built after the fact from the review core's records (``tasks.review.core.ReviewedItem``), with the
requests' own start and end times; the core never imports MLflow. Traces are linked to the run by the
``mlflow.sourceRun`` metadata (``search_traces(run_id=...)``), since the review's threads have no active run.

What is stored: the item's path, its label and confidence, the label set, a text item's excerpt (the prompt's
content), the answers. An image is replaced by a note unless ``tracking.trace_images`` is on. The API key is never
handed to this module.
"""
from __future__ import annotations

from typing import Any

IMAGE_NOTE = "<image not stored: set tracking.trace_images=true to keep images in traces>"


class ReviewTracer:
    """The review stage's ``on_request`` hook: each reviewed item becomes a trace in ``experiment_id`` on ``run_id``."""

    def __init__(self, experiment_id: str, run_id: str, keep_images: bool = False):
        self.experiment_id, self.run_id, self.keep_images = experiment_id, run_id, keep_images

    def __call__(self, reviewed: Any) -> None:
        """Trace one item (called from the review's worker threads; MLflow exports in the background)."""
        import mlflow
        from mlflow.entities import SpanType
        from mlflow.tracing.constant import TraceMetadataKey

        requests, result = reviewed.result.requests, reviewed.result
        models = list(dict.fromkeys(r.model for r in requests))
        root = mlflow.start_span_no_context(
            "helios-review", span_type=SpanType.CHAIN, inputs=self.trace_inputs(reviewed),
            attributes={"helios.item": reviewed.item.path, "helios.model_label": reviewed.item.label},
            metadata={TraceMetadataKey.SOURCE_RUN: self.run_id}, tags={"helios.stage": "review"},
            experiment_id=self.experiment_id, start_time_ns=requests[0].start_ns)
        for number, request in enumerate(requests, 1):
            trace_request(root, request, number)
        root.end(outputs={"status": result.status, "verdict": result.verdict, "label": result.label,
                          "reason": result.reason, "model": result.model},
                 attributes={"helios.requests": len(requests), "helios.retries": len(requests) - len(models),
                             "helios.fallbacks": models[1:], "helios.cost_usd": result.cost_usd},
                 status="OK" if result.status == "reviewed" else "ERROR", end_time_ns=requests[-1].end_ns)

    def trace_inputs(self, reviewed: Any) -> dict[str, Any]:
        """The item and the prompt's inputs, with an image kept as its data URI only when asked to."""
        kept = {"item": reviewed.item.path, "confidence": reviewed.item.confidence}
        for key, value in reviewed.inputs.items():
            if hasattr(value, "url"):  # dspy.Image: the whole file as a data URI
                value = value.url if self.keep_images else IMAGE_NOTE
            kept[key] = value
        return kept


def trace_request(root: Any, request: Any, number: int) -> None:
    """One LLM span under ``root``: model, tokens, cost (USD) and outcome of request ``number`` of the item."""
    import mlflow
    from mlflow.entities import SpanType
    from mlflow.tracing.constant import CostKey, SpanAttributeKey, TokenUsageKey

    usage = {TokenUsageKey.INPUT_TOKENS: request.input_tokens, TokenUsageKey.OUTPUT_TOKENS: request.output_tokens,
             TokenUsageKey.TOTAL_TOKENS: request.input_tokens + request.output_tokens}
    span = mlflow.start_span_no_context(
        request.model, span_type=SpanType.LLM, parent_span=root,
        inputs={"model": request.model, "request": number},
        attributes={SpanAttributeKey.CHAT_USAGE: usage, SpanAttributeKey.MODEL: request.model,
                    SpanAttributeKey.MODEL_PROVIDER: request.model.split("/")[0],
                    SpanAttributeKey.LLM_COST: {CostKey.INPUT_COST: request.input_cost_usd,
                                                 CostKey.OUTPUT_COST: request.output_cost_usd,
                                                 CostKey.TOTAL_COST: request.cost_usd},
                    "helios.outcome": request.kind},
        start_time_ns=request.start_ns)
    failed = request.kind in ("transient", "failed")
    span.end(outputs=request.answer if request.answer is not None else {"error": request.error},
             status="ERROR" if failed else "OK", end_time_ns=request.end_ns)


def review_tracer(tracking: Any, tracker: Any) -> ReviewTracer | None:
    """The hook for ``review_stage``: None when tracking or review tracing is off."""
    if not (tracker.enabled and tracking.trace_review):
        return None
    experiment_id = tracker.client.get_run(tracker.run_id).info.experiment_id
    return ReviewTracer(experiment_id, tracker.run_id, tracking.trace_images)


def flush_traces() -> None:
    """Wait until every trace started so far is stored (MLflow exports them from a background queue)."""
    import mlflow

    mlflow.flush_trace_async_logging()

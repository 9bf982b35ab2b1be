"""A scripted OpenAI-compatible chat server on 127.0.0.1 standing in for the LLM provider in tests.

It answers ``POST /v1/chat/completions`` (and ``/chat/completions``, as LiteLLM's OpenRouter route sends)
in OpenAI's format, with a fixed ``usage`` so tests can check cost arithmetic to the cent. Each model has a
script of actions consumed one per request; when the script is empty the server answers ``"ok"``:

- ``"ok"``: a DSPy ChatAdapter answer. The label is ``SAY:<label>`` found in the item text, else the model
  label it was shown; the verdict follows from whether they match.
- ``"bad-label"``: a well-formed answer whose label is outside every label set.
- ``"malformed"``: HTTP 200 whose message holds no output fields.
- ``"bad-body"``: HTTP 200 whose body is not JSON at all.
- ``429`` / ``500`` / any int: that HTTP status with an OpenAI error body.
- ``"timeout"``: sleep past the client's timeout, then answer.
"""
from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_MODEL_LABEL = re.compile(r"\[\[ ## model_label ## \]\]\s*\n(.+)")
_SAY = re.compile(r"SAY:(\S+)")


def _text_of(body: dict[str, Any]) -> str:
    """All text parts of the request's messages, joined."""
    parts: list[str] = []
    for message in body.get("messages", []):
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return "\n".join(parts)


def chat_answer(verdict: str, label: str, rationale: str = "Looks like it.") -> str:
    """The text DSPy's ChatAdapter parses into the review signature's outputs."""
    return (
        f"[[ ## verdict ## ]]\n{verdict}\n\n[[ ## label ## ]]\n{label}\n\n"
        f"[[ ## rationale ## ]]\n{rationale}\n\n[[ ## completed ## ]]\n"
    )


def default_answer(body: dict[str, Any]) -> str:
    """Answer from the request's content alone, so concurrent requests get deterministic answers."""
    user_text = _text_of({"messages": [m for m in body.get("messages", []) if m.get("role") == "user"]})
    shown = _MODEL_LABEL.search(user_text)
    model_label = shown.group(1).strip() if shown else "?"
    said = _SAY.search(user_text)
    label = said.group(1) if said else model_label
    return chat_answer("agree" if label == model_label else "disagree", label)


class FakeLLM:
    """Start with ``with FakeLLM() as llm:``; ``llm.url`` is the ``api_base``; ``llm.requests[model]`` counts."""

    def __init__(self, prompt_tokens: int = 1000, completion_tokens: int = 100, sleep_s: float = 2.0):
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.sleep_s = sleep_s
        self.scripts: dict[str, list[Any]] = {}
        self.requests: Counter[str] = Counter()
        self.billed: Counter[str] = Counter()  # answers sent with a usage block (HTTP 200 with a completion)
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def script(self, model: str, *actions: Any) -> None:
        """Queue actions for the next requests to ``model`` (the id after the provider prefix)."""
        with self._lock:
            self.scripts.setdefault(model, []).extend(actions)

    def __enter__(self) -> FakeLLM:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _next_action(self, model: str, body: dict[str, Any], headers: dict[str, str]) -> Any:
        with self._lock:
            self.requests[model] += 1
            self.bodies.append(body)
            self.headers.append(headers)
            queue = self.scripts.get(model)
            return queue.pop(0) if queue else "ok"

    def _completion(self, model: str, content: str) -> dict[str, Any]:
        with self._lock:
            self.billed[model] += 1
        return {
            "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens,
            },
        }

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output quiet
                pass

            def _send(self, status: int, payload: bytes, content_type: str = "application/json") -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and hung up
                    pass

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                if not self.path.endswith("/chat/completions"):
                    self._send(404, b'{"error": {"message": "not found"}}')
                    return
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                model = str(body.get("model", ""))
                action = fake._next_action(model, body, dict(self.headers.items()))
                if action == "timeout":
                    time.sleep(fake.sleep_s)
                    action = "ok"
                if isinstance(action, int):
                    error = {"error": {"message": f"scripted {action}", "type": "server_error", "code": str(action)}}
                    self._send(action, json.dumps(error).encode())
                elif action == "bad-body":
                    self._send(200, b"<html>upstream exploded</html>", "text/html")
                elif action == "malformed":
                    self._send(200, json.dumps(fake._completion(model, "I would rather not say.")).encode())
                elif action == "bad-label":
                    answer = chat_answer("disagree", "../../etc/passwd")
                    self._send(200, json.dumps(fake._completion(model, answer)).encode())
                else:
                    self._send(200, json.dumps(fake._completion(model, default_answer(body))).encode())

        return Handler

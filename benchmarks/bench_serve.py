"""The served champion side by side in one run: ``mlflow models serve`` over HTTP against the same model called
in-process through its pyfunc and through a bare ``onnxruntime`` session, at concurrency 1 and 8, batch 1 and 32.

    python benchmarks/bench_serve.py --model mnist-cnn --tracking-uri sqlite:///helios-work/mlflow.db
    python benchmarks/bench_serve.py --model minilm --tracking-uri sqlite:///helios-work/mlflow.db

The model is ``models:/NAME@champion`` of the store (run ``helios run`` / ``helios optimize`` first). The server is
started as ``helios serve`` starts it (the same command line) and gets pre-encoded JSON bodies from persistent
HTTP connections, one per client thread. The pyfunc gets DataFrames (its decode, resize, tokenize included); the
bare session gets feeds collated beforehand (no decoding: the ceiling). Inputs are the demo corpus of the model's
modality. Every cell runs ``--seconds`` in ``--rounds`` turns, the contenders alternating (after a warm-up);
items/s = requests/s x batch. Prints a markdown table and the server/pyfunc ratios. Client and server share this
machine's cores. Not a test.
"""
from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def corpus(modality: str, n: int, out: Path) -> list[bytes]:
    from helios.data.demo import write_demo

    write_demo("text" if modality == "text" else "mnist", n, out)
    return [p.read_bytes() for p in sorted((out / "files").rglob("*")) if p.is_file()]


def rows_of(modality: str, files: list[bytes]) -> list[dict]:
    """Request rows: texts as ``text``, images as ``content_b64``."""
    if modality == "text":
        return [{"text": f.decode("utf-8")} for f in files]
    return [{"content_b64": base64.b64encode(f).decode("ascii")} for f in files]


def batches(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items) - size + 1, size)]


def measure(call, payloads: list, concurrency: int, seconds: float) -> dict:
    """Run ``call(payload)`` from ``concurrency`` threads for ``seconds`` (after one warm-up call per thread)."""
    latencies: list[float] = []
    lock = threading.Lock()
    start_line = threading.Barrier(concurrency + 1)

    def worker(k: int) -> None:
        call(payloads[k % len(payloads)])
        start_line.wait()
        mine, i, end = [], k, time.perf_counter() + seconds
        while time.perf_counter() < end:
            t = time.perf_counter()
            call(payloads[i % len(payloads)])
            mine.append(time.perf_counter() - t)
            i += concurrency
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(concurrency)]
    for t in threads:
        t.start()
    start_line.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return {"wall": time.perf_counter() - t0, "latencies": latencies}


def pooled(rounds: list[dict]) -> dict:
    """Requests/s over all rounds of one contender, and its latency percentiles."""
    ms = np.array([x for r in rounds for x in r["latencies"]]) * 1000
    return {"rps": len(ms) / sum(r["wall"] for r in rounds), "p50": float(np.percentile(ms, 50)),
            "p95": float(np.percentile(ms, 95))}


def http_caller(port: int):
    """One persistent HTTP connection per thread; raises on any non-200 answer."""
    local = threading.local()

    def call(body: bytes) -> None:
        if not hasattr(local, "conn"):
            local.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        try:
            local.conn.request("POST", "/invocations", body, {"Content-Type": "application/json"})
            response = local.conn.getresponse()
        except (ConnectionError, http.client.RemoteDisconnected):  # uvicorn closes idle keep-alive after 5 s
            local.conn.close()
            local.conn.request("POST", "/invocations", body, {"Content-Type": "application/json"})
            response = local.conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"server answered {response.status}: {data[:300]!r}")
        json.loads(data)

    return call


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, tracking_uri: str, port: int, workers: int, log: Path) -> subprocess.Popen:
    """The server as ``helios serve`` runs it; waits for /ping."""
    from helios.cli.serve import serve_command

    command, env = serve_command(model, port, "127.0.0.1", workers, tracking_uri)
    proc = subprocess.Popen(command, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                return proc
        except OSError:
            time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGTERM)
    raise RuntimeError(f"the server did not answer /ping within 180 s: see {log}")


def contenders(model: str, ports: dict[int, int], rows: list[dict], size: int, tmp: Path):
    """(name, call, payloads) for a bare ORT session, the in-process pyfunc and the servers (``ports``: uvicorn
    workers -> port) at batch ``size``."""
    import mlflow
    import onnxruntime as ort
    import pandas as pd

    uri = f"models:/{model}@champion"
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(tmp / f"model-{size}")))
    pyfunc = mlflow.pyfunc.load_model(str(local))
    helios = pyfunc.unwrap_python_model()
    onnx_path = next((local / "artifacts" / "variant").glob("*.onnx"))
    bare = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    outputs = list(helios.outputs)
    groups = batches(rows, size)
    bodies = [json.dumps({"dataframe_records": g}).encode() for g in groups]
    frames = [pd.DataFrame(g) for g in groups]
    feeds = [helios.adapter.collate([helios.adapter.preprocess(_raw(r)) for r in g]) for g in groups]
    return [("bare onnxruntime session (pre-collated)", lambda f: bare.run(outputs, f), feeds),
            ("pyfunc in-process (`mlflow.pyfunc.load_model`)", pyfunc.predict, frames),
            *((f"`mlflow models serve` over HTTP, {w} worker{'s' if w > 1 else ''}", http_caller(port), bodies)
              for w, port in ports.items())]


def _raw(row: dict) -> bytes:
    return row["text"].encode("utf-8") if "text" in row else base64.b64decode(row["content_b64"])


def report(results: list[tuple], model: str) -> None:
    print(f"\n| {model} | batch | concurrency | requests/s | items/s | p50 ms | p95 ms |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, size, conc, r in results:
        print(f"| {name} | {size} | {conc} | {r['rps']:,.1f} | {r['rps'] * size:,.1f} | {r['p50']:.1f} | {r['p95']:.1f} |")
    print()
    for size, conc in sorted({(s, c) for _, s, c, _ in results}):
        cell = {n: r["rps"] for n, s, c, r in results if s == size and c == conc}
        inproc = next(v for n, v in cell.items() if "pyfunc" in n)
        bare = next(v for n, v in cell.items() if "bare" in n)
        servers = ", ".join(f"{n.split(', ')[-1]} {v / inproc:.2f}x" for n, v in cell.items() if "serve" in n)
        print(f"batch {size}, concurrency {conc}: server/pyfunc {servers}; pyfunc/bare {inproc / bare:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mnist-cnn", help="registered model name (its champion is served)")
    parser.add_argument("--tracking-uri", default=f"sqlite:///{Path('helios-work/mlflow.db').resolve()}")
    parser.add_argument("--n", type=int, default=512, help="demo files used as inputs")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per cell, over all rounds")
    parser.add_argument("--rounds", type=int, default=5, help="turns each contender takes per cell")
    parser.add_argument("--workers", default="1,2", help="uvicorn worker counts: one server each")
    args = parser.parse_args()
    os.environ["MLFLOW_TRACKING_URI"] = args.tracking_uri
    import mlflow

    modality = "text" if mlflow.pyfunc.load_model(f"models:/{args.model}@champion").metadata.metadata[
        "modality"] == "text" else "image"
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        rows = rows_of(modality, corpus(modality, args.n, Path(tmp) / "demo"))
        ports = {int(w): free_port() for w in args.workers.split(",")}
        servers = []
        try:
            for w, port in ports.items():
                servers.append(start_server(args.model, args.tracking_uri, port, w, Path(tmp) / f"server-{w}.log"))
            results = []
            for size in (1, 32):
                cells = contenders(args.model, ports, rows, size, Path(tmp))
                for conc in (1, 8):
                    # Contenders take turns, round after round, so a change in the machine's load hits all alike.
                    rounds: dict[str, list] = {name: [] for name, _, _ in cells}
                    for _ in range(args.rounds):
                        for name, call, payloads in cells:
                            rounds[name].append(measure(call, payloads, conc, args.seconds / args.rounds))
                    for name in rounds:
                        results.append((name, size, conc, pooled(rounds[name])))
                        print(f"{name} batch {size} conc {conc}: {results[-1][3]}", file=sys.stderr)
        finally:
            for server in servers:
                os.killpg(server.pid, signal.SIGTERM)
                server.wait(timeout=30)
    report(results, args.model)


if __name__ == "__main__":
    main()

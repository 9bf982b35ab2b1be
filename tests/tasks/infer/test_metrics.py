"""Metrics: scraped from the run's endpoint, and pushed to a (local stand-in) Pushgateway at the end."""
from __future__ import annotations

import socket
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from tasks.infer.metrics import serve_metrics
from tasks.infer.shard import ShardOutcome


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def pushgateway():
    """A local HTTP server that records what is pushed, as a Pushgateway would receive it."""
    received = []

    class Handler(BaseHTTPRequestHandler):
        def do_PUT(self):
            received.append((self.path, self.rfile.read(int(self.headers["Content-Length"])).decode()))
            self.send_response(200)
            self.end_headers()

        do_POST = do_PUT

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", received
    server.shutdown()


def scrape(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()


def test_endpoint_serves_run_metrics_and_push_happens_at_the_end(pushgateway):
    url, received = pushgateway
    port = free_port()
    outcome = ShardOutcome("s1", "x", files=10, ok=9, error=1, flagged=0, seconds=0.1, batch_size=4,
                           batch_sizes=(4, 4, 1), batch_seconds=(0.003, 0.004, 0.001), queue_depths=(2, 1, 0))
    with serve_metrics(port, url, grouping={"run": "r1"}) as metrics:
        metrics.record_shard(outcome)
        text = scrape(port)
        assert 'helios_files_processed_total{status="ok"} 9.0' in text
        assert 'helios_files_processed_total{status="error"} 1.0' in text
        assert "helios_inference_batch_seconds_count 3.0" in text
        assert 'helios_inference_batch_seconds_bucket{le="0.002"} 1.0' in text
        assert "helios_batch_size 1.0" in text and "helios_queue_depth 0.0" in text
        assert not received
    assert received and received[0][0] == "/metrics/job/helios_infer/run/r1"
    assert 'helios_files_processed_total{status="ok"} 9.0' in received[0][1]
    with pytest.raises(OSError):
        scrape(port)  # the endpoint lives only as long as the run


def test_unreachable_pushgateway_only_warns(caplog):
    with serve_metrics(None, f"http://127.0.0.1:{free_port()}"):
        pass
    assert "could not push metrics" in caplog.text


def test_busy_port_is_a_usage_error():
    from helios.errors import UsageError

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(UsageError, match="pick a free port"):
            with serve_metrics(s.getsockname()[1], None):
                pass

"""Credentials in URIs are masked; everything else passes through unchanged."""
import pytest

from helios.redact import redact, redact_uri


@pytest.mark.parametrize("uri,shown", [
    ("s3://AKIA:secret@bucket/x", "s3://***@bucket/x"),
    ("https://bob:pw@mlflow.example.com:5000/api", "https://***@mlflow.example.com:5000/api"),
    ("https://h/x?token=abc&page=2#top", "https://h/x?token=***&page=2#top"),
    ("gs://b/p?X-Goog-Signature=zz&X-Goog-Credential=c", "gs://b/p?X-Goog-Signature=***&X-Goog-Credential=***"),
    ("sqlite:////tmp/work/mlflow.db", "sqlite:////tmp/work/mlflow.db"),
    ("https://h/x?page=2", "https://h/x?page=2"),
    ("helios-work/run", "helios-work/run"),
])
def test_redact_uri(uri, shown):
    assert redact_uri(uri) == shown


def test_redact_walks_settings():
    settings = {"review": {"api_base": "https://u:p@h/v1"}, "labels": ("a", "b"), "n": 3, "input": None}
    assert redact(settings) == {"review": {"api_base": "https://***@h/v1"}, "labels": ("a", "b"), "n": 3, "input": None}

"""Credentials inside URIs never leave the process: ``user:password@`` and secret-looking query parameters are
replaced by ``***`` before a URI is written to config.json, MLflow, the report or a log line."""
from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlencode

MASK = "***"
SECRET_PARAMS = re.compile(r"(token|key|secret|password|passwd|pwd|signature|sig|credential|auth|session)", re.I)
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#@]*@")


def redact_uri(text: str) -> str:
    """``text`` with the userinfo and secret query values of a URI masked; any other text (and a URI without
    credentials) is returned exactly as it is."""
    if not isinstance(text, str) or not _URI.match(text):
        return text
    text = _USERINFO.sub(rf"\1{MASK}@", text, count=1)
    base, sep, rest = text.partition("?")
    if not sep:
        return text
    query, hash_sep, fragment = rest.partition("#")
    pairs = parse_qsl(query, keep_blank_values=True)
    if not any(SECRET_PARAMS.search(k) for k, _ in pairs):
        return text
    masked = urlencode([(k, MASK if SECRET_PARAMS.search(k) else v) for k, v in pairs], safe="*")
    return f"{base}?{masked}{hash_sep}{fragment}"


def redact(value: Any) -> Any:
    """A copy of nested dicts/lists with every URI string redacted (settings as written to disk or MLflow)."""
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact(v) for v in value)
    return redact_uri(value) if isinstance(value, str) else value

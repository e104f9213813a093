"""Secrets out of anything shown or stored: user info and credential-like query parameters of URLs.

A camera URL such as `rtsp://admin:pw@cam/live?token=…` is what the daemon must connect with, but everything
it writes down (logs, `stream_status`, events and so webhooks and JSONL sinks, tool outputs read by an LLM)
is read by more people and programs than the settings file. This is the one place that decides what a
secret looks like; it lives in memory_store, the lowest layer, so every other component can use it.

`redact_url` rewrites one URL; `redact` rewrites every URL embedded in a text (FFmpeg's errors echo the URL
they failed on) and leaves text without URLs untouched. Both are idempotent.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any, overload

__all__ = ["MASK", "is_secret_key", "redact", "redact_data", "redact_url"]

MASK = "***"

# Parameter names that carry credentials, matched case-insensitively against the whole name ("key" must not
# catch "keyframe") or, for the patterns, anywhere in it ("access_token", "X-Amz-Signature", "client_secret").
_SECRET_NAMES = frozenset({"key", "sig", "pwd", "pass", "auth", "code", "jwt", "sid", "psk"})
_SECRET_PATTERN = re.compile(
    r"token|secret|passw|signature|api[-_]?key|apikey|auth|session|credential|private|^x-amz-|^x-goog-",
    re.IGNORECASE,
)
# A URL inside text: a scheme, "://", then anything up to white space or a quote/bracket that ends it.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>`]+")
_TRAILING = re.compile(r"[.,;:!?)\]}]+$")
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*://)([^/?#]*)@")


def is_secret_key(name: str) -> bool:
    """Whether a query (or fragment) parameter called `name` holds a credential."""
    name = name.strip()
    return name.lower() in _SECRET_NAMES or bool(_SECRET_PATTERN.search(name))


def _redact_params(params: str) -> str:
    parts = []
    for part in params.split("&"):
        name, eq, value = part.partition("=")
        parts.append(f"{name}={MASK}" if eq and value and value != MASK and is_secret_key(name) else part)
    return "&".join(parts)


def redact_url(url: str) -> str:
    """`url` with `user:password@` made `***@` and the values of credential-like parameters made `***`.

    Works on the text, not on a parse: a URL that does not parse (a bad port, a stray bracket) is still
    cleaned, and everything else in it (order of parameters, escapes) is kept as it was.
    """
    url = _USERINFO.sub(lambda m: f"{m.group(1)}{MASK}@", url, count=1)
    base, hash_, fragment = url.partition("#")
    path, q, query = base.partition("?")
    if q:
        base = f"{path}?{_redact_params(query)}"
    if hash_ and "=" in fragment:  # OAuth implicit flow: #access_token=…
        fragment = _redact_params(fragment)
    return f"{base}{hash_}{fragment}"


@overload
def redact(text: str) -> str: ...
@overload
def redact(text: None) -> None: ...
def redact(text: str | None) -> str | None:
    """`text` with every URL in it redacted (see `redact_url`); None stays None."""
    if text is None or "://" not in text:
        return text
    return _URL_IN_TEXT.sub(_redact_match, text)


def _redact_match(match: re.Match[str]) -> str:
    # Punctuation that ends a sentence ("…?token=T: Server returned 401") belongs to the text, not the URL.
    url = match.group(0)
    tail = _TRAILING.search(url)
    cut = tail.start() if tail else len(url)
    return redact_url(url[:cut]) + url[cut:]


def redact_data(value: Any) -> Any:
    """`value` with every string in it redacted, through dicts, lists and tuples (an event's payload)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {key: redact_data(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact_data(item) for item in value)
    return value


class RedactingFilter(logging.Filter):
    """A log handler's filter that removes credentials from every record it writes, whoever logged it.

    The call sites redact what they know to be URLs; this catches the rest (a library's message, an
    unexpected exception's text or traceback) before it reaches stderr or a log file.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True

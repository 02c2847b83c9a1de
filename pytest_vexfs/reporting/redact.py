"""Keep secrets out of everything people read: reports, logs, JSON, metric labels, HTML.

Two layers: exact known secrets (passwords in the URLs we were given, secret-looking environment
variables) and patterns (``scheme://user:password@``, ``?token=...``, chat webhook paths).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

MASK = "***"

#: Environment variable names whose values are treated as secrets.
_SECRET_ENV_NAME = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|WEBHOOK|API_?KEY|PRIVATE_KEY|CREDENTIAL)",
                              re.IGNORECASE)
#: Values shorter than this are not masked by exact match: too likely to hit ordinary words.
_MIN_SECRET_LEN = 6

_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^\s:/@]*):(?P<pw>[^\s/@]+)@")
_SECRET_QUERY = re.compile(
    r"(?P<key>[?&;](?:password|passwd|pwd|token|access_token|api_key|apikey|key|secret|sig|signature)=)"
    r"(?P<value>[^&\s#'\"]+)", re.IGNORECASE)
_WEBHOOK = re.compile(
    r"(?P<base>https?://(?:hooks\.slack\.com/(?:services|workflows|triggers)|"
    r"(?:discord(?:app)?\.com)/api/webhooks|outlook\.office(?:365)?\.com/webhook|"
    r"[\w.-]+\.webhook\.office\.com/webhookb2|chat\.googleapis\.com/v1/spaces))/(?P<rest>[^\s'\"<>]+)",
    re.IGNORECASE)
#: Where a long value was cut short (pytest's saferepr, assertion diffs): "http://127.0...bhookSecret42".
_ELLIPSIS = re.compile(r"\.\.\.|\u2026")
_KEYVALUE = re.compile(r"(?P<key>\b(?:password|passwd|secret|token)\s*[=:]\s*)(?P<value>[^\s,;&*'\"]+)",
                       re.IGNORECASE)


def url_password(url: str) -> str | None:
    """The password part of ``url`` (``scheme://user:password@host``), if any."""
    try:
        return urlsplit(url).password
    except ValueError:
        return None


def redact_url(url: str) -> str:
    """``url`` with its password (and secret query parameters) replaced by ``***``."""
    return Redactor().redact(url)


class Redactor:
    """Replaces secrets in text. Create one per run with the secrets known to that run."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str | None) -> None:
        """Remember ``secret`` (a password, a whole webhook URL...) so that it is masked everywhere."""
        if secret and len(secret) >= _MIN_SECRET_LEN:
            self._secrets.add(secret)

    def add_url(self, url: str | None) -> None:
        """Remember the password of ``url`` if it carries one."""
        if url:
            self.add(url_password(url))

    def add_environment(self, environ: Mapping[str, str] | None = None) -> None:
        """Remember the values of secret-looking environment variables (``*_TOKEN``, ``*_PASSWORD``...)."""
        environ = os.environ if environ is None else environ
        for name, value in environ.items():
            if _SECRET_ENV_NAME.search(name):
                self.add(value)
            elif "://" in value:
                self.add_url(value)

    def redact(self, text: str) -> str:
        """``text`` with every known secret and secret-looking pattern masked."""
        if not text:
            return text
        # Longest first, so a secret containing another one is masked whole.
        for secret in sorted(self._secrets, key=len, reverse=True):
            if secret in text:
                text = text.replace(secret, MASK)
        if self._secrets and _ELLIPSIS.search(text):
            text = self._mask_cut_secrets(text)
        text = _URL_USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
        text = _WEBHOOK.sub(lambda m: f"{m['base']}/{MASK}", text)
        text = _SECRET_QUERY.sub(lambda m: f"{m['key']}{MASK}", text)
        text = _KEYVALUE.sub(lambda m: f"{m['key']}{MASK}", text)
        return text

    def _mask_cut_secrets(self, text: str) -> str:
        """Mask what is left of a secret cut by an ellipsis: its tail after one, its head before one
        (at least the minimum secret length of it, so ordinary words are not masked)."""
        spans: list[tuple[int, int]] = []
        for cut in _ELLIPSIS.finditer(text):
            for secret in self._secrets:
                tail = next((len(secret) - k for k in range(1, len(secret) - _MIN_SECRET_LEN + 1)
                             if text.startswith(secret[k:], cut.end())), 0)
                if tail:
                    spans.append((cut.end(), cut.end() + tail))
                head = next((k for k in range(len(secret) - 1, _MIN_SECRET_LEN - 1, -1)
                             if text.endswith(secret[:k], 0, cut.start())), 0)
                if head:
                    spans.append((cut.start() - head, cut.start()))
        merged: list[list[int]] = []
        for start, end in sorted(spans):
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        for start, end in reversed(merged):
            text = text[:start] + MASK + text[end:]
        return text

    def redact_value(self, value: object) -> object:
        """Like :meth:`redact` for strings; other values (numbers, None) are returned unchanged."""
        return self.redact(value) if isinstance(value, str) else value

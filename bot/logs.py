"""Logging set-up that never lets a secret out, even at DEBUG.

discord.py's HTTP client logs request URLs at DEBUG, and interaction and webhook URLs carry their
token in the path; the bot token must never appear either. A filter on every handler rewrites
each record's final text.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

# /interactions/<id>/<token>/callback and /webhooks/<application id>/<token>
_URL_TOKENS = re.compile(r"(/(?:interactions|webhooks)/\d+/)[A-Za-z0-9_.\-]{20,}")
# 'token': '...' in gateway payloads that discord.py logs at DEBUG (INTERACTION_CREATE carries one)
_FIELD_TOKENS = re.compile(r"""(["']token["']\s*:\s*["'])[^"']+""")
REDACTED = "[redacted]"


class RedactSecrets(logging.Filter):
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def redact(self, text: str) -> str:
        text = _URL_TOKENS.sub(lambda m: m.group(1) + REDACTED, text)
        text = _FIELD_TOKENS.sub(lambda m: m.group(1) + REDACTED, text)
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = self.redact(message)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def install_redaction(secrets: Iterable[str] = ()) -> RedactSecrets:
    """Attach the filter to every handler of the root logger (call after configuring them)."""
    redact = RedactSecrets(secrets)
    for handler in logging.getLogger().handlers:
        handler.addFilter(redact)
    return redact

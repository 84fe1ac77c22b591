"""Cleaning what people type before anything reads it."""

from __future__ import annotations

import re
import unicodedata

# Control characters (NUL, escapes, bells) are never meant; line breaks and tabs read as spaces.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Characters that show nothing at all: zero-width space, word joiner, BOM, soft hyphen...
# (zero-width joiners stay: emoji sequences and some scripts need them).
_INVISIBLE = re.compile("[\u00ad\u180e\u200b\u2060-\u2064\ufeff]")
# A model name that is a place on disk (absolute, home, relative, or a checkpoint file) is the
# operator's business: users see its last part.
_PATHLIKE = re.compile(r"^(?:[/~.\\]|[A-Za-z]:[\\/])|\.(?:safetensors|ckpt)$")


def clean_text(text: str) -> str:
    """``text`` without control characters and invisible ones."""
    return _INVISIBLE.sub("", _CONTROL.sub(" ", text))


def is_blank(text: str) -> bool:
    """True when nothing in ``text`` would be seen: only spaces and invisible format marks."""
    return all(c.isspace() or unicodedata.category(c) in ("Cf", "Mn", "Me") for c in text)


def model_label(name: str) -> str:
    """What users are shown of a model's name: a Hub id or catalogue name as it is; of a local
    path, only the file or folder name without its suffix (never the operator's directories)."""
    if not _PATHLIKE.search(name):
        return name
    last = re.split(r"[\\/]", name.rstrip("/\\"))[-1] or name
    return re.sub(r"\.(?:safetensors|ckpt)$", "", last)

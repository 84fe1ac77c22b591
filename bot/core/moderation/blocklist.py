"""Server blocklists: an admin's words and phrases, with ``*`` for any letters within a word.

An entry is normalised like a prompt, so it blocks the spellings that evade it ("dr4g*n" blocks
"dragon", "drаgon" with a Cyrillic "а"), and matched on whole words of the normalised prompt.
An entry written only in Chinese, Japanese, Korean or Arabic letters is also found inside the
prompt's text in those scripts, where words have no spaces around them ("裸体" in "裸体女人").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

from bot.core.errors import InvalidInput
from bot.core.moderation.fold import native_text
from bot.core.moderation.normalise import normalise


class BlocklistTermInvalid(InvalidInput):
    """A server blocklist entry that would match nothing or everything."""


_WILDCARD = "qxzwildcardzxq"  # letters, so normalise() keeps it in place inside the word
_WORD_CHARS = "[a-z0-9]"


@dataclass(frozen=True)
class BlockPattern:
    """A compiled server blocklist entry. ``*`` is any run of letters or digits within a word."""

    term: str  # as the admin typed it
    normalised: str  # as matched, "*" included
    regex: re.Pattern[str] = field(repr=False, compare=False)
    # An entry of native-script letters only, as they are found in fold.native_text ("" else).
    native: str = ""

    def matches_normalised(self, normalised_text: str) -> bool:
        return self.regex.search(normalised_text) is not None

    def matches_native(self, letters: str) -> bool:
        """Whether the entry is in ``letters``, a prompt's :func:`fold.native_text`."""
        return bool(self.native) and self.native in letters

    def matches(self, text: str) -> bool:
        return self.matches_normalised(normalise(text)) or self.matches_native(native_text(text))


def compile_blocklist_term(term: str) -> BlockPattern:
    """Compile a plain blocklist term: words, phrases, and ``*`` wildcards; nothing else is special.

    The term is normalised like a prompt, so "Red  Dress" blocks "a red dress" and "dr4g*n"
    blocks "dragon". Punctuation is dropped, so "c++" blocks the word "c".
    """
    if not term.strip():
        raise BlocklistTermInvalid("The blocklist term is empty: give a word or phrase to block.")
    normalised = normalise(term.replace("*", _WILDCARD))
    normalised = re.sub(f"(?:{_WILDCARD})+", _WILDCARD, normalised)  # "**" is one wildcard
    if not normalised.replace(_WILDCARD, "").strip():
        raise BlocklistTermInvalid(
            f"The blocklist term {term.strip()!r} has no letters or digits to match: "
            "add a word (with * for any letters inside it, if you like)."
        )
    pieces = [re.escape(p) for p in normalised.split(_WILDCARD)]
    # Glob matching without backtracking blow-ups: each middle piece is taken at its first
    # occurrence, atomically (Python 3.11), and only the last wildcard may backtrack.
    first = pieces[0]
    # The word-start check goes after a leading literal ("drag(?<![a-z0-9]drag)..."), so the
    # regex engine can jump between occurrences of the literal instead of trying every position.
    pattern = f"{first}(?<![a-z0-9]{first})" if first else "(?<![a-z0-9])"
    for middle in pieces[1:-1]:
        pattern += f"(?>{_WORD_CHARS}*?{middle})"
    if len(pieces) > 1:
        pattern += f"{_WORD_CHARS}*{pieces[-1]}"
    regex = re.compile(f"{pattern}(?![a-z0-9])")
    only_native = not normalise(term, native=False)
    return BlockPattern(
        term=term,
        normalised=normalised.replace(_WILDCARD, "*"),
        regex=regex,
        native=native_text(term.replace("*", " ")).strip() if only_native else "",
    )


@lru_cache(maxsize=4096)
def compiled(term: str) -> BlockPattern | None:
    try:
        return compile_blocklist_term(term)
    except BlocklistTermInvalid:
        return None  # admins are told when they add a term; a bad one stored never matches

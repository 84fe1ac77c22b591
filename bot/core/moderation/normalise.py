"""normalise(): what the user typed as plain lowercase ASCII words, the usual evasions undone.

Look-alike letters from other scripts, fullwidth and styled letters, invisible characters and
Zalgo marks are folded by :mod:`bot.core.moderation.fold`; here the words are cut out of the text
and prompt-weighting syntax, leetspeak, stretched and spaced-out letters are read back, each
towards a word of the term lists where one fits.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Iterator
from functools import lru_cache

from bot.core.moderation.fold import split_elisions, to_ascii
from bot.core.moderation.terms import lexicons

# A weight after a word or before a closing bracket: "(nude:1.4)", "nude:0.8", "<lora:x_v2:0.8>".
# "3:2" stays.
_NUMBER = r"[+-]?(?:\d++(?:\.\d*+)?|\.\d++)"  # possessive: no backtracking on long digit runs
_WEIGHT = re.compile(rf"(?<=[a-z)\]}}>])\s*+:\s*+{_NUMBER}|:\s*+{_NUMBER}\s*+(?=[)\]}}>])")
_TOKEN = re.compile(r"[a-z0-9@$!|]+")
_SYMBOLS = re.compile(r"[@$!|]+")
_DIGIT_OR_SYMBOL = re.compile(r"[0-9@$!|]")
# "4k", "1080p", "35mm", "1920s", "14yo", "ak47", "f16", "1024x768": digits and letters that are
# not leetspeak. Leetspeak interleaves them ("n4k3d"), so it never looks like these.
_TECHNICAL = re.compile(r"\d+[a-z]+|[a-z]+\d+|\d+x\d+")
_TRIPLE = re.compile(r"(.)\1\1")
_STRETCHED = re.compile(r"(.)\1{2,}")
_REPEATED = re.compile(r"(.)\1+")

# Leetspeak: the letters each digit or symbol may stand for. The first is the default reading.
_LEET: dict[str, tuple[str, ...]] = {
    "0": ("o",),
    "1": ("i", "l"),
    "2": ("z",),
    "3": ("e",),
    "4": ("a",),
    "5": ("s",),
    "6": ("g", "b"),
    "7": ("t",),
    "8": ("b",),
    "9": ("g",),
    "@": ("a",),
    "$": ("s",),
    "!": ("i", ""),  # "!" may also be plain punctuation: "nude!"
    "|": ("l", "i", ""),
}
# For spelled-out runs: each character as itself first, then its leetspeak readings.
_SPELLINGS = {char: (char, *letters) for char, letters in _LEET.items()}
_DEFAULT_LEET = str.maketrans({k: v[0] for k, v in _LEET.items() if k.isdigit()})
_MAX_READINGS = 64  # beyond this many combinations only the default reading is tried
# Spelled-out runs longer than this are joined without looking for words in them (cost bound).
_MAX_SPELLED_RUN = 48


def _squeezed(word: str) -> Iterable[str]:
    """Readings of a word with stretched letters ("naaaked", "seeex").

    Only runs of three or more count: undoing doubled letters turns innocent words into listed
    ones ("rapped", "seeks").
    """
    if _TRIPLE.search(word):
        yield _STRETCHED.sub(r"\1\1", word)
        yield _REPEATED.sub(r"\1", word)


def _readings(token: str) -> Iterable[str]:
    """The token itself, then its leetspeak readings (the default reading first)."""
    yield token
    if not _DIGIT_OR_SYMBOL.search(token):
        return
    options = [_LEET.get(c, (c,)) for c in token]
    count = 1
    for choice in options:
        count *= len(choice)
    if count > _MAX_READINGS:
        yield "".join(choice[0] for choice in options)
        return
    for letters in itertools.product(*options):
        yield "".join(letters)


def _decode(token: str) -> str | None:
    """The listed word ``token`` spells in leetspeak or with stretched letters, if any."""
    vocabulary = lexicons().vocabulary
    if token in vocabulary:
        return token
    if token.isalpha() and not _TRIPLE.search(token):
        return None  # the common case, kept cheap
    for reading in _readings(token):
        if reading in vocabulary:
            return reading
        for squeezed in _squeezed(reading):
            if squeezed in vocabulary:
                return squeezed
    return None


@lru_cache(maxsize=16_384)  # prompts repeat their words, and style words recur across prompts
def _fold_word(word: str) -> str:
    """A word of letters and digits: a listed word it spells, or itself, or its default leet."""
    if word in lexicons().vocabulary or (word.isalpha() and not _TRIPLE.search(word)):
        return word  # the common case, kept cheap
    decoded = _decode(word)
    if decoded is not None:
        return decoded
    if word.isalpha() or word.isdigit() or _TECHNICAL.fullmatch(word):
        return word
    return word.translate(_DEFAULT_LEET)


def _loose(chars: list[str]) -> list[str]:
    """Single characters that spell no listed word: one word if they look spelled out."""
    alnum = [c for c in chars if c.isalnum()]
    if len(chars) >= 3 and sum(c.isalpha() for c in chars) >= 2:
        return [_fold_word("".join(alnum))]
    return alnum


def _words_at(chars: str, start: int, stop: int) -> Iterator[tuple[int, str]]:
    """``(end, word)`` for each listed word that ``chars[start:end]`` spells, leetspeak included.

    The readings are grown one character at a time and pruned to prefixes of listed words, so
    the work stays small however many leetspeak characters the run holds. Words of two letters
    are left out: the term lists hold many ("nu", "di", "la" from other languages' phrases), and
    they would cut a spelled-out word apart ("n u d e n u d e" as "nu denude").
    """
    lexicon = lexicons()
    readings = [""]
    for end in range(start + 1, stop + 1):
        char = chars[end - 1]
        options = _SPELLINGS.get(char, (char,))
        grown = (reading + option for reading in readings for option in options)
        readings = list(dict.fromkeys(r for r in grown if r in lexicon.prefixes))
        if not readings:
            return
        word = next((r for r in readings if len(r) > 2 and r in lexicon.vocabulary), None)
        if word is not None:
            yield end, word


@lru_cache(maxsize=4096)
def _collapse(chars: str) -> tuple[str, ...]:
    """Single characters in a row ("n u d e", "n.u.d.e"): the listed words they spell.

    The words are found by dynamic programming over the run, covering as many characters as
    possible, so "c h i l d n u d e" is two words and "a n u d e" keeps its article apart.
    """
    run = list(chars)
    if len(run) < 3 or sum(c.isalpha() for c in run) < 2:
        return tuple(c for c in run if c.isalnum())
    if len(run) > _MAX_SPELLED_RUN:
        return tuple(_loose(run))
    n = len(run)
    longest = lexicons().max_spelled_word
    # covered[i]: most characters of run[:i] inside listed words; back[i]: how it was reached.
    covered = [0] * (n + 1)
    back: list[tuple[int, str | None]] = [(0, None)] * (n + 1)
    for i in range(n):
        if covered[i] >= covered[i + 1]:
            covered[i + 1], back[i + 1] = covered[i], (i, None)
        for j, word in _words_at(chars, i, min(n, i + longest)):
            if covered[i] + j - i > covered[j]:
                covered[j], back[j] = covered[i] + j - i, (i, word)
    pieces: list[str | list[str]] = []
    j = n
    while j > 0:
        i, decoded = back[j]
        pieces.append(decoded if decoded is not None else run[i:j])
        j = i
    words: list[str] = []
    loose: list[str] = []
    for piece in reversed(pieces):
        if isinstance(piece, str):
            words += _loose(loose)
            loose = []
            words.append(piece)
        else:
            loose += piece
    return (*words, *_loose(loose))


def _fold_tokens(tokens: list[str]) -> list[str]:
    # Symbols inside words are leetspeak ("n@ked", "$ex") or punctuation ("cat|dog", "wow!").
    split: list[str] = []
    for token in tokens:
        if len(token) == 1 or not _SYMBOLS.search(token):
            split.append(token)
            continue
        decoded = _decode(token) if any(c.isalpha() for c in token) else None
        if decoded is not None:
            split.append(decoded)
        else:
            split += [part for part in _SYMBOLS.split(token) if part]
    words: list[str] = []
    run: list[str] = []
    for token in split:
        if len(token) == 1:
            run.append(token)
            continue
        if run:
            words += _collapse("".join(run))
            run = []
        words.append(_fold_word(token))
    if run:
        words += _collapse("".join(run))
    return words


def normalise(text: str, *, native: bool = True) -> str:
    """Plain lowercase ASCII words separated by single spaces, evasions undone.

    ``native=False`` leaves out the letters of the scripts the policy matches in their own form
    (Chinese, Japanese, Korean, Arabic: see :func:`bot.core.moderation.fold.native_text`);
    by default they are transliterated, so that a server's blocklist can name them.

    In order: NFKC; zero-width and other format characters (Unicode category Cf) and combining
    marks dropped; Cyrillic/Greek look-alikes in Latin words read as the Latin letters; casefold;
    anyascii folding of everything else; prompt weights removed ("(nude:1.4)", "((naked))",
    "[nsfw]", "word++" leave the words); French and Italian elisions split ("l'enfant" →
    "l enfant"), other apostrophes joined ("kid's" → "kids"); leetspeak read in
    words that mix letters with digits or @ $ ! | ("n4k3d", "$ex") — towards a listed word where
    one fits, plain numbers ("1920", "3:2") and technical tokens ("4k", "35mm") untouched;
    stretched letters ("naaaked") squeezed into a listed word; single letters in a row ("n u d e",
    "n.u.d.e", "n-u-d-e", "n_u_d_e") joined into one word.
    """
    text = split_elisions(to_ascii(text, native=native), lexicons().vocabulary)
    text = _WEIGHT.sub(" ", text)
    return " ".join(_fold_tokens(_TOKEN.findall(text)))

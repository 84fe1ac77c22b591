"""Unicode folding: what a prompt's letters mean, whatever script or style they were typed in.

Two views of the same text:

* :func:`to_ascii`: lowercase ASCII, for the languages written with spaces between words (the
  Latin-script ones, and Russian through its transliteration). Styled and look-alike letters
  become the plain Latin ones, accents and invisible characters go, everything else goes through
  anyascii ("голая" → "golaya", "çıplak" → "ciplak").
* :func:`native_text`: the letters of the scripts matched in their own form (Chinese characters,
  kana, Hangul, Arabic), where transliteration loses too much: Japanese and Chinese have no spaces
  to find words by, Hangul's romanisation glues particles to words, and Arabic's drops the vowels,
  so its short consonant skeletons would collide with other languages' words.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Callable

from anyascii import anyascii

# Latin look-alikes from Cyrillic, Greek, Armenian and Cherokee. anyascii transliterates (Cyrillic
# "р" → "r", "с" → "s"), but in an evasion the letter means the Latin one it looks like. They are
# read as Latin in a word that mixes them with Latin letters ("nаkеd"), or in a word made only of
# the closest look-alikes ("ѕех"); ordinary Russian or Greek words are left to anyascii.
_CLOSE_LOOKALIKES = {
    **dict(zip("АВЕКМНОРСТУХЅІЈԀԚԜҺӀ", "ABEKMHOPCTYXSIJDQWHI", strict=True)),
    **dict(zip("аеорсухѕіјԁԛԝһӏ", "aeopcyxsijdqwhl", strict=True)),
    **dict(zip("ΑΒΕΖΗΙΚΜΝΟΡΤΥΧ", "ABEZHIKMNOPTYX", strict=True)),
    **dict(zip("οα", "oa", strict=True)),
    **dict(zip("օ", "o", strict=True)),
    **dict(zip("ᎪᏴᏟᎠᎬᏀᎻᎫᏦᏞᎷᏃᏢᏒᏚᎢᏙᏔᎳ", "ABCDEGHJKLMZPRSTVWW", strict=True)),
}
# Looser resemblances, trusted only next to Latin letters ("пude", "nυde").
_LOOSE_LOOKALIKES = {
    **dict(zip("вкмнптгьи", "bkmhntrbu", strict=True)),
    **dict(zip("βγδεηικμνρτυχωϲ", "bydenikuvptuxwc", strict=True)),
    **dict(zip("սհոցզ", "uhngq", strict=True)),
}
_HOMOGLYPHS = str.maketrans({**_CLOSE_LOOKALIKES, **_LOOSE_LOOKALIKES})
_LOOKALIKES = frozenset(_CLOSE_LOOKALIKES) | frozenset(_LOOSE_LOOKALIKES)
_CLOSE = frozenset(_CLOSE_LOOKALIKES)
# A run of letters holding at least one look-alike. It starts only at the start of a run, so a
# long run without one is scanned once, not once per position.
_LOOKALIKE_RUN = re.compile(
    r"(?<![^\W\d_])[^\W\d_]*?[" + "".join(sorted(_LOOKALIKES)) + r"][^\W\d_]*+"
)
_ASCII_LETTERS = frozenset(string.ascii_letters)
_DROPPED_CATEGORIES = frozenset({"Cf", "Mn", "Me"})  # invisible format chars, combining marks


class _CharTable(dict[int, str]):
    """A ``str.translate`` table filled in on first sight of each character.

    translate() looks cached characters up in C, which keeps long non-Latin prompts fast; the
    cap bounds memory against a stream of rare characters.
    """

    _CAP = 50_000

    def __init__(self, fold: Callable[[str], str]) -> None:
        super().__init__()
        self._fold = fold

    def __missing__(self, codepoint: int) -> str:
        folded = self._fold(chr(codepoint))
        if len(self) < self._CAP:
            self[codepoint] = folded
        return folded


def _drop_invisible(char: str) -> str:
    # Kana voicing marks are combining too, but they change the letter (ホ→ポ): NFC puts them back.
    if char in "\u3099\u309a" or unicodedata.category(char) not in _DROPPED_CATEGORIES:
        return char
    return ""


# Invisible format characters (zero-width space and joiners, word joiner, BOM, soft hyphen) and
# combining marks (accents once decomposed, Zalgo, Arabic vowel signs) are dropped.
_DROP_INVISIBLE = _CharTable(_drop_invisible)
_TO_ASCII = _CharTable(anyascii)


def _plain(text: str) -> str:
    """NFKC (fullwidth, mathematical, circled letters, ligatures, Arabic presentation forms),
    then accents, marks and invisible characters dropped (decomposed first so they separate)."""
    text = unicodedata.normalize("NFKC", text)
    text = unicodedata.normalize("NFD", text).translate(_DROP_INVISIBLE)
    return unicodedata.normalize("NFC", text)


def to_ascii(text: str, *, native: bool = True) -> str:
    """Styled, look-alike and accented letters to lowercase ASCII; invisible characters gone.

    With ``native=False`` the letters of the natively matched scripts become spaces instead of
    their transliteration: the policy reads them in :func:`native_text`, and their romanisation
    would only collide with other languages' words ("ヌード" → "nudo", Italian for naked).
    """
    if text.isascii():
        return text.lower()
    text = _LOOKALIKE_RUN.sub(_unmask_lookalikes, _plain(text))
    if not native:
        text = _NATIVE_RUN.sub(" ", text)
    return text.casefold().translate(_TO_ASCII).lower()


def _unmask_lookalikes(match: re.Match[str]) -> str:
    run = match.group(0)
    letters = set(run)
    if not letters.isdisjoint(_ASCII_LETTERS) or letters <= _CLOSE:
        return run.translate(_HOMOGLYPHS)
    return run  # ordinary Cyrillic or Greek text: anyascii transliterates it


# ---------------------------------------------------------------------------------------------
# Native scripts

# Chinese characters (with 々 〆 〇) and kana, ー included, the middle dot ・ not (a separator).
_HAN_KANA = (
    "\u3005-\u3007\u303b\u3041-\u3096\u309d-\u309f\u30a1-\u30fa\u30fc-\u30ff\u31f0-\u31ff"
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
)
_HANGUL = "\u1100-\u11ff\u3131-\u318e\uac00-\ud7a3"
# Arabic letters (Persian and Urdu ones included), without digits, punctuation or the tatweel.
_ARABIC = "\u0620-\u063f\u0641-\u064a\u066e\u066f\u0671-\u06d3\u06d5\u06ee\u06ef\u06fa-\u06fc\u06ff"
_NATIVE_LETTERS = f"{_HAN_KANA}{_HANGUL}{_ARABIC}"
# Digits stay too: ages are written with them ("12歳", "12살").
_NOT_NATIVE = re.compile(f"[^0-9{_NATIVE_LETTERS}]+")
_NATIVE_PHRASE = re.compile(f"[0-9{_NATIVE_LETTERS}]+(?: [0-9{_NATIVE_LETTERS}]+)*")
_HAS_NATIVE_LETTER = re.compile(f"[{_NATIVE_LETTERS}]")
_NATIVE_RUN = re.compile(f"[{_NATIVE_LETTERS}\u0640]+")
# Japanese and Chinese put no spaces between words, so spaces, dots, dashes or stars between two
# of their characters are an evasion ("全 裸", "全.裸"), or a separator inside a name
# ("セックス・ピストルズ"). Their commas and full stops ("、", "。") do end a word.
_HAN_KANA_GAP = re.compile(f"(?<=[{_HAN_KANA}])[\\s._*~+\\-・･]+(?=[{_HAN_KANA}])")
# The tatweel only stretches an Arabic letter ("عـــارية"): dropped. Arabic-Indic digits
# ("١٢") read as ASCII ones (NFKC leaves them).
_NATIVE_FOLD: dict[int, int | None] = {0x0640: None}
_NATIVE_FOLD |= {0x0660 + n: ord("0") + n for n in range(10)}
_NATIVE_FOLD |= {0x06F0 + n: ord("0") + n for n in range(10)}


def fold_native(text: str) -> str:
    """A native-script term or text in the form terms are matched in: NFKC, marks dropped,
    casefolded, no tatweel, ASCII digits.

    Katakana stay apart from hiragana: read as hiragana, "エロ" would match inside the
    imperative of every verb ending in "-eru" ("かんがえろ": think!)."""
    return _plain(text).casefold().translate(_NATIVE_FOLD)


def is_native_phrase(text: str) -> bool:
    """Whether ``text`` is native-script words with single spaces between them."""
    return _NATIVE_PHRASE.fullmatch(text) is not None


def native_text(text: str) -> str:
    """The native-script letters of ``text``, every other run of characters one space, with a
    space at each end so that the first and last words have a boundary; "" when there are none.
    """
    if text.isascii():
        return ""
    folded = fold_native(text)
    if _HAS_NATIVE_LETTER.search(folded) is None:
        return ""
    letters = _NOT_NATIVE.sub(" ", _HAN_KANA_GAP.sub("", folded)).strip()
    return f" {letters} "


# ---------------------------------------------------------------------------------------------
# Words

# French and Italian elide an article or preposition before a vowel: "l'enfant", "d'une",
# "un'adolescente", "dell'uomo". Joining them as in English ("kid's" → "kids") would hide the noun.
_ELISION = re.compile(
    r"\b(?P<article>[cdjlmnst]|qu|jusqu|lorsqu|puisqu|un|dell|dall|nell|sull|all|quest|quell)"
    r"['`](?P<word>[a-z]{2,})"
)
_APOSTROPHES = str.maketrans("", "", "'`")
_WORD = re.compile(r"[a-z0-9]+")


def split_elisions(text: str, listed: frozenset[str] = frozenset()) -> str:
    """Lowercase ASCII ``text`` with elided articles apart ("l'enfant" → "l enfant"), unless
    joined they spell a listed word (the evasion "n'ude"), and other apostrophes joined."""

    def split(match: re.Match[str]) -> str:
        article, word = match.group("article", "word")
        return article + word if article + word in listed else f"{article} {word}"

    return _ELISION.sub(split, text).translate(_APOSTROPHES)


def ascii_words(text: str) -> str:
    """``text`` as the words :func:`bot.core.moderation.normalise` makes of it, without decoding
    evasions: how the term lists are written down for matching."""
    return " ".join(_WORD.findall(split_elisions(to_ascii(text))))

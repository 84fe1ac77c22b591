"""The term lists: one TOML file a language in ``terms/``, read once and turned into lexicons.

A file holds:

* ``name`` (the language) and ``match``, how its terms are found:
  ``"words"``: folded to ASCII words (:func:`fold.ascii_words`) and matched as whole words and
  phrases in the normalised prompt; ``"substrings"``: native script, matched anywhere (Japanese,
  Chinese: no spaces between words); ``"word_starts"``: native script, matched at the start of a
  word, so particles and suffixes may follow (Korean, Arabic). In ``word_starts`` files a term
  ending in ``$`` must also end the word, and ``prefixes`` lists clitics that may be glued to a
  term's front (Arabic "و", "ال", ...).
* ``[lists]``: named lists, used in entries as ``{@name}``.
* ``[terms]``: one list a group (see :class:`Group`). Every entry may hold alternatives in braces:
  ``"nud{e,es,ity}"`` is three entries, ``"{,her,his} clothes"`` three more ("" leaves a part
  out), ``"{0..17} yo"`` eighteen, ``"{@verbs} {@garments}"`` every pair of two named lists.

A phrase listed in several groups belongs to the first in :class:`Group`'s order, whatever the
language: a safe phrase in one language keeps its words from counting in another.
"""

from __future__ import annotations

import itertools
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from functools import lru_cache
from importlib import resources

from bot.core.moderation.fold import ascii_words, fold_native, is_native_phrase


class Group(Enum):
    """What a listed phrase decides, in order of precedence."""

    SAFE = "safe"  # innocent phrases holding a listed word ("naked eye"): their words are skipped
    INHERENT = "inherent"  # sexualised minors by themselves ("lolicon") → MINORS
    EXPLICIT = "explicit"  # nudity and sexual acts → NSFW; with a minor → MINORS; photo → hard
    MINOR = "minor"  # a child in the picture; alone it passes
    SUGGESTIVE = "suggestive"  # sexualising, not explicit: refused with a minor or a photo
    # Harmless in text ("x-ray", "swimsuit"), undressing on a photo. An explicit word inside one
    # counts as it: "uomo a torso nudo" is a shirtless man, not nudity.
    PHOTO_ONLY = "photo_only"
    NEGATIVE_SAFE = "negative_safe"  # innocent phrases in a negative prompt ("clothes hanger")
    NEGATIVE_CLOTHING = "negative_clothing"  # banned in a negative prompt, they ask for nudity


_PROMPT_GROUPS = (
    Group.SAFE,
    Group.INHERENT,
    Group.EXPLICIT,
    Group.MINOR,
    Group.SUGGESTIVE,
    Group.PHOTO_ONLY,
)
_NEGATIVE_GROUPS = (Group.NEGATIVE_SAFE, Group.NEGATIVE_CLOTHING)
_SKIPPED = frozenset({Group.SAFE, Group.NEGATIVE_SAFE})
_MATCH_MODES = ("words", "substrings", "word_starts")
_WORD_END = "$"
# Digits and the numerals of Chinese and Japanese ("十二歳", "二十歳").
_NUMERALS = frozenset("0123456789〇零一二三四五六七八九十百千两兩")


@dataclass(frozen=True)
class Lexicon:
    """Phrases → group, with the phrase lengths (longest first) that start with each token.

    ``mode`` is how its language files match (see the module's docs): in ``"words"`` the tokens
    are words; otherwise they are the characters of :func:`fold.native_text`, and phrases start
    anywhere (``"substrings"``) or only after a space (``"word_starts"``). In characters, a
    phrase that starts with a numeral never starts inside a number: "0歳" (0 years old) is not
    in "20歳".
    """

    phrases: dict[str, Group]
    starts: dict[str, tuple[int, ...]]
    mode: str = "words"

    @classmethod
    def build(cls, groups: Iterable[tuple[Group, Iterable[str]]], mode: str = "words") -> Lexicon:
        phrases: dict[str, Group] = {}
        for group, entries in groups:  # earlier groups win a phrase listed twice
            for phrase in entries:
                phrases.setdefault(phrase, group)
        lengths: dict[str, set[int]] = {}
        for phrase in phrases:
            tokens = phrase.split(" ") if mode == "words" else phrase
            lengths.setdefault(tokens[0], set()).add(len(tokens))
        starts = {t: tuple(sorted(ns, reverse=True)) for t, ns in lengths.items()}
        return cls(phrases, starts, mode)

    def scan(self, tokens: Sequence[str]) -> list[tuple[Group, str]]:
        """Every listed phrase in ``tokens`` (words, or a native text), longest first at each
        position; safe ones skipped: the tokens of a safe phrase count for nothing else. An
        explicit word inside a photo-only phrase counts as that phrase: "a torso nudo"
        (bare-chested) is not nudity."""
        sep = " " if self.mode == "words" else ""
        word_starts = self.mode == "word_starts"
        hits: list[tuple[Group, str]] = []
        shield = 0  # the end of the last photo-only phrase
        i, n = 0, len(tokens)
        while i < n:
            found: tuple[Group, str, int] | None = None
            if not (word_starts and i > 0 and tokens[i - 1] != " "):
                for length in self.starts.get(tokens[i], ()):
                    if i + length <= n:
                        phrase = sep.join(tokens[i : i + length])
                        group = self.phrases.get(phrase)
                        if group is not None and not self._inside_number(phrase, tokens, i):
                            found = (group, phrase, length)
                            break
            if found is None:
                i += 1
            elif found[0] in _SKIPPED:
                i += found[2]
            else:
                if found[0] is Group.PHOTO_ONLY:
                    shield = max(shield, i + found[2])
                if not (found[0] is Group.EXPLICIT and i + found[2] <= shield):
                    hits.append((found[0], found[1]))
                i += 1
        return hits

    def _inside_number(self, phrase: str, tokens: Sequence[str], i: int) -> bool:
        return (
            self.mode == "substrings"
            and i > 0
            and phrase[0] in _NUMERALS
            and tokens[i - 1] in _NUMERALS
        )


@dataclass(frozen=True)
class LexiconSet:
    """The lexicons of one purpose (the prompt, or the negative prompt), one a match mode."""

    words: Lexicon  # ASCII words of the normalised prompt
    substrings: Lexicon  # native-script text (fold.native_text), anywhere: ja, zh
    word_starts: Lexicon  # native-script text, at word starts: ko, ar

    @property
    def native(self) -> tuple[Lexicon, Lexicon]:
        return (self.substrings, self.word_starts)


@dataclass(frozen=True)
class Language:
    """One file's terms, expanded and folded, by group."""

    code: str  # the file's name: "en", "pt", "zh"
    name: str
    match: str
    phrases: dict[Group, frozenset[str]] = field(repr=False)


@dataclass(frozen=True)
class Lexicons:
    """All languages together: a prompt is checked against every language at once, since
    nobody says which one they type in, and prompts mix them."""

    languages: tuple[Language, ...]
    prompt: LexiconSet
    negative: LexiconSet
    # Every word of every listed ASCII phrase: leetspeak and spaced-out letters are decoded
    # towards these.
    vocabulary: frozenset[str]
    prefixes: frozenset[str]  # every prefix of a vocabulary word, for the spelled-out search
    max_spelled_word: int


# ---------------------------------------------------------------------------------------------
# Reading the files

_BRACES = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"(\d+)\.\.(\d+)")


class _Expander:
    """Brace alternatives, ``{a..b}`` ranges and ``{@list}`` references, expanded."""

    def __init__(self, lists: Mapping[str, Sequence[str]], source: str) -> None:
        self._lists = lists
        self._source = source
        self._expanded: dict[str, list[str]] = {}
        self._expanding: set[str] = set()

    def _named(self, name: str) -> list[str]:
        if name not in self._lists:
            raise ValueError(f"{self._source}: no list named {name!r} in [lists]")
        if name in self._expanding:
            raise ValueError(f"{self._source}: list {name!r} refers to itself")
        if name not in self._expanded:
            self._expanding.add(name)
            self._expanded[name] = [e for entry in self._lists[name] for e in self.expand(entry)]
            self._expanding.discard(name)
        return self._expanded[name]

    def _options(self, braces: str) -> list[str]:
        options: list[str] = []
        for option in braces.split(","):
            option = option.strip()
            numbers = _RANGE.fullmatch(option)
            if numbers is not None:
                first, last = int(numbers.group(1)), int(numbers.group(2))
                options += [str(n) for n in range(first, last + 1)]
            elif option.startswith("@"):
                options += self._named(option[1:])
            else:
                options.append(option)
        return options

    def expand(self, entry: str) -> list[str]:
        parts = _BRACES.split(entry)  # literal, alternatives, literal, ...
        if "{" in "".join(parts[::2]) or "}" in "".join(parts[::2]):
            raise ValueError(f"{self._source}: unbalanced or nested braces in {entry!r}")
        choices = [[part] if i % 2 == 0 else self._options(part) for i, part in enumerate(parts)]
        # Empty alternatives leave double spaces behind: one space between words.
        return [" ".join("".join(choice).split()) for choice in itertools.product(*choices)]


def _fold(entry: str, match: str, source: str) -> str:
    if match != "word_starts" and _WORD_END in entry:
        raise ValueError(f"{source}: {entry!r}: '$' (end of word) needs match = 'word_starts'")
    if match == "words":
        folded = ascii_words(entry)
    else:
        ends_word = match == "word_starts" and entry.endswith(_WORD_END)
        folded = fold_native(entry.removesuffix(_WORD_END) if ends_word else entry)
        if match == "substrings":
            folded = folded.replace(" ", "")
        if not is_native_phrase(folded):
            raise ValueError(f"{source}: {entry!r} holds letters of no native script")
        folded += " " if ends_word else ""
    if not folded.strip():
        raise ValueError(f"{source}: {entry!r} has nothing to match")
    return folded


def parse_language(code: str, text: str) -> Language:
    """One terms file, ``text``, checked, expanded and folded (``code``: its name)."""
    source = f"terms/{code}.toml"
    data = tomllib.loads(text)
    unknown = data.keys() - {"name", "match", "prefixes", "lists", "terms"}
    unknown_groups = data.get("terms", {}).keys() - {g.value for g in Group}
    if unknown or unknown_groups:
        raise ValueError(f"{source}: unknown keys {sorted(unknown | unknown_groups)}")
    match = data.get("match", "words")
    if match not in _MATCH_MODES:
        raise ValueError(f"{source}: match must be one of {_MATCH_MODES}, not {match!r}")
    prefixes = ["", *data.get("prefixes", [])]
    if len(prefixes) > 1 and match != "word_starts":
        raise ValueError(f"{source}: prefixes only apply to match = 'word_starts'")
    expander = _Expander(data.get("lists", {}), source)
    phrases: dict[Group, frozenset[str]] = {}
    for group in Group:
        entries = data.get("terms", {}).get(group.value, [])
        expanded = [e for entry in entries for e in expander.expand(entry)]
        phrases[group] = frozenset(
            _fold(prefix + entry, match, source) for entry in expanded for prefix in prefixes
        )
    return Language(code=code, name=data.get("name", code), match=match, phrases=phrases)


def _lexicons(languages: Sequence[Language], groups: Sequence[Group]) -> LexiconSet:
    def build(mode: str) -> Lexicon:
        chosen = [lang for lang in languages if lang.match == mode]
        entries = [(g, sorted(p for lang in chosen for p in lang.phrases[g])) for g in groups]
        return Lexicon.build(entries, mode)

    return LexiconSet(build("words"), build("substrings"), build("word_starts"))


@lru_cache(maxsize=1)
def lexicons() -> Lexicons:
    """Every language's terms, read from the package's ``terms/*.toml`` on first use."""
    folder = resources.files("bot.core.moderation") / "terms"
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".toml")), key=lambda f: f.name)
    languages = tuple(
        parse_language(f.name.removesuffix(".toml"), f.read_text(encoding="utf-8")) for f in files
    )
    prompt = _lexicons(languages, _PROMPT_GROUPS)
    negative = _lexicons(languages, _NEGATIVE_GROUPS)
    vocabulary = frozenset(
        word
        for lexicon in (prompt.words, negative.words)
        for phrase in lexicon.phrases
        for word in phrase.split(" ")
        if len(word) > 1
    )
    return Lexicons(
        languages=languages,
        prompt=prompt,
        negative=negative,
        vocabulary=vocabulary,
        prefixes=frozenset(word[:end] for word in vocabulary for end in range(len(word) + 1)),
        # Room for the longest listed word, plus symbols that may read as nothing ("|", "!").
        max_spelled_word=max(len(word) for word in vocabulary) + 4,
    )

"""Prompt moderation: a pure policy over normalised text.

Two steps:

* :func:`normalise` turns what the user typed into plain lowercase ASCII words, undoing the usual
  evasions (look-alike letters from other scripts, fullwidth and styled letters, invisible
  characters, Zalgo marks, prompt-weighting syntax, leetspeak, spaced-out letters);
* :func:`check_prompt` looks the words up in the term lists below and returns a :class:`Verdict`.

Matching is on whole words and phrases (n-gram look-ups in a dict, no regex alternation), so
"Scunthorpe", "analysis" or "cocktail" never match, and the cost is linear in the prompt.

The term lists, and what each decides:

* ``_EXPLICIT``: nudity and sexual acts. Alone → :attr:`Category.NSFW`.
* ``_SUGGESTIVE``: sexualising but not explicit ("sexy", "lingerie", "bikini"). Alone they pass;
  with a minor term → :attr:`Category.MINORS`; with an uploaded photo →
  :attr:`Category.UNDRESS_PHOTO`.
* ``_PHOTO_ONLY``: harmless in a text prompt ("x-ray", "swimsuit", "shirtless"), but with an
  uploaded photo of a person they ask to undress it → :attr:`Category.UNDRESS_PHOTO`.
* ``_MINOR``: words that put a child in the picture ("child", "teen", "schoolgirl", "12 yo").
  Alone they pass ("children playing in a park"); with any explicit or suggestive term anywhere
  in the prompt → :attr:`Category.MINORS`.
* ``_INHERENT``: terms that mean sexualised minors on their own ("lolicon") → MINORS.
* ``_SAFE``: homonyms that contain a listed word but are innocent ("naked eye", "kid goat",
  "bikini atoll", "cum laude", "blue tit", "nude lipstick"). They are skipped before the others.

Order of the checks: MINORS, then UNDRESS_PHOTO (both hard: no setting turns them off), then
NSFW (the server rule and channel decide), then the server's own blocklist. A prompt that breaks
several rules is answered with the first.

The negative prompt is what the user does *not* want, so its terms never count as a request:
``--no nudity, children`` passes. One exception: a negative prompt that bans clothing
(``--no clothes``, ``--no censored``) is the well-known way to ask a model for nudity, so it
counts as an explicit term. Blocklist entries apply to both.

Deliberate choices for ambiguous words (the tests pin them):

* "sexy", "lingerie", "bikini", "seductive" are suggestive, not NSFW: "sexy sports car" and a
  swimwear catalogue pass, but never with a child or on an uploaded photo.
* "girl" and "boy" alone are not minor terms ("anime girl" is usually an adult); "young girl",
  "little boy", "schoolgirl", "school uniform" and "high school" are, on the cautious side.
* "baby" is a minor term even as an endearment; colour and food names are safe phrases.
* "nude" as a colour (lipstick, heels, tones, palette) is safe; "nude" anywhere else is NSFW.
* "x-ray" passes without a photo ("x-ray of a hand") and is refused with one ("x-ray vision").
* "sex", "porn" and the rest are refused outside NSFW channels even in an educational sense.
* A minor term and a sexual term anywhere in one prompt refuse it, even when they describe
  different people ("a mother and child, the mother nude"): the cautious reading.

Known limits (listed in tests/data/moderation/adversarial.json under "known_gaps"): words split
into multi-letter pieces ("na ked"), run together ("nakedwoman"), censored with "*" ("n*de"),
written upside down, or replaced by euphemisms. Doubled letters are not undone ("nuude" stays),
because that turns "rapped" into "raped"; three or more are ("nuuude"). Single letters in a row
are joined, so a spelled-out innocent word may read as a listed one ("s e x t a n t" → "sex").
"""

from __future__ import annotations

import itertools
import re
import string
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from functools import lru_cache

from anyascii import anyascii

from bot.core.errors import InvalidInput


class Category(StrEnum):
    MINORS = "minors"  # sexual content involving minors: hard limit, no setting turns it off
    UNDRESS_PHOTO = "undress_photo"  # an uploaded photo + undressing/sexualising terms: hard
    NSFW = "nsfw"  # sexual/nudity content: allowed only where the server and channel allow it
    BLOCKLIST = "blocklist"  # a server's own blocklist term matched


_MESSAGES = {
    Category.MINORS: (
        "This prompt asks for sexual content involving minors, which Easel never makes."
    ),
    Category.UNDRESS_PHOTO: "Easel does not undress or sexualise photos of people.",
    Category.NSFW: (
        "Nudity and sexual content are only allowed in age-restricted channels on this server."
    ),
    Category.BLOCKLIST: "This prompt contains a term this server has blocked.",
}


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    category: Category | None = None
    hard: bool = False  # True for the hard limits (MINORS, UNDRESS_PHOTO)
    # What matched, for the audit log; never shown to users. The normalised phrase ("nude"), both
    # phrases for MINORS ("child + nude"), "--no clothes" for the negative-prompt trick, or the
    # blocklist entry as the admin typed it.
    term: str | None = None

    @property
    def message(self) -> str:
        """The plain sentence a user reads ("" when allowed)."""
        return "" if self.category is None else _MESSAGES[self.category]


ALLOWED = Verdict(allowed=True)


class BlocklistTermInvalid(InvalidInput):
    """A server blocklist entry that would match nothing or everything."""


# ---------------------------------------------------------------------------------------------
# Term lists. Every entry is already in normalised form: lowercase ASCII words, single spaces,
# no punctuation ("x-ray" is "x ray", "12-year-old" is "12 year old"). A test checks that.


def _forms(stem: str, *suffixes: str) -> list[str]:
    """``_forms("nud", "e", "es")`` → ``["nude", "nudes"]``."""
    return [stem + suffix for suffix in suffixes]


def _combos(*parts: Iterable[str]) -> list[str]:
    """Every phrase made of one choice from each part, in order; "" leaves a part out."""
    return [" ".join(w for w in choice if w) for choice in itertools.product(*parts)]


# Nudity and sexual acts. Alone: NSFW. With a minor term: MINORS. With a photo: UNDRESS_PHOTO.
_EXPLICIT_WORDS = [
    *_forms("nud", "e", "es", "ity", "ities", "ist", "ists", "ism", "ie", "ies"),
    *_forms("nak", "ed", "edness", "ey", "ie"),
    "nekkid",
    "nood",  # slang spelling of "nude", and what "n00d" decodes to
    "noods",
    "nsfw",
    "nsfl",
    *_forms("sex", "", "es", "ual", "ually", "uality", "ed", "ing"),
    *_forms("sexuali", "se", "sed", "sing", "ze", "zed", "zing", "sation", "zation"),
    *_forms("porn", "", "s", "o", "os", "ographic", "ography", "star", "stars", "hub"),
    "pron",  # "pr0n"
    "xxx",
    "r18",
    "rule34",
    "onlyfans",
    "hentai",
    "ecchi",
    "ahegao",
    "futanari",
    "oppai",
    "paizuri",
    *_forms("erotic", "", "a", "ally", "ism"),
    *_forms("lewd", "", "s", "ness"),
    *_forms("smut", "", "ty"),
    "softcore",
    "bdsm",
    "milf",
    "milfs",
    "dilf",
    # Body parts that are nudity by themselves.
    *_forms("nipple", "", "s"),
    *_forms("areol", "a", "as", "ae"),
    *_forms("genital", "", "s", "ia"),
    *_forms("penis", "", "es"),
    *_forms("vagina", "", "s", "l"),
    *_forms("vulva", "", "s"),
    "labia",
    *_forms("clit", "", "s", "oris"),
    "pussy",  # "pussy willow" and "pussy cat" are safe phrases
    "pussies",
    "cunt",
    "cunts",
    *_forms("testicle", "", "s"),
    "scrotum",
    "anus",
    "anal",
    "butthole",
    "pubes",
    "pubic",
    "boobs",
    "titties",
    "tiddies",
    "tits",  # the birds ("blue tit", "great tits") are safe phrases
    "tit",
    "topless",  # "topless convertible" is a safe phrase
    "upskirt",
    "downblouse",
    "cameltoe",
    # Sexual acts.
    *_forms("orgasm", "", "s", "ic", "ing"),
    *_forms("org", "y", "ies"),
    *_forms("masturbat", "e", "es", "ed", "ing", "ion"),
    *_forms("blowjob", "", "s"),
    *_forms("handjob", "", "s"),
    *_forms("rimjob", "", "s"),
    "fellatio",
    "cunnilingus",
    "intercourse",
    "coitus",
    *_forms("fuck", "", "s", "ed", "ing"),
    *_forms("ejaculat", "e", "es", "ed", "ing", "ion"),
    "cum",  # "cum laude" is a safe phrase; "cumulus" is another word
    "cums",
    "cumshot",
    "cumshots",
    "jizz",
    "semen",
    "creampie",
    "bukkake",
    "gangbang",
    "threesome",
    "3some",
    "deepthroat",
    "doggystyle",
    "dildo",
    "dildos",
    "vibrator",
    "buttplug",
    "fleshlight",
    "strapon",
    *_forms("rap", "e", "ed", "es", "ing", "ist", "ists"),  # "grape", "therapist" are other words
    *_forms("molest", "", "s", "ed", "ing", "ation", "er", "ers"),
    "incest",
    "incestuous",
    "bestiality",
    "zoophilia",
    "necrophilia",
    "stripper",
    "strippers",
    "striptease",
    # Undressing that implies nudity, with or without a photo.
    *_forms("undress", "", "es", "ed", "ing"),
    *_forms("unclothe", "", "d"),
    *_forms("disrob", "e", "es", "ed", "ing"),
    *_forms("nudif", "y", "ies", "ied", "ying", "ier", "ication"),
    "deepnude",
    # Other languages, as anyascii spells them: "секс", "ポルノ", "セックス", German, Spanish.
    "seks",
    "poruno",
    "setkusu",
    "nackt",
    "nackte",
    *_forms("desnud", "a", "as", "o", "os"),
]

_EXPLICIT_PHRASES = [
    "blow job",
    "hand job",
    "rim job",
    "doggy style",
    "deep throat",
    "missionary position",
    "sex toy",
    "sex toys",
    "butt plug",
    "dick pic",
    "dickpic",
    "pubic hair",
    "private parts",
    "rule 34",
    "r 18",
    "adult content",
    "adult film",
    "adult films",
    "adult video",
    "adult videos",
    "adult movie",
    "adult entertainment",
    "porn star",
    "strip tease",
    "bare breasts",
    "bare breast",
    "breasts exposed",
    "exposed breasts",
    "bare butt",
    "bare ass",
    "nip slip",
    "wardrobe malfunction",
    "skinny dipping",
    "camel toe",
    "in the buff",
    "birthday suit",
    "wearing nothing",
    "wearing nothing but",
    "not wearing anything",
    "not wearing any clothes",
    "not wearing clothes",
    "clothes off",
    "clothing off",
    "clothes removed",
    "clothing removed",
    "deep nude",
]

# "remove her clothes", "take off all of his underwear", "without clothes", "no clothing"...
_UNDRESS_VERBS = [
    *_forms("remov", "e", "es", "ed", "ing"),
    "take off",
    "takes off",
    "taking off",
    "took off",
    "taken off",
    "strip off",
    "strip",
    "strips",
    "stripped",
    "stripping",
    "rip off",
    "ripping off",
    "ripped off",
    "tear off",
    "tearing off",
    "tore off",
    "torn off",
    "pull off",
    "pulling off",
    "peel off",
    "peeling off",
    "without",
    "with no",
    "no",
    "minus",
    *_forms("los", "e", "es", "ing"),
    "lost",
    "shed",
    "shedding",
    "drop",
    "dropping",
]
# Whose clothes. With a person's ("remove her clothes", "without clothes") it is undressing; with
# "the" it may be laundry ("removing the clothes from the dryer"), so only a photo makes it count.
_PERSONAL = [
    "",
    "her",
    "his",
    "their",
    "my",
    "your",
    "any",
    "all",
    *_combos(["all", "all of"], ["her", "his", "their"]),
]
_IMPERSONAL = ["the", "its", "all the", "all of the"]
# Taking these off means nudity.
_UNDRESS_GARMENTS = [
    "clothes",
    "clothing",
    "garments",
    "underwear",
    "panties",
    "bra",
    "lingerie",
    "bikini",
    "swimsuit",
    "swimwear",
]
# Taking these off is undressing a photo, but not necessarily nudity in a text prompt.
_OUTER_GARMENTS = [
    "shirt",
    "dress",
    "skirt",
    "pants",
    "trousers",
    "jeans",
    "shorts",
    "blouse",
    "outfit",
]
# Only someone's: "remove the top" and "drop the towel" are also image edits of things.
_PERSONAL_GARMENTS = ["top", "towel"]

_EXPLICIT = [
    *_EXPLICIT_WORDS,
    *_EXPLICIT_PHRASES,
    *_combos(_UNDRESS_VERBS, _PERSONAL, _UNDRESS_GARMENTS),
]

# Sexualising, not explicit. Alone they pass; with a minor term or an uploaded photo, refused.
_SEE_THROUGH = ["see through", "seethrough", "transparent", "sheer"]
_SEE_THROUGH_GARMENTS = [
    "clothes",
    "clothing",
    "dress",
    "shirt",
    "top",
    "blouse",
    "outfit",
    "fabric",
    "nightgown",
    "bikini",
    "swimsuit",
    "underwear",
]
_SUGGESTIVE = [
    "sexy",
    "sexier",
    "sexiest",
    *_forms("seduc", "e", "es", "ed", "ing", "tion", "tive", "tively"),
    *_forms("sensual", "", "ly", "ity"),
    "sultry",
    *_forms("provocative", "", "ly"),
    *_forms("suggestive", "", "ly"),
    "racy",
    "risque",
    "horny",
    "aroused",
    "arousing",
    "kinky",
    *_forms("fetish", "", "es", "ism"),
    "bondage",
    "dominatrix",
    "slut",
    "slutty",
    "whore",
    "voyeur",
    *_forms("grop", "e", "es", "ed", "ing"),
    "pinup",
    "pin up girl",
    "pin up model",
    "pin up pose",
    "boudoir",
    "playboy",
    "playmate",
    "centerfold",
    "strip club",
    "lap dance",
    "cleavage",
    "busty",
    "voluptuous",
    "breast",  # food and health phrases ("chicken breast", "breast cancer") are safe
    "breasts",
    "boob",
    "lingerie",
    "negligee",
    "bikini",
    "bikinis",
    "micro bikini",
    "thong",
    "thongs",
    "g string",
    "gstring",
    "panties",
    "panty",
    "underwear",
    "bra",
    "bras",
    "spread legs",
    "legs spread",
    "wet t shirt",
    "wet tshirt",
    "scantily clad",
    "barely clothed",
    "partially clothed",
    "half dressed",
    "less clothes",
    "less clothing",
    "fewer clothes",
    "only a towel",
    "just a towel",
    "nothing but a towel",
    *_combos(_SEE_THROUGH, _SEE_THROUGH_GARMENTS),
]

# Innocent in a text prompt, but with an uploaded photo of a person they undress it.
_PHOTO_ONLY = [
    "x ray",
    "x rays",
    "x rayed",
    "xray",
    "xrays",
    "swimsuit",
    "swimsuits",
    "swimwear",
    "bathing suit",
    "shirtless",
    "bare chested",
    "barechested",
    "bare skin",
    "strip her",
    "strip him",
    "strip them",
    "strip down",
    "stripped down",
    "show her body",
    "show his body",
    "reveal her body",
    "reveal his body",
    *_combos(_UNDRESS_VERBS, _IMPERSONAL, _UNDRESS_GARMENTS + _OUTER_GARMENTS),
    *_combos(_UNDRESS_VERBS, _PERSONAL, _OUTER_GARMENTS + _PERSONAL_GARMENTS),
]

# Ages under 18, in digits and in words: "12 yo", "12yo", "12 y o" ("12 y.o."), "12 year old"...
_AGE_WORDS = [
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
]
_AGE_SUFFIXES = [
    "yo",
    "y o",
    "yr",
    "yrs",
    "yr old",
    "yrs old",
    "year old",
    "years old",
    "years of age",
    "years young",
]


def _ages() -> list[str]:
    phrases: list[str] = []
    for age in [str(n) for n in range(18)] + _AGE_WORDS:
        # "5 y.o." normalises to "5yo" (three single characters in a row are joined), so a
        # one-digit age never needs the spaced form.
        spaced = [s for s in _AGE_SUFFIXES if not (len(age) == 1 and s == "y o")]
        phrases += [f"{age} {suffix}" for suffix in spaced]
        phrases += [f"age {age}", f"aged {age}", f"age of {age}"]
        if age.isdigit():  # "12yo", "12yrs old", "12y o"
            phrases += [f"{age}{suffix}" for suffix in ("yo", "y", "yr", "yrs")]
            phrases += [f"{age}y o", f"{age}yr old", f"{age}yrs old"]
    return phrases


_GRADES = [
    *("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth"),
    *("1st", "2nd", "3rd", "4th", "5th", "6th", "7th", "8th"),
]

# Words that put a child in the picture. Alone they pass; with a sexual term, MINORS.
_MINOR = [
    *_forms("child", "", "s", "ren", "like", "hood"),
    "child like",
    *_forms("kid", "", "s", "die", "dies", "do", "dos", "dy"),
    "minor",
    "minors",
    *_forms("underage", "", "d"),
    "under age",
    "under aged",
    "under 18",
    "under eighteen",
    "below 18",
    "barely legal",  # a porn genre that trades on looking under age
    *_forms("toddler", "", "s"),
    *_forms("infant", "", "s"),
    "baby",
    "babies",
    *_forms("newborn", "", "s"),
    *_forms("preteen", "", "s"),
    "pre teen",
    "pre teens",
    *_forms("tween", "", "s"),
    *_forms("teen", "", "s", "age", "aged", "ager", "agers"),  # not "teeny": it means tiny
    *_forms("adolescent", "", "s"),
    *_forms("juvenile", "", "s"),
    "pubescent",
    "prepubescent",
    "pre pubescent",
    *_forms("youngster", "", "s"),
    *_combos(["young", "little", "small", "tiny"], ["girl", "girls", "boy", "boys"]),
    "girl child",
    "boy child",
    *_forms("school", "girl", "girls", "boy", "boys", "kid", "kids", "child", "children"),
    *_combos(["school"], ["girl", "girls", "boy", "boys", "kid", "kids", "child", "children"]),
    "school uniform",
    "loli",
    "lolis",
    "lolita",
    "shota",
    "shotas",
    *_combos(
        ["elementary", "middle", "primary", "grade", "junior high", "high"],
        ["school", "schooler", "schoolers"],
    ),
    "highschool",
    "highschooler",
    "highschoolers",
    *_forms("kindergarten", "", "er", "ers"),
    "preschool",
    "preschooler",
    "preschoolers",
    *_combos(_GRADES, ["grade", "grader", "graders"]),
    *_ages(),
]

# Sexualised minors by themselves.
_INHERENT = [
    "lolicon",
    "rorikon",  # "ロリコン"
    "shotacon",
    *_forms("pedo", "", "s", "phile", "philes", "philia", "philic", "bear"),
    *_forms("paedo", "", "s", "phile", "philes", "philia", "philic"),
    "jailbait",
    "child porn",
    "childporn",
    "kiddie porn",
    "kiddy porn",
    "kiddieporn",
    "pthc",
    "csam",
]

# Innocent phrases that contain a listed word. Matched first, and their words are then skipped.
_SAFE = [
    # nudity words used for colours, nature and idioms
    *_combos(
        ["nude"],
        [
            "lipstick",
            "lip",
            "lips",
            "lip gloss",
            "heels",
            "shoes",
            "pumps",
            "sandals",
            "nail polish",
            "nails",
            "manicure",
            "color",
            "colour",
            "colored",
            "coloured",
            "tone",
            "tones",
            "shade",
            "shades",
            "palette",
            "makeup",
            "eyeshadow",
            "beige",
            "pink",
        ],
    ),
    "naked eye",
    "naked flame",
    "naked flames",
    "naked mole rat",
    "naked mole rats",
    "naked singularity",
    "naked lunch",
    "naked truth",
    "topless convertible",
    "topless car",
    "topless roadster",
    "topless bus",
    "cum laude",
    "summa cum laude",
    "magna cum laude",
    "oilseed rape",
    "rape field",
    "rape seed",
    "pussy willow",
    "pussy willows",
    "pussy cat",
    "pussy cats",
    *_combos(
        ["blue", "great", "coal", "marsh", "willow", "crested", "bearded", "long tailed"],
        ["tit", "tits"],
    ),
    "tit for tat",
    "tit bird",
    "sex pistols",
    "bikini atoll",
    "bikini bottom",
    "chicken breast",
    "chicken breasts",
    "turkey breast",
    "turkey breasts",
    "duck breast",
    "duck breasts",
    "breast cancer",
    "breast feeding",
    "breast milk",
    "breast pocket",
    "breast stroke",
    "bottle nipple",
    "horny toad",
    "horny toads",
    # minor words in other senses
    "kid goat",
    "kid goats",
    "kid gloves",
    "kid leather",
    "kid mohair",
    "kid skin",
    "billy the kid",
    "karate kid",
    *_combos(
        ["baby"],
        [
            "blue",
            "pink",
            "oil",
            "powder",
            "grand",
            "grand piano",
            "spinach",
            "carrots",
            "corn",
            "back ribs",
            "breath",
            "bump",
            "boomer",
            "boomers",
            "shower",
        ],
    ),
    *_combos(
        ["a", "b", "c", "d", "e", "f", "g"],
        ["", "flat", "sharp"],
        ["minor key", "minor chord", "minor scale"],
    ),
    "minor key",
    "minor chord",
    "minor scale",
    "minor league",
    "minor planet",
    "ursa minor",
    "asia minor",
    "canis minor",
    # "strip" in other senses (only "strip her" and friends are listed)
    "strip mall",
    "comic strip",
    "film strip",
    "landing strip",
    "las vegas strip",
    "led strip",
    "light strip",
    "gaza strip",
    "mobius strip",
    "drag strip",
]

# In a negative prompt, these ask the model for nudity ("--no clothes").
_NEGATIVE_CLOTHING = [
    "clothes",
    "clothing",
    "clothed",
    "dressed",
    "garments",
    "underwear",
    "panties",
    "bra",
    "lingerie",
    "bikini",
    "swimsuit",
    "swimwear",
    "censor",
    "censored",
    "censorship",
    "censor bar",
    "censor bars",
    "mosaic censoring",
]
_NEGATIVE_SAFE = [
    "clothes hanger",
    "clothes hangers",
    "clothes line",
    "clothesline",
    "clothes peg",
    "clothes pegs",
    "clothes rack",
    "clothing store",
    "clothing shop",
    "clothing label",
    "clothing tag",
]


class _Group(Enum):
    SAFE = "safe"
    INHERENT = "inherent"
    EXPLICIT = "explicit"
    MINOR = "minor"
    SUGGESTIVE = "suggestive"
    PHOTO_ONLY = "photo_only"
    NEGATIVE_CLOTHING = "negative_clothing"


@dataclass(frozen=True)
class _Lexicon:
    """Phrases → group, with the phrase lengths (longest first) that start with each word."""

    phrases: dict[str, _Group]
    starts: dict[str, tuple[int, ...]]

    @classmethod
    def build(cls, groups: Sequence[tuple[_Group, Iterable[str]]]) -> _Lexicon:
        phrases: dict[str, _Group] = {}
        for group, entries in groups:  # earlier groups win a phrase listed twice
            for phrase in entries:
                phrases.setdefault(phrase, group)
        lengths: dict[str, set[int]] = {}
        for phrase in phrases:
            words = phrase.split(" ")
            lengths.setdefault(words[0], set()).add(len(words))
        starts = {w: tuple(sorted(ns, reverse=True)) for w, ns in lengths.items()}
        return cls(phrases, starts)

    def scan(self, words: Sequence[str]) -> list[tuple[_Group, str]]:
        """Every listed phrase in ``words``, longest first at each position; safe ones skipped."""
        hits: list[tuple[_Group, str]] = []
        i, n = 0, len(words)
        while i < n:
            lengths = self.starts.get(words[i])
            found: tuple[_Group, str, int] | None = None
            for length in lengths or ():
                if i + length <= n:
                    phrase = " ".join(words[i : i + length])
                    group = self.phrases.get(phrase)
                    if group is not None:
                        found = (group, phrase, length)
                        break
            if found is None:
                i += 1
            elif found[0] is _Group.SAFE:
                i += found[2]  # the words of a safe phrase count for nothing else
            else:
                hits.append((found[0], found[1]))
                i += 1
        return hits


_LEXICON = _Lexicon.build(
    [
        (_Group.SAFE, _SAFE),
        (_Group.INHERENT, _INHERENT),
        (_Group.EXPLICIT, _EXPLICIT),
        (_Group.MINOR, _MINOR),
        (_Group.SUGGESTIVE, _SUGGESTIVE),
        (_Group.PHOTO_ONLY, _PHOTO_ONLY),
    ]
)
_NEGATIVE_LEXICON = _Lexicon.build(
    [(_Group.SAFE, _NEGATIVE_SAFE), (_Group.NEGATIVE_CLOTHING, _NEGATIVE_CLOTHING)]
)

# Every word of every listed phrase: leetspeak and spaced-out letters are decoded towards these.
_VOCABULARY = frozenset(
    word
    for lexicon in (_LEXICON, _NEGATIVE_LEXICON)
    for phrase in lexicon.phrases
    for word in phrase.split(" ")
    if len(word) > 1
)
# Room for the longest listed word, plus symbols that may read as nothing ("|", "!").
_MAX_SPELLED_WORD = max(len(word) for word in _VOCABULARY) + 4
_PREFIXES = frozenset(word[:end] for word in _VOCABULARY for end in range(len(word) + 1))
# ---------------------------------------------------------------------------------------------
# Normalisation

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
# combining marks (accents once decomposed, Zalgo) are dropped.
_DROP_INVISIBLE = _CharTable(_drop_invisible)
_TO_ASCII = _CharTable(anyascii)


def _unicode_to_ascii(text: str) -> str:
    """Styled, look-alike and accented letters to lowercase ASCII; invisible characters gone."""
    if text.isascii():
        return text.lower()
    text = unicodedata.normalize("NFKC", text)  # fullwidth, mathematical, circled, ligatures
    # Decompose so that accents and Zalgo marks become separate combining marks to drop.
    text = unicodedata.normalize("NFD", text).translate(_DROP_INVISIBLE)
    text = unicodedata.normalize("NFC", text)
    text = _LOOKALIKE_RUN.sub(_unmask_lookalikes, text)
    return text.casefold().translate(_TO_ASCII).lower()


def _unmask_lookalikes(match: re.Match[str]) -> str:
    run = match.group(0)
    letters = set(run)
    if not letters.isdisjoint(_ASCII_LETTERS) or letters <= _CLOSE:
        return run.translate(_HOMOGLYPHS)
    return run  # ordinary Cyrillic or Greek text: anyascii transliterates it


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
    if token in _VOCABULARY:
        return token
    if token.isalpha() and not _TRIPLE.search(token):
        return None  # the common case, kept cheap
    for reading in _readings(token):
        if reading in _VOCABULARY:
            return reading
        for squeezed in _squeezed(reading):
            if squeezed in _VOCABULARY:
                return squeezed
    return None


@lru_cache(maxsize=16_384)  # prompts repeat their words, and style words recur across prompts
def _fold_word(word: str) -> str:
    """A word of letters and digits: a listed word it spells, or itself, or its default leet."""
    if word in _VOCABULARY or (word.isalpha() and not _TRIPLE.search(word)):
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
    the work stays small however many leetspeak characters the run holds.
    """
    readings = [""]
    for end in range(start + 1, stop + 1):
        char = chars[end - 1]
        options = _SPELLINGS.get(char, (char,))
        grown = (reading + option for reading in readings for option in options)
        readings = list(dict.fromkeys(r for r in grown if r in _PREFIXES))
        if not readings:
            return
        word = next((r for r in readings if r in _VOCABULARY), None)
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
    # covered[i]: most characters of run[:i] inside listed words; back[i]: how it was reached.
    covered = [0] * (n + 1)
    back: list[tuple[int, str | None]] = [(0, None)] * (n + 1)
    for i in range(n):
        if covered[i] >= covered[i + 1]:
            covered[i + 1], back[i + 1] = covered[i], (i, None)
        for j, word in _words_at(chars, i, min(n, i + _MAX_SPELLED_WORD)):
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


def normalise(text: str) -> str:
    """Plain lowercase ASCII words separated by single spaces, evasions undone.

    In order: NFKC; zero-width and other format characters (Unicode category Cf) and combining
    marks dropped; Cyrillic/Greek look-alikes in Latin words read as the Latin letters; casefold;
    anyascii folding of everything else; prompt weights removed ("(nude:1.4)", "((naked))",
    "[nsfw]", "word++" leave the words); apostrophes joined ("kid's" → "kids"); leetspeak read in
    words that mix letters with digits or @ $ ! | ("n4k3d", "$ex") — towards a listed word where
    one fits, plain numbers ("1920", "3:2") and technical tokens ("4k", "35mm") untouched;
    stretched letters ("naaaked") squeezed into a listed word; single letters in a row ("n u d e",
    "n.u.d.e", "n-u-d-e", "n_u_d_e") joined into one word.
    """
    text = _unicode_to_ascii(text)
    text = text.replace("'", "").replace("`", "")
    text = _WEIGHT.sub(" ", text)
    return " ".join(_fold_tokens(_TOKEN.findall(text)))


# ---------------------------------------------------------------------------------------------
# Server blocklists

_WILDCARD = "qxzwildcardzxq"  # letters, so normalise() keeps it in place inside the word
_WORD_CHARS = "[a-z0-9]"


@dataclass(frozen=True)
class BlockPattern:
    """A compiled server blocklist entry. ``*`` is any run of letters or digits within a word."""

    term: str  # as the admin typed it
    normalised: str  # as matched, "*" included
    regex: re.Pattern[str] = field(repr=False, compare=False)

    def matches_normalised(self, normalised_text: str) -> bool:
        return self.regex.search(normalised_text) is not None

    def matches(self, text: str) -> bool:
        return self.matches_normalised(normalise(text))


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
    return BlockPattern(term=term, normalised=normalised.replace(_WILDCARD, "*"), regex=regex)


@lru_cache(maxsize=4096)
def _compiled(term: str) -> BlockPattern | None:
    try:
        return compile_blocklist_term(term)
    except BlocklistTermInvalid:
        return None  # admins are told when they add a term; a bad one stored never matches


# ---------------------------------------------------------------------------------------------
# The policy


def _first(hits: Sequence[tuple[_Group, str]], *groups: _Group) -> str | None:
    return next((phrase for group, phrase in hits if group in groups), None)


def check_prompt(
    prompt: str,
    negative: str = "",
    *,
    has_image: bool = False,
    nsfw_allowed: bool = False,
    blocklist: Sequence[str | BlockPattern] = (),
) -> Verdict:
    """Decide whether Easel may draw ``prompt``.

    ``negative`` is the ``--no`` text, already split off by the prompt grammar; ``has_image`` is
    True when a photo was uploaded (img2img, variations of an upload); ``nsfw_allowed`` is True
    only where the server's rule and the channel (age-restricted) both allow NSFW. ``blocklist``
    holds the server's terms, as typed or compiled; an invalid stored term is skipped.
    """
    text = normalise(prompt)
    negative_text = normalise(negative) if negative else ""
    hits = _LEXICON.scan(text.split())
    if negative_text:
        clothing = _first(_NEGATIVE_LEXICON.scan(negative_text.split()), _Group.NEGATIVE_CLOTHING)
        if clothing is not None:
            hits.append((_Group.EXPLICIT, f"--no {clothing}"))

    inherent = _first(hits, _Group.INHERENT)
    minor = _first(hits, _Group.MINOR)
    sexual = _first(hits, _Group.EXPLICIT, _Group.SUGGESTIVE)
    if inherent is not None:
        return Verdict(False, Category.MINORS, hard=True, term=inherent)
    if minor is not None and sexual is not None:
        return Verdict(False, Category.MINORS, hard=True, term=f"{minor} + {sexual}")
    if has_image:
        undress = _first(hits, _Group.EXPLICIT, _Group.SUGGESTIVE, _Group.PHOTO_ONLY)
        if undress is not None:
            return Verdict(False, Category.UNDRESS_PHOTO, hard=True, term=undress)
    explicit = _first(hits, _Group.EXPLICIT)
    if explicit is not None and not nsfw_allowed:
        return Verdict(False, Category.NSFW, term=explicit)
    for entry in blocklist:
        pattern = entry if isinstance(entry, BlockPattern) else _compiled(entry)
        if pattern is None:
            continue
        if pattern.matches_normalised(text) or pattern.matches_normalised(negative_text):
            return Verdict(False, Category.BLOCKLIST, term=pattern.term)
    return ALLOWED

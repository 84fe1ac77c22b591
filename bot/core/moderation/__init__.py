"""Prompt moderation: a pure policy over normalised text, in every language Easel's users type.

The sections:

* :mod:`~bot.core.moderation.terms` reads the term lists, one TOML file a language in
  ``terms/`` (English, Spanish, Portuguese, French, German, Italian, Russian, Polish, Turkish,
  Dutch, Japanese, Chinese, Korean, Arabic), reviewed like code;
* :mod:`~bot.core.moderation.fold` and :mod:`~bot.core.moderation.normalise` turn what the user
  typed into plain lowercase ASCII words, undoing the usual evasions (look-alike letters from
  other scripts, fullwidth and styled letters, invisible characters, Zalgo marks,
  prompt-weighting syntax, leetspeak, spaced-out letters), and keep the letters of Chinese,
  Japanese, Korean and Arabic in their own script;
* :mod:`~bot.core.moderation.blocklist` compiles a server's own terms;
* :mod:`~bot.core.moderation.policy` decides: :func:`check_prompt` returns a :class:`Verdict`,
  and :func:`second_opinion` adds what a learned classifier found (its model side is
  ``engine/text_safety.py``; :func:`classifier_scores` asks it and logs a failure).

The term lists are read on first use (a third of a second): :func:`lexicons` reads them ahead,
for a start-up that should not pause its first check.

Matching is on whole words and phrases (n-gram look-ups in a dict, no regex alternation), so
"Scunthorpe", "analysis" or "cocktail" never match, and the cost is linear in the prompt.
Japanese and Chinese have no spaces, so their terms match anywhere in a run of their characters
("裸の女性"); Korean and Arabic terms match at the start of a word, so that particles and
suffixes may follow ("알몸으로"), with Arabic's glued prefixes ("و", "ال") listed.

What each group of terms decides (:class:`~bot.core.moderation.terms.Group`):

* explicit: nudity and sexual acts. Alone → :attr:`Category.NSFW`.
* suggestive: sexualising but not explicit ("sexy", "lingerie", "bikini"). Alone they pass;
  with a minor term → :attr:`Category.MINORS`; with an uploaded photo →
  :attr:`Category.UNDRESS_PHOTO`.
* photo_only: harmless in a text prompt ("x-ray", "swimsuit", "shirtless"), but with an
  uploaded photo of a person they ask to undress it → :attr:`Category.UNDRESS_PHOTO`.
* minor: words that put a child in the picture ("child", "teen", "schoolgirl", "12 yo").
  Alone they pass ("children playing in a park"); with any explicit or suggestive term anywhere
  in the prompt → :attr:`Category.MINORS`.
* inherent: terms that mean sexualised minors on their own ("lolicon") → MINORS.
* safe: homonyms that contain a listed word but are innocent ("naked eye", "kid goat",
  "nue-propriété", "ヌードル"). They are skipped before the others.

Order of the checks: MINORS, then UNDRESS_PHOTO (both hard: no setting turns them off), then
NSFW (the server rule and channel decide), then the server's own blocklist. A prompt that breaks
several rules is answered with the first.

The negative prompt is what the user does *not* want, so its terms never count as a request:
``--no nudity, children`` passes. One exception: a negative prompt that bans clothing
(``--no clothes``, ``--no ropa``, ``--no 服``) is the well-known way to ask a model for nudity,
so it counts as an explicit term. Blocklist entries apply to both.

Deliberate choices for ambiguous words (the tests pin them; each language's file explains its
own):

* "sexy", "lingerie", "bikini", "seductive" are suggestive, not NSFW: "sexy sports car" and a
  swimwear catalogue pass, but never with a child or on an uploaded photo.
* "girl" and "boy" alone are not minor terms ("anime girl" is usually an adult); "young girl",
  "little boy", "schoolgirl", "school uniform" and "high school" are, on the cautious side. The
  same holds in the other languages ("chica", "Mädchen", "девушка" are not minor terms;
  "niña", "kleines Mädchen", "девочка", "少女" are).
* "baby" is a minor term even as an endearment; colour and food names are safe phrases.
* "nude" as a colour (lipstick, heels, tones, palette) is safe; "nude" anywhere else is NSFW.
* "x-ray" passes without a photo ("x-ray of a hand") and is refused with one ("x-ray vision").
* "sex", "porn" and the rest are refused outside NSFW channels even in an educational sense.
* A minor term and a sexual term anywhere in one prompt refuse it, even when they describe
  different people ("a mother and child, the mother nude"): the cautious reading.
* A word that is innocent in one language and listed in another is listed only in phrases
  that cannot be the innocent one (Polish "naga" is a serpent in English: "naga kobieta" is
  listed, "naga" alone is not; Dutch "nu" is "now", so Portuguese "nu" needs its noun).

Known limits (listed in tests/data/moderation/adversarial.json under "known_gaps"): words split
into multi-letter pieces ("na ked"), run together ("nakedwoman"), censored with "*" ("n*de"),
written upside down, or replaced by euphemisms in any language ("como Dios la trajo al mundo").
Doubled letters are not undone ("nuude" stays), because that turns "rapped" into "raped"; three
or more are ("nuuude"). Single letters in a row are joined, so a spelled-out innocent word may
read as a listed one ("s e x t a n t" → "sex"). A German separable verb with words between its
parts ("zieht sich vor dem Spiegel aus"), a Korean compound written without its space, a Chinese
homophone written with another character, and Arabic in Latin letters and digits ("3arya") are
not matched. A server's blocklist entry in Chinese, Japanese, Korean or Arabic matches its
transliteration, as whole words, not the native text.
"""

from bot.core.moderation.blocklist import BlocklistTermInvalid, BlockPattern, compile_blocklist_term
from bot.core.moderation.normalise import normalise
from bot.core.moderation.policy import (
    ALLOWED,
    CLASSIFIER_CATEGORIES,
    HARD,
    Category,
    Verdict,
    check_prompt,
    classifier_scores,
    second_opinion,
)
from bot.core.moderation.terms import lexicons

__all__ = [
    "ALLOWED",
    "CLASSIFIER_CATEGORIES",
    "HARD",
    "BlockPattern",
    "BlocklistTermInvalid",
    "Category",
    "Verdict",
    "check_prompt",
    "classifier_scores",
    "compile_blocklist_term",
    "lexicons",
    "normalise",
    "second_opinion",
]

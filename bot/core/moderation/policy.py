"""The policy: what the term lists found in a prompt, and what a learned classifier adds to it."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from bot.core.moderation.blocklist import BlockPattern, compiled
from bot.core.moderation.fold import native_text
from bot.core.moderation.normalise import normalise
from bot.core.moderation.terms import Group, LexiconSet, lexicons

log = logging.getLogger(__name__)


class Category(StrEnum):
    MINORS = "minors"  # sexual content involving minors: hard limit, no setting turns it off
    UNDRESS_PHOTO = "undress_photo"  # an uploaded photo + undressing/sexualising terms: hard
    NSFW = "nsfw"  # sexual/nudity content: allowed only where the server and channel allow it
    BLOCKLIST = "blocklist"  # a server's own blocklist term matched
    # The learned classifier could not run, and the job descends from an uploaded photo, where
    # the hard limit is at stake: refused until it works again (see second_opinion).
    UNCHECKED = "unchecked"


_MESSAGES = {
    Category.MINORS: (
        "This prompt asks for sexual content involving minors, which Easel never makes."
    ),
    Category.UNDRESS_PHOTO: "Easel does not undress or sexualise photos of people.",
    Category.NSFW: (
        "Nudity and sexual content are only allowed in age-restricted channels on this server."
    ),
    Category.BLOCKLIST: "This prompt contains a term this server has blocked.",
    Category.UNCHECKED: (
        "Easel's safety check is unavailable right now, and edits of uploaded photos wait for "
        "it. Please try again later."
    ),
}
HARD = frozenset({Category.MINORS, Category.UNDRESS_PHOTO})


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    category: Category | None = None
    hard: bool = False  # True for the hard limits (MINORS, UNDRESS_PHOTO)
    # What matched, for the audit log; never shown to users. The normalised phrase ("nude"), both
    # phrases for MINORS ("child + nude"), "--no clothes" for the negative-prompt trick, the
    # blocklist entry as the admin typed it, or "classifier: nsfw 0.83".
    term: str | None = None
    # The learned classifier's score, when one was asked (second_opinion): the score of the
    # category that refused, or else its highest. For the audit log, to tune the threshold.
    score: float | None = None

    @property
    def message(self) -> str:
        """The plain sentence a user reads ("" when allowed)."""
        return "" if self.category is None else _MESSAGES[self.category]


ALLOWED = Verdict(allowed=True)


def _first(hits: Sequence[tuple[Group, str]], *groups: Group) -> str | None:
    return next((phrase for group, phrase in hits if group in groups), None)


def _scan(text: str, tables: LexiconSet) -> list[tuple[Group, str]]:
    """Hits in the normalised words of ``text`` and in its native-script letters."""
    hits = tables.words.scan(normalise(text, native=False).split())
    letters = native_text(text)
    if letters:
        for lexicon in tables.native:
            hits += lexicon.scan(letters)
    return hits


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
    lex = lexicons()
    hits = _scan(prompt, lex.prompt)
    if negative:
        negative_hits = _scan(negative, lex.negative)
        clothing = _first(negative_hits, Group.NEGATIVE_CLOTHING)
        if clothing is not None:
            hits.append((Group.EXPLICIT, f"--no {clothing}"))

    inherent = _first(hits, Group.INHERENT)
    minor = _first(hits, Group.MINOR)
    sexual = _first(hits, Group.EXPLICIT, Group.SUGGESTIVE)
    if inherent is not None:
        return Verdict(False, Category.MINORS, hard=True, term=inherent)
    if minor is not None and sexual is not None:
        return Verdict(False, Category.MINORS, hard=True, term=f"{minor} + {sexual}")
    if has_image:
        undress = _first(hits, Group.EXPLICIT, Group.SUGGESTIVE, Group.PHOTO_ONLY)
        if undress is not None:
            return Verdict(False, Category.UNDRESS_PHOTO, hard=True, term=undress)
    explicit = _first(hits, Group.EXPLICIT)
    if explicit is not None and not nsfw_allowed:
        return Verdict(False, Category.NSFW, term=explicit)
    texts = [(normalise(t), native_text(t)) for t in (prompt, negative) if t] if blocklist else []
    for entry in blocklist:
        pattern = entry if isinstance(entry, BlockPattern) else compiled(entry)
        if pattern is None:
            continue
        if any(pattern.matches_normalised(w) or pattern.matches_native(n) for w, n in texts):
            return Verdict(False, Category.BLOCKLIST, term=pattern.term)
    return ALLOWED


# ---------------------------------------------------------------------------------------------
# The learned second opinion

# The categories a classifier scores, in the order a refusal is decided (as in check_prompt).
CLASSIFIER_CATEGORIES = (Category.MINORS, Category.UNDRESS_PHOTO, Category.NSFW)


def classifier_scores(
    classify: Callable[[str], Mapping[str, float]], prompt: str
) -> Mapping[str, float] | None:
    """``classify(prompt)``, or None when the classifier fails: the failure is logged, and
    :func:`second_opinion` decides what it means. Blocking: call it off the event loop."""
    try:
        return classify(prompt)
    except Exception:  # a model at run time can fail in many ways; each means "no opinion"
        log.warning("The text classifier failed; deciding without it.", exc_info=True)
        return None


def _classifier_verdict(
    scores: Mapping[Category, float], threshold: float, *, photo: bool, nsfw_allowed: bool
) -> Verdict:
    minors = scores.get(Category.MINORS, -math.inf)
    # Undressing a photo is nudity in a text prompt, and nudity on a photo is undressing it.
    sexual = max(
        scores.get(Category.UNDRESS_PHOTO, -math.inf), scores.get(Category.NSFW, -math.inf)
    )
    decided: tuple[Category, float] | None = None
    if minors >= threshold:
        decided = (Category.MINORS, minors)
    elif photo and sexual >= threshold:
        decided = (Category.UNDRESS_PHOTO, sexual)
    elif not nsfw_allowed and sexual >= threshold:
        decided = (Category.NSFW, sexual)
    if decided is None:
        known = [scores[c] for c in CLASSIFIER_CATEGORIES if c in scores]
        return Verdict(True, score=max(known) if known else None)
    category, score = decided
    return Verdict(
        False,
        category,
        hard=category in HARD,
        term=f"classifier: {category} {score:.2f}",
        score=score,
    )


def second_opinion(
    verdict: Verdict,
    scores: Mapping[Category, float] | None,
    *,
    threshold: float,
    photo: bool,
    nsfw_allowed: bool,
) -> Verdict:
    """Combine the rules' ``verdict`` with a learned classifier's ``scores``.

    ``scores`` maps :data:`CLASSIFIER_CATEGORIES` to similarities (the engine's
    ``dict[str, float]`` works as it is: a :class:`Category` is its string); a missing category
    counts as not flagged. A score at or over ``threshold`` refuses in the order of
    :func:`check_prompt`: MINORS; UNDRESS_PHOTO when ``photo`` (the job descends from an uploaded
    photo); NSFW unless ``nsfw_allowed``.

    The classifier only adds refusals: a refused ``verdict`` stays refused, with the score
    attached, and turns into the classifier's hard refusal only where that is graver.

    ``scores=None`` (or a non-finite score) means the classifier failed. For a photo descendant
    that refuses with :attr:`Category.UNCHECKED` (fail closed: the hard limit is at stake, and
    the rules alone miss what they do not list); otherwise the rules' verdict stands (fail open:
    the rules still hold, and the caller logs the failure).
    """
    if scores is None or not all(math.isfinite(s) for s in scores.values()):
        if verdict.allowed and photo:
            return Verdict(False, Category.UNCHECKED, term="classifier unavailable")
        return verdict
    opinion = _classifier_verdict(scores, threshold, photo=photo, nsfw_allowed=nsfw_allowed)
    if verdict.allowed:
        return opinion
    if not opinion.allowed and opinion.hard and not verdict.hard:
        return opinion
    return replace(verdict, score=scores.get(verdict.category, opinion.score))

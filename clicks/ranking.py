"""How visitors' choices re-rank a similar-image list, as pure functions: no database, no settings.

The evidence for a (source, target) pair is its choices against its *exposure*: how many
times a visitor is likely to have looked at the target in the source's list. Visitors look at
the top of a list far more than its bottom, so a target shown at position 8 and chosen anyway
has earned more than one chosen at position 1; dividing by exposure instead of impressions
says so. Scores are smoothed towards the site's average, so a pair shown twice and chosen
once does not outrank a pair chosen a hundred times out of a thousand.

A pair's own evidence can only judge targets that some list already showed. Its *links* reach
further: the pictures joined by visitors' choices both to the source and to the target (chosen
from one, or choosing it, and the same with the other). One stray choice makes one link; a
target linked through several co-chosen pictures is very likely what visitors of this source
want, though no list has shown it here yet. Item-to-item recommendation from co-choices, taken
two steps.

``clicks.evidence`` computes the scores in SQL from the functions' definitions here;
``clicks.selectors`` ranks with them.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

Team = Literal["visual", "hybrid"]


def examination_probability(position: int) -> float:
    """How likely a visitor is to look at the item at ``position`` (from 1) of a list.

    1 / log2(position + 1), the discount of DCG: 1 at the top, 0.5 at 3, 0.32 at 8. A
    simple, widely used model of position bias; the offline simulator measures how well it
    fits.
    """
    return 1.0 / math.log2(position + 1)


def prior_rate(*, choices: float, exposure: float) -> float:
    """The site's choices per examination, rounded to two significant figures (0 without exposure).

    The rounding is what lets a refresh rewrite only the pairs whose own counts changed: an
    exact rate would move with every choice anywhere on the site, change every pair's score a
    little, and drop every cached page at each refresh. Rounded, it moves in steps of 1 to
    10 %, and each step rewrites the scores once.
    """
    if exposure <= 0 or choices <= 0:
        return 0.0
    rate = choices / exposure
    return round(rate, 1 - math.floor(math.log10(rate)))


def evidence_score(*, choices: float, exposure: float, rate: float, prior_strength: float) -> float:
    """A pair's smoothed choice rate, relative to the site's: 1 is average, 2 twice as often.

    (choices + α·r) / (exposure + α), divided by r: a pair without exposure scores exactly 1,
    and each examination moves it away from 1 as far as the evidence warrants. Relative to r,
    so the ranking needs no global figure at request time. Without any choice on the site
    (r = 0) nothing can be compared and every pair is average.
    """
    if rate <= 0:
        return 1.0
    return (choices + prior_strength * rate) / (rate * (exposure + prior_strength))


@dataclass(frozen=True)
class PairEvidence:
    """What the ranking needs to know of one (source, target) pair."""

    choices: int
    exposure: float
    score: float
    links: int = 0


def hybrid_rank(
    *,
    visual: Sequence[tuple[int, float]],
    evidence: Mapping[int, PairEvidence],
    k: int,
    evidence_weight: float,
    min_choices: int,
    link_weight: float,
    min_links: int,
    explore_below_exposure: float,
) -> list[int]:
    """The k targets of the hybrid list: the visual candidates and the co-chosen ones, re-ranked.

    Each candidate's rank value is its visual similarity + ``evidence_weight`` × ln(score) +
    ``link_weight`` × ln(1 + links): the logs, so a pair chosen twice as often as average gains
    what one chosen half as often loses, and each further link adds less.
    Similarities are first made non-increasing along ``visual`` (each is capped by the ones
    above it): the visual order is the authority on similarity, the values only give the
    scale, so a candidate without evidence (score 1, ln = 0) never overtakes one above it.
    Targets the visual search did not return join with the lowest similarity of the candidates
    when chosen from this source at least ``min_choices`` times or linked to it ``min_links`` times.

    Exploration: when none of the first k has less than ``explore_below_exposure`` exposure,
    the k-th place goes to the best visual candidate that has, so an image new to the
    neighbourhood is still shown and can earn evidence. It depends on nothing but its inputs,
    so a cached page shows the same list until the evidence changes.

    With no evidence the result is exactly the first k of ``visual``.
    """
    if k <= 0:
        return []

    def term(pair: PairEvidence | None) -> float:
        if pair is None:
            return 0.0
        # A score of 0 only comes from a prior strength of 0; keep the log finite.
        return evidence_weight * math.log(max(pair.score, 1e-12)) + link_weight * math.log1p(pair.links)

    candidates: list[tuple[float, int, int]] = []  # (rank value, place in the candidates, target)
    seen: set[int] = set()
    ceiling = math.inf
    for place, (target, similarity) in enumerate(visual):
        if target in seen:
            continue
        seen.add(target)
        ceiling = min(ceiling, similarity)
        candidates.append((ceiling + term(evidence.get(target)), place, target))
    floor = ceiling if candidates else 0.0
    co_chosen = sorted(
        (
            target for target, pair in evidence.items()
            if target not in seen and (pair.choices >= min_choices or pair.links >= min_links)
        ),
        key=lambda target: (-term(evidence[target]), target),
    )
    for place, target in enumerate(co_chosen, start=len(candidates)):
        candidates.append((floor + term(evidence[target]), place, target))
    # Ties keep the visual order (then the co-chosen's own), so equal values never shuffle.
    ranked = [target for _, _, target in sorted(candidates, key=lambda item: (-item[0], item[1]))]
    shown = ranked[:k]

    def unexplored(target: int) -> bool:
        pair = evidence.get(target)
        return pair is None or pair.exposure < explore_below_exposure

    if len(shown) == k and not any(unexplored(target) for target in shown):
        newcomer = next((target for target, _ in visual if target not in shown and unexplored(target)), None)
        if newcomer is not None:
            shown[-1] = newcomer
    return shown


def team_draft_interleave(
    *, visual: Sequence[int], hybrid: Sequence[int], k: int, seed: int
) -> list[tuple[int, Team]]:
    """Team-draft interleaving (Radlinski, Kurup & Joachims, CIKM 2008) of two rankings.

    Like captains picking teams: the team with fewer picks so far (a coin toss when even)
    adds its best item not yet in the list, and that item is credited to it. A choice then
    votes for the team whose item it was; since each team's picks are its own top items and
    the teams take turns, position bias favours neither. Stops at k items, or when either
    ranking has nothing left to add (the original algorithm's rule, which keeps the team
    sizes within one). ``seed`` makes the coin tosses repeatable, so a cached page is stable.
    """
    coin = random.Random(seed)
    interleaved: list[tuple[int, Team]] = []
    included: set[int] = set()
    picks: dict[Team, int] = {"visual": 0, "hybrid": 0}
    rankings: dict[Team, Sequence[int]] = {"visual": visual, "hybrid": hybrid}
    cursors: dict[Team, int] = {"visual": 0, "hybrid": 0}

    def next_of(team: Team) -> int | None:
        ranking = rankings[team]
        while cursors[team] < len(ranking) and ranking[cursors[team]] in included:
            cursors[team] += 1
        return ranking[cursors[team]] if cursors[team] < len(ranking) else None

    while len(interleaved) < k and next_of("visual") is not None and next_of("hybrid") is not None:
        if picks["visual"] != picks["hybrid"]:
            team: Team = "visual" if picks["visual"] < picks["hybrid"] else "hybrid"
        else:
            team = "visual" if coin.random() < 0.5 else "hybrid"
        item = next_of(team)
        interleaved.append((item, team))
        included.add(item)
        picks[team] += 1
    return interleaved


def stable_hash(*parts: object) -> int:
    """A 64-bit hash of ``parts`` that is the same in every process and run (unlike ``hash()``,
    which Python salts per process), so every web worker gives a source the same arm and coin."""
    text = ":".join(str(part) for part in parts)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def ab_arm(*, source_id: int) -> Team:
    """The A/B split by source image: half the sources always show the visual list, half the hybrid one."""
    return "hybrid" if stable_hash("ab", source_id) % 2 else "visual"

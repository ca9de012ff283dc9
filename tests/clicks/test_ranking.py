"""The hybrid list, team-draft interleaving and the A/B split: what visitors would see change, and what must not."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clicks import ranking
from clicks.ranking import PairEvidence, ab_arm, evidence_score, hybrid_rank, team_draft_interleave
from tests.conftest import PROJECT_DIR

RANKING = {
    "evidence_weight": 0.1, "min_choices": 3, "link_weight": 0.1, "min_links": 2, "explore_below_exposure": 10.0,
}

ids = st.integers(min_value=1, max_value=10**12)
similarities = st.floats(min_value=-1.0, max_value=1.0, allow_nan=False)
visual_lists = st.lists(st.tuples(ids, similarities), unique_by=lambda item: item[0], max_size=60)


def nearest_first(*similarities: float, first_id: int = 1) -> list[tuple[int, float]]:
    return [(first_id + place, similarity) for place, similarity in enumerate(similarities)]


# --- Cold start ---------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(visual=visual_lists, k=st.integers(min_value=0, max_value=60))
def test_without_evidence_the_hybrid_list_is_the_visual_list(visual, k):
    # Any similarities, even out of order or tied: the visual order is what stands.
    assert hybrid_rank(visual=visual, evidence={}, k=k, **RANKING) == [target for target, _ in visual[:k]]


@settings(max_examples=200, deadline=None)
@given(visual=visual_lists, k=st.integers(min_value=1, max_value=60))
def test_pairs_at_exactly_the_prior_change_nothing(visual, k):
    """Evidence rows that say "average" (score 1, little exposure) keep the visual order too."""
    evidence = {target: PairEvidence(choices=0, exposure=1.0, score=1.0) for target, _ in visual[::2]}
    assert hybrid_rank(visual=visual, evidence=evidence, k=k, **RANKING) == [target for target, _ in visual[:k]]


# --- Evidence re-ranks ----------------------------------------------------------------------


def test_a_candidate_visitors_prefer_rises_above_more_similar_ones():
    visual = nearest_first(0.95, 0.94, 0.93, 0.92, 0.91, 0.90, 0.89, 0.88)
    preferred = PairEvidence(choices=40, exposure=60.0, score=5.0)  # ln 5 x 0.1 = +0.16
    ranked = hybrid_rank(visual=visual, evidence={7: preferred}, k=4, **RANKING)
    assert ranked == [7, 1, 2, 3]


def test_a_target_shown_often_and_never_chosen_sinks():
    visual = nearest_first(0.95, 0.94, 0.93, 0.92, 0.91, 0.90)
    ignored = PairEvidence(choices=0, exposure=200.0, score=0.1)  # ln 0.1 x 0.1 = -0.23
    ranked = hybrid_rank(visual=visual, evidence={1: ignored}, k=4, **RANKING)
    assert ranked == [2, 3, 4, 5]


def test_a_target_visitors_often_choose_joins_though_the_visual_search_missed_it():
    visual = nearest_first(0.95, 0.94, 0.93, 0.92)
    evidence = {
        99: PairEvidence(choices=12, exposure=15.0, score=4.0),
        98: PairEvidence(choices=2, exposure=2.0, score=4.0),  # under CLICKS_MIN_CHOICES: not yet
    }
    ranked = hybrid_rank(visual=visual, evidence=evidence, k=3, **RANKING)
    assert ranked[0] == 99 and 98 not in ranked
    assert set(ranked[1:]) == {1, 2}


def test_a_picture_linked_through_co_chosen_ones_joins_though_no_list_showed_it():
    visual = nearest_first(0.95, 0.94, 0.93, 0.92)
    evidence = {
        77: PairEvidence(choices=0, exposure=0.0, score=1.0, links=4),  # ln 5 x 0.1 = +0.16
        78: PairEvidence(choices=0, exposure=0.0, score=1.0, links=1),  # under min_links: one stray choice
    }
    ranked = hybrid_rank(visual=visual, evidence=evidence, k=3, **RANKING)
    assert ranked[0] == 77 and 78 not in ranked


def test_links_lift_a_visual_neighbour_and_more_links_lift_more():
    visual = nearest_first(0.95, 0.94, 0.93, 0.92)
    evidence = {
        3: PairEvidence(choices=0, exposure=0.0, score=1.0, links=2),
        4: PairEvidence(choices=0, exposure=0.0, score=1.0, links=9),
    }
    assert hybrid_rank(visual=visual, evidence=evidence, k=4, **RANKING) == [4, 3, 1, 2]
    # Without a weight for links the visual order stands.
    unweighted = {**RANKING, "link_weight": 0.0}
    assert hybrid_rank(visual=visual, evidence=evidence, k=4, **unweighted) == [1, 2, 3, 4]


def test_a_new_neighbour_gets_the_last_place_once_the_others_are_well_explored():
    visual = nearest_first(0.95, 0.94, 0.93, 0.92, 0.91)
    seen_enough = {target: PairEvidence(choices=5, exposure=50.0, score=1.2) for target in (1, 2, 3, 4)}
    # 5 is new (no row): below the others by similarity and by score, it still gets shown.
    assert hybrid_rank(visual=visual, evidence=seen_enough, k=3, **RANKING) == [1, 2, 5]
    # Once it has been seen enough, it competes on its own evidence.
    explored = {**seen_enough, 5: PairEvidence(choices=0, exposure=50.0, score=0.5)}
    assert hybrid_rank(visual=visual, evidence=explored, k=3, **RANKING) == [1, 2, 3]


def test_smoothing_keeps_one_lucky_choice_below_a_well_measured_favourite():
    lucky = evidence_score(choices=1, exposure=2.0, rate=0.05, prior_strength=20.0)
    favourite = evidence_score(choices=100, exposure=1000.0, rate=0.05, prior_strength=20.0)
    assert favourite > lucky > 1.0
    assert evidence_score(choices=0, exposure=0.0, rate=0.05, prior_strength=20.0) == pytest.approx(1.0)


def test_a_choice_low_in_a_list_counts_for_more_than_one_at_the_top():
    top = evidence_score(choices=1, exposure=10 * ranking.examination_probability(1), rate=0.05, prior_strength=20.0)
    low = evidence_score(choices=1, exposure=10 * ranking.examination_probability(8), rate=0.05, prior_strength=20.0)
    assert low > top


@settings(max_examples=200, deadline=None)
@given(
    visual=visual_lists,
    scores=st.lists(st.floats(min_value=0.01, max_value=100.0), max_size=60),
    k=st.integers(min_value=0, max_value=30),
)
def test_the_hybrid_list_is_deterministic_and_never_repeats_an_image(visual, scores, k):
    evidence = {
        target: PairEvidence(choices=int(score), exposure=score * 3, score=score)
        for (target, _), score in zip(visual, scores, strict=False)
    }
    first = hybrid_rank(visual=visual, evidence=evidence, k=k, **RANKING)
    assert first == hybrid_rank(visual=list(visual), evidence=dict(reversed(evidence.items())), k=k, **RANKING)
    assert len(first) == len(set(first)) == min(k, len(visual))


# --- Interleaving ---------------------------------------------------------------------------


rankings = st.lists(st.integers(min_value=1, max_value=40), unique=True, max_size=30)


@settings(max_examples=500, deadline=None)
@given(visual=rankings, hybrid=rankings, k=st.integers(min_value=0, max_value=30), seed=st.integers(0, 2**64 - 1))
def test_interleaving_is_fair_to_both_lists(visual, hybrid, k, seed):
    interleaved = team_draft_interleave(visual=visual, hybrid=hybrid, k=k, seed=seed)
    items = [item for item, _ in interleaved]
    assert len(items) == len(set(items)) <= k
    teams = {name: [item for item, team in interleaved if team == name] for name in ("visual", "hybrid")}
    assert abs(len(teams["visual"]) - len(teams["hybrid"])) <= 1
    for team, ranking_of_team in (("visual", visual), ("hybrid", hybrid)):
        # Each item is credited to a list that holds it, and each list's top items are in.
        assert set(teams[team]) <= set(ranking_of_team)
        assert set(ranking_of_team[: len(teams[team])]) <= set(items)
    if len(visual) >= k and len(hybrid) >= k:
        assert len(items) == k
    assert interleaved == team_draft_interleave(visual=visual, hybrid=hybrid, k=k, seed=seed)


def test_the_coin_decides_who_picks_first_and_both_teams_get_to_lead():
    firsts = {team_draft_interleave(visual=[1, 2], hybrid=[3, 4], k=2, seed=seed)[0][1] for seed in range(20)}
    assert firsts == {"visual", "hybrid"}


def test_identical_lists_interleave_to_that_list():
    interleaved = team_draft_interleave(visual=[5, 6, 7, 8], hybrid=[5, 6, 7, 8], k=4, seed=3)
    assert [item for item, _ in interleaved] == [5, 6, 7, 8]


# --- A/B split ------------------------------------------------------------------------------


def test_the_ab_split_halves_the_sources():
    arms = [ab_arm(source_id=source_id) for source_id in range(1, 10_001)]
    assert 4800 <= arms.count("hybrid") <= 5200


def test_a_source_gets_the_same_arm_in_every_process():
    """Web workers are separate processes with differently salted hash(): they must agree."""
    script = "from clicks.ranking import ab_arm; print(''.join(ab_arm(source_id=i)[0] for i in range(200)))"
    runs = {
        subprocess.run(
            [sys.executable, "-c", script], cwd=PROJECT_DIR, capture_output=True, text=True, check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2")
    }
    assert runs == {"".join(ab_arm(source_id=i)[0] for i in range(200)) + "\n"}

"""Option length carries no cue: "pick the longest/shortest option" scores chance on plans and answers.

Before wrong plans kept the gold step count and distractors were chosen by length rank, the correct
plan was strictly the longest option in 48% of instances (chance 25%) and never the shortest.
"""

import random
import textwrap
from collections import Counter
from fractions import Fraction

import pytest
from scipy.stats import binomtest

from calderalab.eval.tasks import generate_instances, load_family_file
from calderalab.eval.tasks.options import balanced_subset, expected_rank_distance, unbiased_size

MAX_GAP = 0.06  # |rate - chance| allowed on top of the binomial test
MIN_P = 0.01


@pytest.fixture(scope="module")
def instances(ordinary):
    """The shared 920 instances (conftest: 20 per family at seeds 0 and 1)."""
    return ordinary


def pick_by_length(options, longest: bool, rng: random.Random) -> int:
    """The index a length heuristic picks; ties broken uniformly at random."""
    lengths = [len(o) for o in options]
    best = max(lengths) if longest else min(lengths)
    return rng.choice([i for i, n in enumerate(lengths) if n == best])


def heuristic_score(instances, which: str, longest: bool) -> tuple[int, int, float]:
    """(hits, n, chance) for a length heuristic on plan or answer options; chance = mean of 1/k."""
    rng = random.Random(1234)
    hits, chance = 0, 0.0
    for inst in instances:
        options, correct = (
            (inst.plan_options, inst.correct_option) if which == "plans" else (inst.answer_options, inst.correct_answer_option)
        )
        hits += pick_by_length(options, longest, rng) == correct
        chance += 1 / len(options)
    return hits, len(instances), chance / len(instances)


def at_chance(hits: int, n: int, chance: float) -> bool:
    rate = hits / n
    return binomtest(hits, n, chance).pvalue > MIN_P and abs(rate - chance) < MAX_GAP


@pytest.mark.parametrize("which", ["plans", "answers"])
@pytest.mark.parametrize("longest", [True, False], ids=["longest", "shortest"])
def test_length_heuristic_scores_chance(instances, which, longest):
    assert len(instances) >= 460
    hits, n, chance = heuristic_score(instances, which, longest)
    assert at_chance(hits, n, chance), f"{which}: {'longest' if longest else 'shortest'} rule {hits}/{n} = {hits / n:.3f}, chance {chance:.3f}"


def test_no_family_gives_its_plans_away_by_length(families, instances):
    # 40 instances per family at a true 25% exceed 50% with probability < 1e-3; the old families hit 100%.
    for family in families:
        mine = [i for i in instances if i.family == family.id]
        for longest in (True, False):
            share = sum(_strict_extreme(i.plan_options, i.correct_option, longest) for i in mine) / len(mine)
            assert share <= 0.5, (family.id, "longest" if longest else "shortest", share)


def _strict_extreme(options, correct: int, longest: bool) -> bool:
    lengths = [len(o) for o in options]
    best = max(lengths) if longest else min(lengths)
    return lengths[correct] == best and lengths.count(best) == 1


PLANTED = """\
id: planted_cue
question: "You have {x} apples and buy {y} more. How many apples do you have?"
variables:
  x: {type: int, min: 1, max: 50}
  y: {type: int, min: 1, max: 50}
steps:
  - {name: start, expr: "x", text: "Start from the {x} apples you already have at home"}
  - {name: total, expr: "start + y", text: "Add the {y} apples you bought at the market today"}
answer: {type: number, decimals: 0}
mutations:
  - {id: sub, kind: wrong_operation, replace: {total: {expr: "start - y", text: "Subtract {y}"}}}
  - {id: mul, kind: wrong_operation, replace: {total: {expr: "start * y", text: "Multiply by {y}"}}}
  - {id: dbl, kind: wrong_factor, replace: {total: {expr: "start + 2 * y", text: "Add {y} twice"}}}
"""


def test_the_check_flags_a_planted_length_cue(tmp_path):
    """A family whose wrong plans are all much shorter cannot be balanced: the check must say so."""
    path = tmp_path / "planted.yaml"
    path.write_text(textwrap.dedent(PLANTED))
    instances = generate_instances([load_family_file(path)], 460, seed=0)
    hits, n, chance = heuristic_score(instances, "plans", longest=True)
    assert hits == n  # the correct plan is always the longest
    assert not at_chance(hits, n, chance)
    hits, n, chance = heuristic_score(instances, "plans", longest=False)
    assert hits == 0 and not at_chance(hits, n, chance)


def test_every_wrong_plan_has_the_gold_step_count(families):
    for family in families:
        assert len(family.mutations) >= 3, family.id
        for mutation in family.mutations:
            assert len(mutation.steps) == family.n_steps, (family.id, mutation.id)


def test_generation_is_deterministic_in_the_seed(families):
    first = generate_instances(families, 4, seed=5)
    assert first == generate_instances(families, 4, seed=5)
    assert [i.plan_options for i in first] != [i.plan_options for i in generate_instances(families, 4, seed=6)]


def test_expected_rank_distance_spreads_ties_uniformly():
    assert expected_rank_distance(10, [3, 20, 30], 1) == 0  # rank 1 exactly
    assert expected_rank_distance(10, [3, 20, 30], 3) == 2
    # one shorter, two as long: rank uniform on 1..3, distances to 3 are 2, 1, 0
    assert expected_rank_distance(5, [5, 5, 3], 3) == Fraction(1)
    assert expected_rank_distance(5, [5, 5, 5], 0) == Fraction(0 + 1 + 2 + 3, 4)


def test_balanced_subset_hits_the_drawn_rank_exactly_when_reachable():
    lengths = [1, 2, 3, 7, 8, 9, 4]  # gold 5: four shorter, three longer, no ties
    ranks = Counter()
    for seed in range(400):
        target = random.Random(seed).randrange(4)  # the first draw balanced_subset makes
        chosen = balanced_subset(5, lengths, 3, random.Random(seed))
        assert len(chosen) == 3 and list(chosen) == sorted(set(chosen))
        rank = sum(lengths[i] < 5 for i in chosen)
        assert rank == target
        ranks[rank] += 1
    assert set(ranks) == {0, 1, 2, 3}


def test_balanced_subset_takes_the_nearest_rank_when_out_of_reach():
    lengths = [1, 2, 8, 9]  # two each side: with three shown only ranks 1 and 2 are reachable
    for seed in range(50):
        target = random.Random(seed).randrange(4)
        chosen = balanced_subset(5, lengths, 3, random.Random(seed))
        assert sum(lengths[i] < 5 for i in chosen) == min(max(target, 1), 2)
    with pytest.raises(ValueError, match="size must be between 0 and 4"):
        balanced_subset(5, lengths, 5, random.Random(0))


def test_unbiased_size_shows_fewer_options_only_when_that_removes_the_bias():
    assert unbiased_size(5, [1, 2, 3, 7, 8, 9], 3, 2) == 3  # three each side: all ranks reachable
    assert unbiased_size(5, [1, 2, 7, 8, 9], 3, 2) == 2  # two shorter: three options are unbiased
    assert unbiased_size(5, [1, 7, 8, 9], 3, 2) == 3  # unbiased nowhere: keep the most options
    assert unbiased_size(5, [1, 9], 3, 2) == 2

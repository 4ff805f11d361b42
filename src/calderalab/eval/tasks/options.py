"""Which distractors an instance shows: chosen so that option length says nothing about correctness.

Most wrong plans are a gold plan with one step changed, and a changed step is easily shorter or
longer than the one it replaces. If the shown distractors were drawn blindly, the correct option's
rank by character length would follow the family's wording: it was strictly the longest plan in 48%
of instances (chance 25%) before this module existed. Here the correct option's rank among the
shown options is chosen first (drawn uniformly for answer options; for plan options, every rank once
per block of instances, `blocked_rank`), and the distractor set that comes closest is shown, so that
"pick the longest" and "pick the shortest" both score chance. Which plan sets are candidates at all
is factorial.py's concern. Pure; randomness comes in as rng.
"""

from __future__ import annotations

import itertools
import random
from fractions import Fraction
from typing import Callable, Sequence


def expected_rank_distance(gold_len: int, shown_lens: Sequence[int], target: int) -> Fraction:
    """E|rank - target| of the correct option among (gold + shown), ranks 0 = shortest.

    Equal lengths are ordered uniformly at random, as a length-picking heuristic would break them:
    with s shown options shorter than the gold one and t as long, its rank is uniform on s..s+t.
    """
    shorter = sum(n < gold_len for n in shown_lens)
    tied = sum(n == gold_len for n in shown_lens)
    ranks = range(shorter, shorter + tied + 1)
    return Fraction(sum(abs(r - target) for r in ranks), len(ranks))


def blocked_rank(rng_of_block: Callable[[int], random.Random], index: int, n_options: int) -> int:
    """The target length rank of instance `index`: every rank 0..n_options-1 once in each block of
    n_options consecutive instances, in an order drawn per block by rng_of_block(block number).

    Independent draws leave the gold rank uniform only on average (920 instances drew the rank
    "shortest" 202 times, 2.4 standard deviations low); blocks make it uniform in every family.
    """
    order = list(range(n_options))
    rng_of_block(index // n_options).shuffle(order)
    return order[index % n_options]


def unbiased_size(gold_len: int, distractor_lens: Sequence[int], max_size: int, min_size: int) -> int:
    """How many distractors to show: the largest size in min_size..max_size at which every gold rank
    0..size can be hit exactly (at least `size` distractors strictly shorter and `size` strictly longer),
    else the largest possible size (the rank is then only as near the target as the lengths allow).

    Showing fewer options when that is the only unbiased choice keeps "pick the longest" at chance
    (mean of 1/k) instead of leaving the correct option stuck in the middle of the options.
    """
    max_size = min(max_size, len(distractor_lens))
    shorter = sum(n < gold_len for n in distractor_lens)
    longer = sum(n > gold_len for n in distractor_lens)
    for size in range(max_size, min_size - 1, -1):
        if shorter >= size and longer >= size:
            return size
    return max_size


def nearest_rank_choice(gold_len: int, candidates: Sequence[Sequence[int]], rng: random.Random,
                        target: int | None = None) -> int:
    """Index of the candidate set of distractor lengths (all of one size) that puts the gold option
    nearest a target length rank.

    The target rank is given, or drawn uniformly on 0..size (size + 1 options); among candidates
    equally near it one is drawn uniformly. When every rank is reachable the gold rank is the target
    exactly; otherwise it is the nearest reachable rank.
    """
    sizes = {len(c) for c in candidates}
    if len(sizes) != 1:
        raise ValueError(f"candidate sets must be non-empty and of one size, got sizes {sorted(sizes)}")
    size = sizes.pop()
    if target is None:
        target = rng.randrange(size + 1)
    elif not 0 <= target <= size:
        raise ValueError(f"target rank must be between 0 and {size} ({size + 1} options), got {target}")
    distances = [expected_rank_distance(gold_len, c, target) for c in candidates]
    best = [i for i, d in enumerate(distances) if d == min(distances)]
    return best[rng.randrange(len(best))]


def balanced_subset(gold_len: int, distractor_lens: Sequence[int], size: int, rng: random.Random) -> tuple[int, ...]:
    """Indices (increasing) of `size` distractors whose lengths put the gold option nearest a drawn rank
    (nearest_rank_choice over every subset of that size). With at least `size` distractors both longer
    and shorter than the gold option, the gold rank is exactly uniform.
    """
    if not 0 <= size <= len(distractor_lens):
        raise ValueError(f"size must be between 0 and {len(distractor_lens)} (the number of distractors), got {size}")
    subsets = list(itertools.combinations(range(len(distractor_lens)), size))
    return subsets[nearest_rank_choice(gold_len, [[distractor_lens[i] for i in s] for s in subsets], rng)]

"""Honest bpw of the grid's plans on a model's structure, with no weights read (meta device).

    PYTHONPATH=src python benchmarks/fractional_bpw.py [MODEL] [--bits 2,2.5,3,3.5,4] [--ranks 0,32]

One row per bit width, two columns per rank: the plan's bpw as `grid` reports it (every stored bit,
`plans.plan_bpw`) and how many modules a fractional width raises to its upper neighbour (the rule
order of `calderalab.fractional`; `grid --profile` orders them by the budget allocator instead).
"""

from __future__ import annotations

import argparse

from calderalab import fractional
from calderalab.experiments.options import parse_ints
from calderalab.models import load_skeleton, module_shapes
from calderalab.plans import plan_bpw, spec_with, uniform_plan


def plan_for(b, rank: int, shapes, n_layers: int):
    """(plan, modules raised) of bit width b at this rank, as `grid` builds it without a profile."""
    def spec(bits: int):
        return spec_with(None, bits=bits, rank=rank)

    if not fractional.is_fractional(b):
        return uniform_plan(n_layers, spec(int(b))), 0
    lo, hi = (spec(x) for x in fractional.neighbours(b))
    plan = fractional.mixed_plan(lo, hi, b, shapes, fractional.rule_order(n_layers))
    return plan, sum(s == hi for _, s in plan.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="smollm2")
    parser.add_argument("--bits", default="2,2.5,3,3.5,4")
    parser.add_argument("--ranks", default="0,32")
    args = parser.parse_args()
    shapes = module_shapes(load_skeleton(args.model))
    n_layers = 1 + max(l for l, _ in shapes)
    ranks = parse_ints(args.ranks, "--ranks")
    head = " | ".join(f"rank {k}: bpw | raised" for k in ranks)
    print(f"| --bits | {head} |\n|---|" + "---|---|" * len(ranks))
    for b in fractional.parse_bit_widths(args.bits):
        cells = []
        for rank in ranks:
            plan, raised = plan_for(b, rank, shapes, n_layers)
            cells += [f"{plan_bpw(plan, shapes).bpw_fp16:.3f}", f"{raised}/{len(shapes)}"]
        print(f"| {fractional.bits_label(b)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

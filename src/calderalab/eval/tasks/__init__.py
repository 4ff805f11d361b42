"""Task families as data (YAML), the safe solver, and instance generation. No torch.

A family is a YAML file (see families/*.yaml): typed variables with domains, conditions, a gold
procedure of named steps run by the safe interpreter with exact arithmetic, declared wrong plans
(mutations), an answer type and a canonical assignment. Users add families with extra
directories (`load_families(extra_dirs=[...])`, `--tasks-dir`) without writing code.

File format (all fields are checked on load; errors name file, field and expectation):

    id: apples                       # unique, lower-case
    question: "... ${price} each ... {n} apples ..."   # {expr} placeholders over variables
    variables:                       # int/decimal: min, max, step; choice: values;
      price: {type: decimal, min: 0.5, max: 2, step: 0.25}   # names: values + count (a tuple);
      n: {type: int, min: 2, max: 9}                        # time: min/max "8:00 AM", step minutes
    conditions: ["change > 0"]       # over variables and step results; failing samples are redrawn
    steps:                           # 2-6 gold steps `name = expr`; text shows variables only
      - {name: cost, expr: "price * n", text: "Multiply ${price} by {n} apples"}
      - {name: change, expr: "20 - cost", text: "Subtract the cost from $20"}
    answer: {type: number, decimals: 2, tolerance: 0}   # number | time | ordering
    mutations:                       # >= 2 wrong plans: full `steps`, or replace/swap of gold steps, each
      - {id: add, kind: wrong_operation, replace: {change: {expr: "20 + cost", text: "Add the cost to $20"}}}
      - {id: cost_only, kind: partial, replace: {change: {expr: "cost", text: "Report the cost as the change"}}}
                                     # with exactly the gold step count (a shorter plan gives itself away)
    canonical: {variables: {price: 1.25, n: 4}, answer: "15"}   # optional; checked on load

Expressions are Python-like but run by a whitelisting interpreter (interpreter.py).

Difficulty ladders (ladders/*.yaml, format in ladder.py) are chains of up to 6 rungs whose first k
make the k-step problem: `load_ladders()` reads them, `Ladder.family(k)` is an ordinary Family,
and `ladder_instances(ladders, n_per_step)` gives instances at every k.
"""

from calderalab.eval.tasks.generate import (
    CANONICAL_FAMILIES,
    build_instance,
    canonical_instances,
    generate_instances,
)
from calderalab.eval.tasks.ladder import Ladder, ladder_instances
from calderalab.eval.tasks.ladder_loader import load_ladder_file, load_ladders
from calderalab.eval.tasks.loader import load_families, load_family_file, parse_family
from calderalab.eval.tasks.schema import Family

__all__ = [
    "CANONICAL_FAMILIES",
    "Family",
    "Ladder",
    "build_instance",
    "canonical_instances",
    "generate_instances",
    "ladder_instances",
    "load_families",
    "load_ladder_file",
    "load_ladders",
    "load_family_file",
    "parse_family",
]

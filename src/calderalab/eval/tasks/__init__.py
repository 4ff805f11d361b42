"""Task families as data (YAML), the safe solver, and instance generation. No torch.

A family is a YAML file (see families/*.yaml): typed variables with domains, conditions, a gold
procedure of named steps run by the safe interpreter with exact arithmetic, declared wrong plans
(mutations), an answer type and a canonical assignment. Users add families with extra
directories (`load_families(extra_dirs=[...])`, `--tasks-dir`) without writing code.
"""

from calderalab.eval.tasks.generate import (
    CANONICAL_FAMILIES,
    build_instance,
    canonical_instances,
    generate_instances,
)
from calderalab.eval.tasks.loader import load_families, load_family_file, parse_family
from calderalab.eval.tasks.schema import Family

__all__ = [
    "CANONICAL_FAMILIES",
    "Family",
    "build_instance",
    "canonical_instances",
    "generate_instances",
    "load_families",
    "load_family_file",
    "parse_family",
]

"""What an evaluation runs: which instances, decoded and scored how. No torch, no results database.

`EvalSettings` is the one evaluation settings type of `calderalab eval` and of the experiments
(ablate, sweep, min-protect, grid, study); it holds an `EvalConfig` (decoding and scoring, whose
defaults live in eval.runner only) rather than re-declaring its fields. `build_instances` is the
one way instances are made from it, for every suite. An experiment evaluates several passes of
one settings value (its main suite, the difficulty ladder, the canonical seven by generation):
`experiment_passes` spells them out as settings values of their own.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from calderalab.eval.runner import EvalConfig
from calderalab.eval.types import Instance, Scoring

Suite = Literal["goodhart", "ladder", "canonical", "gsm8k"]
SUITES: tuple[str, ...] = ("goodhart", "ladder", "canonical", "gsm8k")


@dataclass(frozen=True)
class EvalSettings:
    """Which instances, decoded and scored how.

    Suites: `goodhart` — n instances of every task family per seed (default 5 × 23 families × seeds
    0,1,2 = 345, so a rate's 95% interval is about ±5 points); `ladder` — n instances of every
    ladder family at every step count k = 1 … 6 per seed; `canonical` — the report's seven tests
    (N = 7 supports no claim: ±30 points); `gsm8k` — n rows per seed, generation scoring only.

    canonical_first: a family's canonical assignment is its first instance for every seed.
    families: only these task-family ids (empty: all; their canonical tests included).
    ladder_per_step, generate_canonical: the extra passes an experiment runs beside its main suite
    (`experiment_passes`): the ladder with that many instances per ladder and k (0: none), and the
    canonical seven scored by greedy generation (the report's own protocol).
    """

    suite: Suite = "goodhart"
    n: int = 5  # goodhart: per family and seed; ladder: per ladder, step count and seed; gsm8k: rows per seed
    seeds: tuple[int, ...] = (0, 1, 2)
    decoding: EvalConfig = field(default_factory=EvalConfig)
    tasks_dirs: tuple[str, ...] = ()  # extra task-family (and ladder) directories
    families: tuple[str, ...] = ()
    data_path: str | None = None  # GSM8K: a <split>.jsonl file or a data dir holding gsm8k/; None = shared data
    canonical_first: bool = False
    ladder_per_step: int = 0
    generate_canonical: bool = False

    def __post_init__(self) -> None:
        if self.suite not in SUITES:
            raise ValueError(f"--suite must be one of {', '.join(SUITES)}, got {self.suite!r}")
        if self.n <= 0:
            raise ValueError(f"n must be > 0 (--n, --n-per-family), got {self.n}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"--seeds must be distinct integers, got {list(self.seeds)}")
        if self.suite == "gsm8k" and self.scoring != "generate":
            raise ValueError("GSM8K has no answer options: use --scoring generate with --suite gsm8k")
        if self.suite != "gsm8k" and self.data_path is not None:
            raise ValueError("--data is only for --suite gsm8k; goodhart instances come from task families")
        if self.ladder_per_step < 0:
            raise ValueError(f"ladder_per_step must be >= 0 (0: no ladder), got {self.ladder_per_step}")

    @property
    def scoring(self) -> Scoring:
        return self.decoding.scoring

    @property
    def instance_seeds(self) -> tuple[int, ...]:
        """The seeds the instances really come from (the canonical seven have seed 0 only)."""
        return (0,) if self.suite == "canonical" else self.seeds

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _gsm8k_instances(settings: EvalSettings) -> list[Instance]:
    """settings.n rows per seed; rows drawn by several seeds appear once (their uid is the row number)."""
    from calderalab.eval.gsm8k import load_gsm8k

    split, data_dir = "test", settings.data_path
    if data_dir is not None and data_dir.endswith(".jsonl"):
        path = Path(data_dir)
        split, data_dir = path.stem, str(path.parent.parent)
    seen: dict[str, Instance] = {}
    for seed in settings.seeds:
        for inst in load_gsm8k(split=split, limit=settings.n, seed=seed, data_dir=data_dir):
            seen.setdefault(inst.uid, inst)
    return list(seen.values())


def _chosen(families: list, wanted: tuple[str, ...]) -> list:
    if not wanted:
        return families
    unknown = sorted(set(wanted) - {f.id for f in families})
    if unknown:
        raise ValueError(f"unknown task families {unknown}; known: {sorted(f.id for f in families)}")
    return [f for f in families if f.id in wanted]


def build_instances(settings: EvalSettings) -> list[Instance]:
    """The settings' instances (see EvalSettings for the suites), deterministic in the seeds."""
    from calderalab.eval import tasks

    if settings.suite == "gsm8k":
        return _gsm8k_instances(settings)
    if settings.suite == "ladder":
        ladders = tasks.load_ladders(extra_dirs=settings.tasks_dirs)
        return [i for seed in settings.seeds for i in tasks.ladder_instances(ladders, settings.n, seed)]
    families = tasks.load_families(extra_dirs=settings.tasks_dirs)
    if settings.suite == "canonical":
        return [i for i in tasks.canonical_instances(families) if not settings.families or i.family in settings.families]
    chosen = _chosen(families, settings.families)
    return [i for seed in settings.seeds
            for i in tasks.generate_instances(chosen, settings.n, seed, include_canonical=settings.canonical_first)]


def experiment_passes(settings: EvalSettings) -> list[tuple[EvalSettings, list[Instance]]]:
    """(pass, its instances) for every pass an experiment evaluates each configuration on, main suite
    first: the suite itself, the ladder (ladder_per_step > 0) and the canonical seven by generation
    (generate_canonical, unless the main suite already is exactly that). Each pass is a settings
    value of its own, so each stored run records its real suite, seeds and decoding."""
    main = dataclasses.replace(settings, ladder_per_step=0, generate_canonical=False)
    out = [(main, build_instances(main))]
    if settings.ladder_per_step:
        ladder = dataclasses.replace(main, suite="ladder", n=settings.ladder_per_step, families=(), canonical_first=False)
        out.append((ladder, build_instances(ladder)))
    if settings.generate_canonical:
        canonical = dataclasses.replace(main, suite="canonical", canonical_first=False,
                                        decoding=dataclasses.replace(settings.decoding, scoring="generate"))
        instances = build_instances(canonical)
        if not (main.scoring == "generate" and len(out[0][1]) == len(instances)):
            out.append((canonical, instances))
    return out

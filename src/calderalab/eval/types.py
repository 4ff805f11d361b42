"""Shared value types of the evaluation: task instances and probe outcomes. No torch, no transformers.

These are the contract between task generation (`eval.tasks`), probing/scoring
(`eval.probes`, `eval.backends`), Goodhart metrics (`eval.goodhart`), statistics and the
results database. Everything here is plain data so that it serialises to JSON/SQLite.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Literal

AnswerType = Literal["number", "time", "ordering", "text"]
Scoring = Literal["generate", "choice"]
ProbeKind = Literal["execution", "understanding"]


class Verdict(str, enum.Enum):
    """Per-instance outcome of the two probes (DESIGN.md, Probe suite)."""

    PASS = "PASS"  # understood and executed
    GAP = "GAP"  # understood, not executed: the Goodhart Gap
    FAIL = "FAIL"  # neither
    LUCKY = "LUCKY"  # executed without understanding

    @staticmethod
    def of(understood: bool, executed: bool) -> "Verdict":
        if understood:
            return Verdict.PASS if executed else Verdict.GAP
        return Verdict.LUCKY if executed else Verdict.FAIL


@dataclass(frozen=True)
class Instance:
    """One generated problem of a task family, with both probes' material.

    `answer` is written as the report writes it ("15", "4:15 PM", "D<C<B<A", "6.3").
    `plan_options` are the understanding probe's candidate procedures, already shuffled
    by the instance seed; `correct_option` indexes the right one (letter = "ABCD..."[i]).
    """

    family: str
    index: int  # position within its family for this generation seed (0 = canonical when canonical=True)
    seed: int  # generation seed that produced it
    question: str  # the problem text shown in the execution probe
    answer: str
    answer_type: AnswerType
    tolerance: float  # absolute tolerance for numbers (0 = exact); ignored for other types
    n_steps: int
    variables: dict[str, Any] = field(default_factory=dict)
    steps: tuple[str, ...] = ()  # the gold procedure, human-readable, in order
    plan_question: str = ""  # the understanding probe's question text
    plan_options: tuple[str, ...] = ()
    correct_option: int = 0
    # Candidate final answers for scoring the execution probe by log-likelihood (`choice`):
    # the gold answer plus up to 3 distinct answers of the mutated (wrong) plans, chosen so that answer
    # length carries no cue (tasks/options.py), shuffled by seed.
    answer_options: tuple[str, ...] = ()
    correct_answer_option: int = 0
    canonical: bool = False  # True for the report's seven seed instances

    @property
    def uid(self) -> str:
        """Stable id across runs: family/seed/index."""
        return f"{self.family}/{self.seed}/{self.index}"

    @property
    def correct_letter(self) -> str:
        return "ABCDEFGHIJ"[self.correct_option]


@dataclass(frozen=True)
class ProbeResult:
    """One probe of one instance after scoring."""

    instance_uid: str
    probe: ProbeKind
    scoring: Scoring
    correct: bool
    parsed: str | None  # the parsed answer (or chosen letter); None = parse failure
    raw_output: str  # generated text, or a JSON list of option log-likelihoods for `choice`
    truncated: bool = False  # generation hit the token cap before the answer line

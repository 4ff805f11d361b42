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
Scoring = Literal["choice", "cloze", "generate"]
SCORINGS: tuple[str, ...] = ("choice", "cloze", "generate")
ProbeKind = Literal["execution", "understanding"]
# How a probe's options were scored (ChoiceDetail.mode):
#   letters  — lettered options, every cyclic rotation scored, letter log-likelihoods summed per option;
#   cloze    — each option's own text scored as the continuation, mean log-likelihood per token;
#   answers  — each candidate final answer scored as the continuation after "Answer:" (execution);
#   generated — a greedy reply, the chosen letter parsed from it.
ChoiceMode = Literal["letters", "cloze", "answers", "generated"]


def check_scoring(scoring: str) -> str:
    """`scoring` if it is one of SCORINGS, else a ValueError naming the choices."""
    if scoring not in SCORINGS:
        raise ValueError(f"scoring must be one of {', '.join(SCORINGS)}, got {scoring!r}")
    return scoring


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
class ChoiceDetail:
    """How one probe with options was decided: what the validity statistics need, stored with the outcome.

    Indices refer to the instance's own option order (the order shown in rotation 0, so an index is
    also the letter the option had there). `chosen` is the pick (debiased for `letters`; None when a
    generated reply named no valid letter); `raw_chosen` is the pick from rotation 0 alone (the
    first-order, position-biased pick; equal to `chosen` for other modes). `lengths` are the option
    texts' characters (the surface cue a length heuristic uses). `scores` are the per-option scores
    the pick maximised; `rotations[r][p]` the log-likelihood of letter p in rotation r, where
    rotation r shows option (p + r) mod k at letter p. `overlap[j]` (understanding probes; empty for
    answers and for rows stored before it existed) counts the (step position, step text) pairs option j
    shares with the other options (scoring.step_overlap): the cue a "pick the most shared plan" rule reads.
    """

    mode: ChoiceMode
    n_options: int
    correct: int
    chosen: int | None
    raw_chosen: int | None
    lengths: tuple[int, ...]
    scores: tuple[float, ...] = ()
    rotations: tuple[tuple[float, ...], ...] = ()
    overlap: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.n_options < 2 or len(self.lengths) != self.n_options:
            raise ValueError(f"ChoiceDetail needs >= 2 options and one length each, got {self.n_options}, {self.lengths}")
        if self.overlap and len(self.overlap) != self.n_options:
            raise ValueError(f"ChoiceDetail.overlap needs one count per option ({self.n_options}), got {self.overlap}")
        for name in ("correct", "chosen", "raw_chosen"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < self.n_options:
                raise ValueError(f"ChoiceDetail.{name}={value} outside 0..{self.n_options - 1}")

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "n_options": self.n_options, "correct": self.correct, "chosen": self.chosen,
                "raw_chosen": self.raw_chosen, "lengths": list(self.lengths), "scores": list(self.scores),
                "rotations": [list(r) for r in self.rotations], "overlap": list(self.overlap)}

    @staticmethod
    def from_dict(data: dict[str, Any]) -> "ChoiceDetail":
        return ChoiceDetail(data["mode"], int(data["n_options"]), int(data["correct"]), data["chosen"],
                            data["raw_chosen"], tuple(data["lengths"]), tuple(data.get("scores", ())),
                            tuple(tuple(r) for r in data.get("rotations", ())), tuple(data.get("overlap", ())))


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
    detail: ChoiceDetail | None = None  # options, pick and scores (None: a generated execution reply)

"""The evaluation runner: instances → probes → one batched model pass per probe kind → scores.

Follows render (eval.probes, pure) → tokenise + model call (eval.backends) → score (pure, here).
Instances without plan options (GSM8K) get the execution probe only. Parse failures are
counted apart from wrong answers, and the share of generations cut by the token cap is
reported, so a too-small cap cannot pass for a weak model.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from calderalab.eval.backends import Generation, HFBackend, OptionScores
from calderalab.eval.goodhart import GoodhartSummary, summarize
from calderalab.eval.outcomes import InstanceOutcome
from calderalab.eval.parse import is_correct, parse_answer
from calderalab.eval.probes import (
    ANSWER_PREFIX,
    execution_choice,
    execution_messages,
    has_understanding_probe,
    parse_letter,
    understanding_choice,
    understanding_messages,
)
from calderalab.eval.types import Instance, ProbeKind, ProbeResult, Scoring, Verdict

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (items done, items total)


@dataclass(frozen=True)
class EvalConfig:
    """Decoding and scoring settings; the only place their defaults live.

    max_new_tokens caps execution replies (192–256 fits step-by-step answers of a small model;
    the truncated share says when it does not); understanding replies are a letter, so their
    cap is small. length_normalize: choose choice options by per-token log-likelihood.
    """

    scoring: Scoring = "generate"
    batch_size: int = 8
    max_new_tokens: int = 256
    understanding_max_new_tokens: int = 48
    stop_at_answer: bool = True
    length_normalize: bool = False

    def __post_init__(self) -> None:
        if self.scoring not in ("generate", "choice"):
            raise ValueError(f"scoring must be 'generate' or 'choice', got {self.scoring!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.max_new_tokens < 1 or self.understanding_max_new_tokens < 1:
            raise ValueError(
                f"token caps must be >= 1, got max_new_tokens={self.max_new_tokens}, "
                f"understanding_max_new_tokens={self.understanding_max_new_tokens}"
            )

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class EvalRun:
    """Everything one evaluation produced. results: one ProbeResult per (instance, probe)."""

    config: EvalConfig
    families: dict[str, str]  # uid -> family, in instance order
    results: tuple[ProbeResult, ...]
    verdicts: dict[str, Verdict | None]  # None: no understanding probe
    parse_failures: dict[str, int]  # probe kind -> replies with no parsable answer
    truncated: dict[str, int]  # probe kind -> generations cut by the token cap
    generated_tokens: int
    seconds: float
    notes: tuple[str, ...] = field(default=())
    expected: dict[str, str] = field(default_factory=dict)  # uid -> the instance's answer

    @property
    def n_generated(self) -> int:
        return sum(1 for r in self.results if r.scoring == "generate")

    @property
    def truncated_share(self) -> float:
        return sum(self.truncated.values()) / self.n_generated if self.n_generated else 0.0

    def result(self, uid: str, probe: ProbeKind) -> ProbeResult | None:
        return next((r for r in self.results if r.instance_uid == uid and r.probe == probe), None)

    def outcomes(self) -> list[InstanceOutcome]:
        by_key = {(r.instance_uid, r.probe): r for r in self.results}
        out = []
        for uid, family in self.families.items():
            und = by_key.get((uid, "understanding"))
            exe = by_key[(uid, "execution")]
            out.append(InstanceOutcome(uid, family, self.expected.get(uid, ""), None if und is None else und.correct,
                                       exe.correct, exe.parsed))
        return out

    def summary(self) -> GoodhartSummary:
        return summarize(self.outcomes())


def _score_execution_generation(inst: Instance, gen: Generation) -> ProbeResult:
    parsed = parse_answer(gen.text, inst.answer_type)
    correct = parsed is not None and bool(is_correct(gen.text, inst.answer, inst.answer_type, inst.tolerance))
    return ProbeResult(inst.uid, "execution", "generate", correct, parsed, gen.text, gen.truncated)


def _score_understanding_generation(inst: Instance, gen: Generation) -> ProbeResult:
    letter = parse_letter(gen.text, len(inst.plan_options))
    return ProbeResult(inst.uid, "understanding", "generate", letter == inst.correct_letter, letter, gen.text, gen.truncated)


def _score_choice(inst: Instance, probe: ProbeKind, scores: OptionScores, labels: Sequence[str], correct: int, normalize: bool) -> ProbeResult:
    values = scores.normalized() if normalize else scores.logliks
    best = max(range(len(values)), key=lambda i: (values[i], -i))  # ties: the first option
    return ProbeResult(inst.uid, probe, "choice", best == correct, labels[best], json.dumps([round(v, 6) for v in scores.logliks]))


def _counter(total: int, progress: Progress | None) -> Callable[[int], None] | None:
    if progress is None:
        return None
    done = [0]

    def advance(n: int) -> None:
        done[0] += n
        progress(done[0], total)

    return advance


def _run_generate(backend: HFBackend, instances: Sequence[Instance], probed: Sequence[Instance], cfg: EvalConfig, progress: Progress | None) -> tuple[list[ProbeResult], int]:
    advance = _counter(len(instances) + len(probed), progress)
    gens_e = backend.generate([execution_messages(i) for i in instances], cfg.max_new_tokens, cfg.stop_at_answer, advance)
    gens_u = backend.generate([understanding_messages(i) for i in probed], cfg.understanding_max_new_tokens, cfg.stop_at_answer, advance)
    results = [_score_execution_generation(i, g) for i, g in zip(instances, gens_e)]
    results += [_score_understanding_generation(i, g) for i, g in zip(probed, gens_u)]
    return results, sum(g.n_tokens for g in gens_e + gens_u)


def _run_choice(backend: HFBackend, instances: Sequence[Instance], probed: Sequence[Instance], cfg: EvalConfig, progress: Progress | None) -> list[ProbeResult]:
    items_e = [execution_choice(i) for i in instances]  # raises for instances without answer_options
    items_u = [understanding_choice(i) for i in probed]
    advance = _counter(sum(len(c.continuations) for c in items_e + items_u), progress)
    pairs = [(list(c.messages), c.continuations) for c in items_e + items_u]
    scores = backend.choice_scores(pairs, assistant_prefix=ANSWER_PREFIX, on_batch=advance)
    results = []
    for inst, item, sc in zip(instances, items_e, scores[: len(items_e)]):
        results.append(_score_choice(inst, "execution", sc, inst.answer_options, item.correct, cfg.length_normalize))
    for inst, item, sc in zip(probed, items_u, scores[len(items_e) :]):
        labels = [c.strip() for c in item.continuations]
        results.append(_score_choice(inst, "understanding", sc, labels, item.correct, cfg.length_normalize))
    return results


def _check_instances(instances: Sequence[Instance]) -> None:
    if not instances:
        raise ValueError("no instances to evaluate: generate some with eval.tasks or load a suite")
    uids = [i.uid for i in instances]
    if len(set(uids)) != len(uids):
        raise ValueError(f"duplicate instance uids: {sorted({u for u in uids if uids.count(u) > 1})[:5]}")


def evaluate(
    model,
    tokenizer,
    instances: Sequence[Instance],
    scoring: Scoring | None = None,
    batch_size: int | None = None,
    max_new_tokens: int | None = None,
    progress: Progress | None = None,
    config: EvalConfig | None = None,
) -> EvalRun:
    """Run both probes on every instance (execution only where there are no plan options).

    Keyword arguments that are not None override `config` (default EvalConfig()).
    progress(done, total) is called after each batch.
    """
    overrides = {k: v for k, v in dict(scoring=scoring, batch_size=batch_size, max_new_tokens=max_new_tokens).items() if v is not None}
    cfg = EvalConfig(**{**(config or EvalConfig()).to_dict(), **overrides})
    _check_instances(instances)
    probed = [i for i in instances if has_understanding_probe(i)]
    backend = HFBackend(model, tokenizer, batch_size=cfg.batch_size)
    start = time.perf_counter()
    if cfg.scoring == "generate":
        results, n_tokens = _run_generate(backend, instances, probed, cfg, progress)
    else:
        results, n_tokens = _run_choice(backend, instances, probed, cfg, progress), 0
    seconds = time.perf_counter() - start
    und = {r.instance_uid: r.correct for r in results if r.probe == "understanding"}
    exe = {r.instance_uid: r.correct for r in results if r.probe == "execution"}
    verdicts = {i.uid: (Verdict.of(und[i.uid], exe[i.uid]) if i.uid in und else None) for i in instances}
    kinds = ("execution", "understanding")
    run = EvalRun(
        config=cfg,
        families={i.uid: i.family for i in instances},
        results=tuple(results),
        verdicts=verdicts,
        parse_failures={k: sum(r.parsed is None for r in results if r.probe == k) for k in kinds},
        truncated={k: sum(r.truncated for r in results if r.probe == k) for k in kinds},
        generated_tokens=n_tokens,
        seconds=seconds,
        expected={i.uid: i.answer for i in instances},
    )
    log.info("evaluated %d instances (%s) in %.1fs, truncated share %.2f", len(instances), cfg.scoring, seconds, run.truncated_share)
    return run

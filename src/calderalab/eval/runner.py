"""The evaluation runner: instances → probes → batched backend calls → picks (eval.scoring) → results.

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
from dataclasses import dataclass

from calderalab.eval.backends import Generation, HFBackend, OptionScores, ScoringBackend
from calderalab.eval.goodhart import GoodhartSummary, summarize
from calderalab.eval.outcomes import InstanceOutcome, join_probe_results
from calderalab.eval.parse import is_correct, parse_answer
from calderalab.eval.probes import (
    LETTERS,
    ChoiceItem,
    execution_choice,
    execution_messages,
    has_understanding_probe,
    parse_letter,
    understanding_cloze,
    understanding_messages,
    understanding_rotations,
)
from calderalab.eval.scoring import continuation_detail, generated_detail, letters_detail, step_overlap
from calderalab.eval.types import Instance, ProbeKind, ProbeResult, Scoring, Verdict, check_scoring

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (items done, items total)


@dataclass(frozen=True)
class EvalConfig:
    """Decoding and scoring settings; the only place their defaults live.

    scoring: `choice` (understanding by debiased letters over every rotation, execution by answer
    log-likelihood), `cloze` (understanding by each plan's own text, no letters), or `generate`
    (greedy replies, parsed). length_normalize: pick execution answers by mean log-likelihood per
    token, since a summed log-likelihood favours short answers (cloze plans are always per token).
    max_new_tokens caps execution replies (192–256 fits step-by-step answers of a small model; the
    truncated share says when it does not); understanding replies are a letter, so their cap is small.
    """

    scoring: Scoring = "choice"
    batch_size: int = 8
    max_new_tokens: int = 256
    understanding_max_new_tokens: int = 48
    stop_at_answer: bool = True
    length_normalize: bool = True

    def __post_init__(self) -> None:
        check_scoring(self.scoring)
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
    instances: tuple[Instance, ...]
    results: tuple[ProbeResult, ...]
    parse_failures: dict[str, int]  # probe kind -> replies with no parsable answer
    truncated: dict[str, int]  # probe kind -> generations cut by the token cap
    generated_tokens: int
    seconds: float

    @property
    def n_generated(self) -> int:
        return sum(1 for r in self.results if r.scoring == "generate")

    @property
    def truncated_share(self) -> float:
        return sum(self.truncated.values()) / self.n_generated if self.n_generated else 0.0

    def result(self, uid: str, probe: ProbeKind) -> ProbeResult | None:
        return next((r for r in self.results if r.instance_uid == uid and r.probe == probe), None)

    def outcomes(self) -> tuple[InstanceOutcome, ...]:
        return join_probe_results(self.instances, self.results)

    @property
    def verdicts(self) -> dict[str, Verdict | None]:
        """uid -> PASS/GAP/FAIL/LUCKY (None: no understanding probe), in instance order."""
        return {o.uid: o.verdict for o in self.outcomes()}

    def summary(self) -> GoodhartSummary:
        return summarize(self.outcomes())


def _key(inst: Instance, probe: ProbeKind) -> str:
    return f"{inst.uid}|{probe}"


def _score_execution_generation(inst: Instance, gen: Generation) -> ProbeResult:
    parsed = parse_answer(gen.text, inst.answer_type)
    correct = parsed is not None and bool(is_correct(gen.text, inst.answer, inst.answer_type, inst.tolerance))
    return ProbeResult(inst.uid, "execution", "generate", correct, parsed, gen.text, gen.truncated)


def _score_understanding_generation(inst: Instance, gen: Generation) -> ProbeResult:
    letter = parse_letter(gen.text, len(inst.plan_options))
    detail = generated_detail(None if letter is None else LETTERS.index(letter), inst.correct_option,
                              [len(p) for p in inst.plan_options], step_overlap(inst.plan_options))
    return ProbeResult(inst.uid, "understanding", "generate", letter == inst.correct_letter, letter, gen.text,
                       gen.truncated, detail)


def _counter(total: int, progress: Progress | None) -> Callable[[int], None] | None:
    if progress is None:
        return None
    done = [0]

    def advance(n: int) -> None:
        done[0] += n
        progress(done[0], total)

    return advance


def _run_generate(backend: ScoringBackend, instances: Sequence[Instance], probed: Sequence[Instance], cfg: EvalConfig,
                  progress: Progress | None) -> tuple[list[ProbeResult], int]:
    advance = _counter(len(instances) + len(probed), progress)
    gens_e = backend.generate([execution_messages(i) for i in instances], cfg.max_new_tokens, cfg.stop_at_answer, advance)
    gens_u = backend.generate([understanding_messages(i) for i in probed], cfg.understanding_max_new_tokens, cfg.stop_at_answer, advance)
    results = [_score_execution_generation(i, g) for i, g in zip(instances, gens_e)]
    results += [_score_understanding_generation(i, g) for i, g in zip(probed, gens_u)]
    return results, sum(g.n_tokens for g in gens_e + gens_u)


def _scores(backend: ScoringBackend, items: Sequence[ChoiceItem], advance: Callable[[int], None] | None) -> list[OptionScores]:
    """Option scores of items that share one assistant prefix (one backend call, batched there)."""
    if not items:
        return []
    prefixes = {c.assistant_prefix for c in items}
    assert len(prefixes) == 1, prefixes
    return backend.choice_scores([(list(c.messages), c.continuations) for c in items],
                                 assistant_prefix=prefixes.pop(), on_batch=advance)


def _execution_by_answers(inst: Instance, sc: OptionScores, normalize: bool) -> ProbeResult:
    detail = continuation_detail("answers", sc.logliks, sc.n_tokens, inst.correct_answer_option,
                                 [len(a) for a in inst.answer_options], _key(inst, "execution"), normalize)
    chosen = inst.answer_options[detail.chosen]
    return ProbeResult(inst.uid, "execution", "choice", detail.chosen == detail.correct, chosen,
                       json.dumps([round(v, 6) for v in sc.logliks]), detail=detail)


def _understanding_by_letters(inst: Instance, rotations: Sequence[OptionScores], scoring: Scoring) -> ProbeResult:
    detail = letters_detail([sc.logliks for sc in rotations], inst.correct_option,
                            [len(p) for p in inst.plan_options], _key(inst, "understanding"), step_overlap(inst.plan_options))
    return ProbeResult(inst.uid, "understanding", scoring, detail.chosen == detail.correct, LETTERS[detail.chosen],
                       json.dumps([list(r) for r in detail.rotations]), detail=detail)


def _understanding_by_cloze(inst: Instance, sc: OptionScores, scoring: Scoring) -> ProbeResult:
    detail = continuation_detail("cloze", sc.logliks, sc.n_tokens, inst.correct_option,
                                 [len(p) for p in inst.plan_options], _key(inst, "understanding"), normalize=True,
                                 overlap=step_overlap(inst.plan_options))
    return ProbeResult(inst.uid, "understanding", scoring, detail.chosen == detail.correct, LETTERS[detail.chosen],
                       json.dumps([round(v, 6) for v in sc.logliks]), detail=detail)


def _run_choice(backend: ScoringBackend, instances: Sequence[Instance], probed: Sequence[Instance], cfg: EvalConfig,
                progress: Progress | None) -> list[ProbeResult]:
    """Execution by answer log-likelihoods; understanding by rotated letters (choice) or plan texts (cloze)."""
    items_e = [execution_choice(i) for i in instances]  # raises for instances without answer_options
    if cfg.scoring == "choice":
        per_instance = [understanding_rotations(i) for i in probed]  # k items each
    else:
        per_instance = [[understanding_cloze(i)] for i in probed]
    items_u = [item for group in per_instance for item in group]
    advance = _counter(sum(len(c.continuations) for c in items_e + items_u), progress)
    scores_e = _scores(backend, items_e, advance)
    scores_u = iter(_scores(backend, items_u, advance))
    results = [_execution_by_answers(i, sc, cfg.length_normalize) for i, sc in zip(instances, scores_e)]
    for inst, group in zip(probed, per_instance):
        mine = [next(scores_u) for _ in group]
        results.append(_understanding_by_letters(inst, mine, cfg.scoring) if cfg.scoring == "choice"
                       else _understanding_by_cloze(inst, mine[0], cfg.scoring))
    return results


def _check_instances(instances: Sequence[Instance]) -> None:
    if not instances:
        raise ValueError("no instances to evaluate: generate some with eval.tasks or load a suite")
    uids = [i.uid for i in instances]
    if len(set(uids)) != len(uids):
        raise ValueError(f"duplicate instance uids: {sorted({u for u in uids if uids.count(u) > 1})[:5]}")


def probe_counts(results: Sequence[ProbeResult]) -> tuple[dict[str, int], dict[str, int]]:
    """(parse failures, generations cut by the token cap) per probe kind."""
    kinds = ("execution", "understanding")
    return ({k: sum(r.parsed is None for r in results if r.probe == k) for k in kinds},
            {k: sum(r.truncated for r in results if r.probe == k) for k in kinds})


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
    """Run both probes on every instance with a transformers model (see `evaluate_with`).

    Keyword arguments that are not None override `config` (default EvalConfig()).
    """
    overrides = {k: v for k, v in dict(scoring=scoring, batch_size=batch_size, max_new_tokens=max_new_tokens).items() if v is not None}
    cfg = EvalConfig(**{**(config or EvalConfig()).to_dict(), **overrides})
    return evaluate_with(HFBackend(model, tokenizer, batch_size=cfg.batch_size), instances, cfg, progress)


def evaluate_with(backend: ScoringBackend, instances: Sequence[Instance], config: EvalConfig = EvalConfig(),
                  progress: Progress | None = None) -> EvalRun:
    """Run both probes on every instance (execution only where there are no plan options).

    progress(done, total) is called after each batch.
    """
    _check_instances(instances)
    probed = [i for i in instances if has_understanding_probe(i)]
    start = time.perf_counter()
    if config.scoring == "generate":
        results, n_tokens = _run_generate(backend, instances, probed, config, progress)
    else:
        results, n_tokens = _run_choice(backend, instances, probed, config, progress), 0
    seconds = time.perf_counter() - start
    parse_failures, truncated = probe_counts(results)
    run = EvalRun(
        config=config,
        instances=tuple(instances),
        results=tuple(results),
        parse_failures=parse_failures,
        truncated=truncated,
        generated_tokens=n_tokens,
        seconds=seconds,
    )
    log.info("evaluated %d instances (%s) in %.1fs, truncated share %.2f", len(instances), config.scoring, seconds, run.truncated_share)
    return run

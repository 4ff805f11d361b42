"""Validation of an artifact store against the model it claims to come from.

Two checks (DESIGN.md §1 Validation):
- per module: the stored file's checksum, the original-weight fingerprint, Pearson correlation
  of Ŵ with W (recomputed here from the artifact) and the recorded relative H-weighted error;
  a module whose correlation is below `min_correlation` (healthy 3-bit CALDERA: ≥ 0.95) fails.
- single-layer replacement: with ONLY layer l compressed, the model still answers a trivial
  prompt as the original does. Precisely: the original model's greedy continuation of the
  prompt (`n_tokens` tokens) is the reference; the model with layer l replaced (a) generates its
  own greedy answer, which must state the same final answer (the last number before the end of
  the turn: "4" for 2+2), and (b) run teacher-forced on prompt + reference, keeps the reference
  token as its top-1 at ≥ `min_agreement` of the positions. The leading run of identical tokens
  is reported but does not decide: "The answer is 4." for "The answer to this classic math
  problem is 4." is the same answer in other words (seen on SmolLM2 layer 6 at 3-bit).
- coherence (artifacts.coherence): with ALL checked modules swapped in, the model still writes
  text as coherent as the original's on a few neutral prompts (no script switch, no loop, no
  perplexity blow-up under the original); run only when every module check passed.
Never imports transformers; the model is driven through calderalab.models.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from calderalab import core, models
from calderalab.artifacts.fingerprint import weight_fingerprint
from calderalab.artifacts.apply import select_entries
from calderalab.artifacts.coherence import CoherenceConfig, CoherenceReport, check_coherence
from calderalab.artifacts.store import ArtifactStore, decomposition_from_bytes
from calderalab.errors import ArtifactError

log = logging.getLogger(__name__)

TRIVIAL_PROMPT = "What is 2+2?"


@dataclass(frozen=True)
class ValidationConfig:
    min_correlation: float = 0.95
    prompt: str = TRIVIAL_PROMPT
    n_tokens: int = 16
    min_agreement: float = 0.75
    replacement_check: bool = True
    coherence_check: bool = True
    coherence: CoherenceConfig = CoherenceConfig()

    def __post_init__(self) -> None:
        if not -1.0 <= self.min_correlation <= 1.0:
            raise ValueError(f"min_correlation must be in [-1, 1], got {self.min_correlation}")
        if self.n_tokens < 1:
            raise ValueError(f"need n_tokens >= 1, got n_tokens={self.n_tokens}")
        if not 0.0 <= self.min_agreement <= 1.0:
            raise ValueError(f"min_agreement must be in [0, 1], got {self.min_agreement}")


@dataclass(frozen=True)
class ModuleCheck:
    layer: int
    module: str
    spec_key: str
    weight_correlation: float | None
    relative_error: float | None
    bpw: float | None
    problem: str | None

    @property
    def ok(self) -> bool:
        return self.problem is None


@dataclass(frozen=True)
class LayerCheck:
    layer: int
    agreement: float
    exact_prefix: int  # how many leading reference tokens the replaced model reproduces (reported only)
    answer: str | None  # the final answer in the replaced model's own greedy reply (None: none found)
    ok: bool


@dataclass(frozen=True)
class ValidationReport:
    store_url: str
    config: ValidationConfig
    modules: tuple[ModuleCheck, ...]
    layers: tuple[LayerCheck, ...]
    reference_text: str
    coherence: CoherenceReport | None = None  # None: not run (switched off, or a module check failed)

    @property
    def passed(self) -> bool:
        coherent = self.coherence is None or not self.coherence.flagged
        return bool(self.modules) and all(m.ok for m in self.modules) and all(l.ok for l in self.layers) and coherent

    @property
    def mean_weight_correlation(self) -> float:
        vals = [m.weight_correlation for m in self.modules if m.weight_correlation is not None]
        return sum(vals) / len(vals) if vals else float("nan")

    def failures(self) -> list[str]:
        out = [f"module {m.layer}.{m.module}: {m.problem}" for m in self.modules if not m.ok]
        out += [f"layer {l.layer}: single-layer replacement changes the answer (agreement {l.agreement:.2f}, "
                f"first {l.exact_prefix} tokens identical, final answer {l.answer!r})" for l in self.layers if not l.ok]
        if self.coherence is not None:
            out += [f"coherence: {line}" for line in self.coherence.problems()]
        if not self.modules:
            out.append("the store holds no modules for this model")
        return out


def check_module(store: ArtifactStore, entry: object, W: torch.Tensor, min_correlation: float) -> tuple[ModuleCheck, torch.Tensor | None]:
    """Verify one stored module against the model's original weight W (d_out, d_in)."""
    base = dict(layer=entry.layer, module=entry.module, spec_key=entry.spec_key)
    recorded_err = entry.metrics.get("relative_error")
    if tuple(W.shape) != tuple(entry.shape):
        return ModuleCheck(**base, weight_correlation=None, relative_error=recorded_err, bpw=None,
                           problem=f"shape {tuple(entry.shape)} in the store but {tuple(W.shape)} in the model (another model)"), None
    if weight_fingerprint(W) != entry.original_fingerprint:
        return ModuleCheck(**base, weight_correlation=None, relative_error=recorded_err, bpw=None,
                           problem="original-weight fingerprint differs: artifacts made from another model"), None
    try:
        decomposition = decomposition_from_bytes(store.read_verified(entry))
    except ArtifactError as err:
        return ModuleCheck(**base, weight_correlation=None, relative_error=recorded_err, bpw=None, problem=str(err)), None
    W_hat = decomposition.reconstruct().to(torch.float32)
    corr = float(core.weight_correlation(W.detach().to(torch.float32), W_hat))
    problem = None if corr >= min_correlation else f"weight correlation {corr:.4f} < {min_correlation}"
    return ModuleCheck(**base, weight_correlation=corr, relative_error=recorded_err, bpw=float(decomposition.bpw), problem=problem), W_hat


def prompt_ids(tokenizer: object, prompt: str) -> torch.Tensor:
    """(1, n) token ids: the chat template with a generation prompt when the tokenizer has one."""
    if getattr(tokenizer, "chat_template", None):
        out = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt")
        ids = out["input_ids"] if not isinstance(out, torch.Tensor) else out
    else:
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    return ids.to(torch.long)


def greedy_reference(model: torch.nn.Module, ids: torch.Tensor, n_tokens: int) -> torch.Tensor:
    """(n_tokens,) greedy continuation of ids (1, n) by repeated full forwards (no cache: exact)."""
    seq = ids
    with torch.no_grad():
        for _ in range(n_tokens):
            nxt = model(input_ids=seq, use_cache=False).logits[0, -1].argmax()
            seq = torch.cat([seq, nxt.view(1, 1)], dim=1)
    return seq[0, ids.shape[1]:]


def teacher_forced_top1(model: torch.nn.Module, ids: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """(n_tokens,) bool: does the model's top-1 at each answer position equal the reference token."""
    full = torch.cat([ids[0], reference]).unsqueeze(0)  # (1, n + n_tokens)
    with torch.no_grad():
        logits = model(input_ids=full, use_cache=False).logits[0]  # (n + n_tokens, vocab)
    predicted = logits[ids.shape[1] - 1 : -1].argmax(-1)  # (n_tokens,)
    return predicted == reference


def final_answer(text: str) -> str | None:
    """The last number stated before the end of the first turn ("4" in "The answer is 4.<|im_end|>...")."""
    turn = re.split(r"<\|im_end\|>|<\|eot_id\|>|</s>|<end_of_turn>|<\|endoftext\|>", text, maxsplit=1)[0]
    numbers = re.findall(r"-?\d+(?:\.\d+)?", turn)
    return numbers[-1] if numbers else None


def layer_check(
    layer: int, matches: torch.Tensor, answer: str | None, reference_answer: str | None, config: ValidationConfig
) -> LayerCheck:
    """Pass iff the replaced model states the reference's final answer and agrees on enough tokens."""
    exact = int(torch.cumprod(matches.to(torch.int64), 0).sum())
    agreement = float(matches.float().mean())
    same_answer = reference_answer is None or answer == reference_answer
    return LayerCheck(layer, agreement, exact, answer, same_answer and agreement >= config.min_agreement)


def validate_store(
    model: torch.nn.Module,
    tokenizer: object,
    store: ArtifactStore,
    config: ValidationConfig = ValidationConfig(),
    plan: object = None,
    layers: Iterable[int] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ValidationReport:
    """Check every stored module of `model`, (optionally) each layer's single-layer replacement and
    (optionally) the coherence of the fully compressed model's free text."""
    entries = select_entries(store.manifest(), models.num_layers(model), layers=layers, plan=plan)
    checks, W_hats = [], {}
    for entry in entries:
        W = models.target_linear(model, entry.layer, entry.module).weight
        check, W_hat = check_module(store, entry, W, config.min_correlation)
        checks.append(check)
        if W_hat is not None:
            W_hats.setdefault(entry.layer, {})[(entry.layer, entry.module)] = W_hat
    layer_checks, reference_text = [], ""
    if config.replacement_check and W_hats:
        ids = prompt_ids(tokenizer, config.prompt)
        reference = greedy_reference(model, ids, config.n_tokens)
        reference_text = tokenizer.decode(reference)
        reference_answer = final_answer(reference_text)
        for i, (layer, weights) in enumerate(sorted(W_hats.items())):
            with models.swapped_weights(model, weights):
                matches = teacher_forced_top1(model, ids, reference)
                answer = final_answer(tokenizer.decode(greedy_reference(model, ids, config.n_tokens)))
            layer_checks.append(layer_check(layer, matches, answer, reference_answer, config))
            if progress is not None:
                progress(i + 1, len(W_hats))
    coherence = None
    if config.coherence_check and W_hats and all(c.ok for c in checks):
        all_weights = {key: W for weights in W_hats.values() for key, W in weights.items()}
        coherence = check_coherence(model, tokenizer, all_weights, config.coherence)
    return ValidationReport(store.url, config, tuple(checks), tuple(layer_checks), reference_text, coherence)

"""Coherence check: does the compressed model still write text, before any evaluation is run?

The report's "gibberish" failure (a compressed model answering `"c"c"c"c…` or switching
language) passes every per-module check: weight correlation and relative error look healthy,
and a single-layer replacement keeps the answer. This check generates greedily from a few
neutral prompts with the original and with the compressed model (`n_new_tokens` each,
stopping after eos) and compares the two texts on three numbers:

- script: share of letters outside the scripts of the prompt (coherence_metrics.foreign_script_share);
- repetition: repeated character n-gram ratio (coherence_metrics.repeated_ngram_ratio);
- perplexity under the ORIGINAL model of each generated text, prompt as context, pooled over
  prompts: ppl_ratio = ppl(compressed text) / ppl(original text).

Each is judged as the compressed model's value against the original's on the same prompts, so
a model that loops or writes another script by itself is not blamed on its compression. The
thresholds and why are in CoherenceConfig. Models are driven through calderalab.models; never
imports transformers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from calderalab import models
from calderalab.artifacts.coherence_metrics import foreign_script_share, repeated_ngram_ratio, scripts_of

NEUTRAL_PROMPTS = (
    "Describe a quiet morning in a small town.",
    "What do people usually eat for breakfast?",
    "Write two sentences about the ocean.",
)


@dataclass(frozen=True)
class CoherenceConfig:
    """What the coherence check generates and when it flags.

    max_script_increase: the compressed text may have at most this much larger a share of
    letters outside the prompt's scripts than the original's text (0.2: one letter in five;
    a switch to another language in 32 tokens moves it by far more, a quoted foreign word less).
    max_repetition_increase: likewise for the repeated `ngram`-character ratio (0.3; a loop
    such as `"c"c"c"` scores above 0.8, fluent English of 32 tokens below 0.1).
    max_ppl_ratio: flag when the original model finds the compressed text this many times
    more perplexing than its own greedy text. The original's own greedy text is the easiest
    text there is for it (every token its top-1), so any other fluent wording already costs a
    factor of a few; 20 (= +3 nats per token) is far above that and below what incoherent text
    cost on SmolLM2 (1.9 for a healthy 3-bit store; 41 and 97 for two planted breakages:
    README, "Coherence check"; benchmarks/coherence.py).
    """

    prompts: tuple[str, ...] = NEUTRAL_PROMPTS
    n_new_tokens: int = 32
    ngram: int = 8
    max_script_increase: float = 0.2
    max_repetition_increase: float = 0.3
    max_ppl_ratio: float = 20.0

    def __post_init__(self) -> None:
        if not self.prompts or any(not p.strip() for p in self.prompts):
            raise ValueError(f"the coherence check needs non-empty prompts, got {self.prompts!r}")
        if self.n_new_tokens < 1 or self.ngram < 1:
            raise ValueError(f"need n_new_tokens >= 1 and ngram >= 1, got {self.n_new_tokens}, {self.ngram}")
        if not (0 <= self.max_script_increase <= 1 and 0 <= self.max_repetition_increase <= 1):
            raise ValueError("max_script_increase and max_repetition_increase are shares in [0, 1], got "
                             f"{self.max_script_increase}, {self.max_repetition_increase}")
        if self.max_ppl_ratio < 1:
            raise ValueError(f"max_ppl_ratio must be >= 1 (1 = as perplexing as the original's own text), got {self.max_ppl_ratio}")


@dataclass(frozen=True)
class TextScore:
    """One generated text: its metrics and its summed NLL (nats) under the original model."""

    text: str
    foreign_share: float
    repetition: float
    nll_sum: float
    n_tokens: int


@dataclass(frozen=True)
class PromptCoherence:
    prompt: str
    original: TextScore
    compressed: TextScore


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


@dataclass(frozen=True)
class CoherenceReport:
    config: CoherenceConfig
    prompts: tuple[PromptCoherence, ...]

    def _side(self, side: str) -> list[TextScore]:
        return [getattr(p, side) for p in self.prompts]

    def perplexity(self, side: str) -> float:
        """exp(Σ NLL / Σ tokens) of the `side` ("original"/"compressed") texts under the original model."""
        scores = self._side(side)
        return math.exp(sum(s.nll_sum for s in scores) / sum(s.n_tokens for s in scores))

    @property
    def ppl_ratio(self) -> float:
        return self.perplexity("compressed") / self.perplexity("original")

    @property
    def script_increase(self) -> float:
        return _mean([s.foreign_share for s in self._side("compressed")]) - _mean([s.foreign_share for s in self._side("original")])

    @property
    def repetition_increase(self) -> float:
        return _mean([s.repetition for s in self._side("compressed")]) - _mean([s.repetition for s in self._side("original")])

    def problems(self) -> list[str]:
        """One line per threshold crossed, with the numbers (empty: coherent)."""
        c, out = self.config, []
        if self.script_increase > c.max_script_increase:
            out.append(f"script switch: {self.script_increase:+.2f} share of letters outside the prompt's script "
                       f"vs the original (threshold {c.max_script_increase})")
        if self.repetition_increase > c.max_repetition_increase:
            out.append(f"degenerate repetition: repeated {c.ngram}-gram ratio {self.repetition_increase:+.2f} vs the "
                       f"original (threshold {c.max_repetition_increase})")
        if self.ppl_ratio > c.max_ppl_ratio:
            out.append(f"incoherent text: perplexity under the original {self.perplexity('compressed'):.1f} vs "
                       f"{self.perplexity('original'):.1f} for its own text, ratio {self.ppl_ratio:.1f} > {c.max_ppl_ratio}")
        return out

    @property
    def flagged(self) -> bool:
        return bool(self.problems())

    def summary_lines(self) -> list[str]:
        """The numbers behind the verdict, one line each, then each prompt's two texts."""
        c = self.config
        lines = [
            f"perplexity under the original: its own text {self.perplexity('original'):.2f}, compressed model's "
            f"text {self.perplexity('compressed'):.2f}, ratio {self.ppl_ratio:.2f} (flag > {c.max_ppl_ratio})",
            f"letters outside the prompt's script: {self.script_increase:+.3f} vs the original (flag > {c.max_script_increase})",
            f"repeated {c.ngram}-gram ratio: {self.repetition_increase:+.3f} vs the original (flag > {c.max_repetition_increase})",
        ]
        for p in self.prompts:
            lines += [f"  {p.prompt!r}", f"    original:   {p.original.text!r}", f"    compressed: {p.compressed.text!r}"]
        return lines


def score_text(text: str, prompt: str, ngram: int, nll_sum: float, n_tokens: int) -> TextScore:
    """The pure part of one text's score: script share against the prompt's scripts, repetition."""
    return TextScore(text, foreign_script_share(text, scripts_of(prompt)), repeated_ngram_ratio(text, ngram), nll_sum, n_tokens)


def cut_after_eos(tokens: torch.Tensor, eos_token_id: int | None) -> torch.Tensor:
    """(n,) -> (m,) with m <= n: the tokens up to and including the first eos (stopping is part of the text)."""
    if eos_token_id is None:
        return tokens
    hits = (tokens == eos_token_id).nonzero()
    return tokens if len(hits) == 0 else tokens[: int(hits[0]) + 1]


def continuation_nll(model: torch.nn.Module, ids: torch.Tensor, continuation: torch.Tensor) -> torch.Tensor:
    """(m,) float32: −log p(continuation[t] | ids, continuation[:t]) under `model`; ids (1, n), continuation (m,)."""
    full = torch.cat([ids[0], continuation]).unsqueeze(0)  # (1, n + m)
    with torch.no_grad():
        logits = model(input_ids=full, use_cache=False).logits[0, ids.shape[1] - 1 : -1].float()  # (m, vocab)
    return -torch.log_softmax(logits, -1).gather(1, continuation.view(-1, 1)).squeeze(1)  # (m,)


def check_coherence(
    model: torch.nn.Module,
    tokenizer: object,
    weights: Mapping[tuple[int, str], torch.Tensor],
    config: CoherenceConfig = CoherenceConfig(),
) -> CoherenceReport:
    """Generate from config.prompts with the original model and with `weights` swapped in, and
    score both texts (the model is left with its original weights)."""
    from calderalab.artifacts.validate import greedy_reference, prompt_ids

    eos = getattr(tokenizer, "eos_token_id", None)
    out = []
    for prompt in config.prompts:
        ids = prompt_ids(tokenizer, prompt)  # (1, n)
        original = cut_after_eos(greedy_reference(model, ids, config.n_new_tokens), eos)
        with models.swapped_weights(model, weights):
            compressed = cut_after_eos(greedy_reference(model, ids, config.n_new_tokens), eos)
        scores = [
            score_text(tokenizer.decode(tokens, skip_special_tokens=True), prompt, config.ngram,
                       float(continuation_nll(model, ids, tokens).sum()), len(tokens))
            for tokens in (original, compressed)
        ]
        out.append(PromptCoherence(prompt, *scores))
    return CoherenceReport(config, tuple(out))

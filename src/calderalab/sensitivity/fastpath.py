"""The fast teacher-forced path: only layer l changes, so run only layers l..L-1 and the head.

When layer l alone is compressed, the residual stream entering layer l is that of the
uncompressed model. So the uncompressed model runs ONCE per batch, with forward pre-hooks
capturing what every decoder layer receives (the stream entering layer 0 and each layer's
keyword arguments: attention mask, position embeddings (cos, sin), position ids; the mask and
embeddings are shared objects, not copies). Layers are then visited in ascending order:
the stream is advanced through the ORIGINAL layers up to l, layer l's compressed weights are
swapped in, layers l..L-1 run from there, and the final norm + lm_head are applied only at the
positions that predict answer tokens (SmolLM2's 49152 x 576 lm_head is most of a forward pass;
prompt positions are never projected). Memory per batch: one (B, S, d) stream, not L of them.

Equality with the full forward (`measure.teacher_forced_logprobs`) is exact up to the
lm_head matmul shape (tested within 1e-5 on tiny Llama and Qwen2 models).
Imports torch only; the model is reached through the standard PreTrainedModel accessors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from calderalab.errors import CalderalabError


class FastPathUnsupported(CalderalabError):
    """The model's structure is not the decoder-stack + final norm + lm_head the fast path needs."""


class _StopForward(Exception):
    """Raised by a hook after the last decoder layer: the full-vocabulary head must not run."""


@dataclass(frozen=True)
class DecoderParts:
    """layers: the decoder stack; norm: final norm; head: lm_head; softcap: final logit soft-capping (Gemma 2)."""

    layers: nn.ModuleList
    norm: nn.Module
    head: nn.Module
    softcap: float | None


def decoder_parts(model: nn.Module) -> DecoderParts:
    """The decoder stack, final norm and lm_head of a causal LM, or FastPathUnsupported."""
    try:
        base = model.get_decoder()
        head = model.get_output_embeddings()
    except (AttributeError, ValueError) as err:
        raise FastPathUnsupported(f"{type(model).__name__}: no decoder / output embeddings ({err})") from err
    layers, norm = getattr(base, "layers", None), getattr(base, "norm", None)
    if not isinstance(layers, nn.ModuleList) or not isinstance(norm, nn.Module) or not isinstance(head, nn.Module):
        raise FastPathUnsupported(
            f"{type(model).__name__}: expected decoder.layers (ModuleList), decoder.norm and lm_head; "
            "use the full-forward path (SensitivityConfig(fast_path=False))"
        )
    cfg = getattr(model, "config", None)
    softcap = getattr(cfg, "final_logit_softcapping", None) or getattr(getattr(cfg, "text_config", None), "final_logit_softcapping", None)
    return DecoderParts(layers=layers, norm=norm, head=head, softcap=float(softcap) if softcap else None)


def _layer_out(out: Any) -> torch.Tensor:
    # transformers 5.x decoder layers return the tensor; 4.x returned a tuple (hidden, ...).
    return out[0] if isinstance(out, tuple) else out


@dataclass
class _Batch:
    """One right-padded batch: the current stream, what each layer is called with, answer positions.

    hidden: (B, S, d) residual stream entering layer `at` of the uncompressed model.
    layer_kwargs: per decoder layer, the keyword arguments the model's forward passed it.
    rows, cols: (T,) batch row and position of every answer-predicting position, sample by sample.
    lengths: answer length of each sample of the batch (T = sum).
    """

    hidden: torch.Tensor
    layer_kwargs: list[dict[str, Any]]
    rows: torch.Tensor
    cols: torch.Tensor
    lengths: list[int]
    at: int = 0


def right_padded(seqs: Sequence[Sequence[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask), both (B, S) long; real tokens keep positions 0..len-1 (right padding)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(list(s), dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


class SuffixRunner:
    """Teacher-forced runs of layers l..L-1 on cached uncompressed streams (see module doc).

    samples are ProbeSample-like (prompt_ids, answer_ids). Samples are batched in order of
    decreasing length (less padding); every method returns results in the samples' own order.
    Layers must be visited in ascending order (`run_from(l)` advances the streams to l).
    """

    def __init__(self, model: nn.Module, samples: Sequence[Any], batch_size: int, pad_token_id: int = 0) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.parts = decoder_parts(model)
        self.n_layers = len(self.parts.layers)
        self.device = next(model.parameters()).device
        by_len = sorted(range(len(samples)), key=lambda i: -(len(samples[i].prompt_ids) + len(samples[i].answer_ids)))
        self.order = [by_len[s : s + batch_size] for s in range(0, len(by_len), batch_size)]
        self.samples = samples
        self.batches: list[_Batch] = []
        self.base: list[torch.Tensor | None] = [None] * len(samples)
        with torch.no_grad():
            for idx in self.order:
                batch, last = self._capture([samples[i] for i in idx], pad_token_id)
                self.batches.append(batch)
                for i, lp in zip(idx, self._head(last, batch), strict=True):
                    self.base[i] = lp

    def _capture(self, batch: Sequence[Any], pad_token_id: int) -> tuple[_Batch, torch.Tensor]:
        """One uncompressed forward that records layer 0's input, every layer's kwargs and the
        last layer's output, and stops before the final norm / lm_head."""
        ids, mask = right_padded([s.prompt_ids + s.answer_ids for s in batch], pad_token_id)
        seen: dict[str, Any] = {"kwargs": [None] * self.n_layers}

        def pre(i: int):
            def fn(_mod, args, kwargs):
                if i == 0:
                    seen["hidden"] = args[0] if args else kwargs["hidden_states"]
                seen["kwargs"][i] = {k: v for k, v in kwargs.items() if k != "hidden_states"}
            return fn

        def post(_mod, _args, out):
            seen["last"] = _layer_out(out)
            raise _StopForward

        handles = [layer.register_forward_pre_hook(pre(i), with_kwargs=True) for i, layer in enumerate(self.parts.layers)]
        handles.append(self.parts.layers[-1].register_forward_hook(post))
        try:
            self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device), use_cache=False)
        except _StopForward:
            pass
        finally:
            for h in handles:
                h.remove()
        if "last" not in seen or any(k is None for k in seen["kwargs"]):
            raise FastPathUnsupported(f"{type(self.model).__name__}: the forward did not run every decoder layer once")
        rows, cols, lengths = [], [], []
        for b, s in enumerate(batch):
            p, a = len(s.prompt_ids), len(s.answer_ids)
            rows += [b] * a
            cols += range(p - 1, p + a - 1)  # position t predicts token t + 1
            lengths.append(a)
        t = lambda v: torch.tensor(v, dtype=torch.long, device=self.device)  # noqa: E731
        return _Batch(seen["hidden"], seen["kwargs"], t(rows), t(cols), lengths), seen["last"]

    def _head(self, hidden: torch.Tensor, batch: _Batch) -> list[torch.Tensor]:
        """Final norm + lm_head at the answer positions only -> per sample (a, V) float32 log-softmax."""
        h = self.parts.norm(hidden[batch.rows, batch.cols])  # (T, d): RMSNorm is per position
        logits = self.parts.head(h).float()  # (T, V)
        if self.parts.softcap is not None:
            logits = torch.tanh(logits / self.parts.softcap) * self.parts.softcap
        return [lp.cpu() for lp in torch.log_softmax(logits, dim=-1).split(batch.lengths)]

    def _layers(self, hidden: torch.Tensor, batch: _Batch, start: int, stop: int) -> torch.Tensor:
        for j in range(start, stop):
            hidden = _layer_out(self.parts.layers[j](hidden, **batch.layer_kwargs[j]))
        return hidden

    @torch.no_grad()
    def advance(self, layer: int) -> None:
        """Move every cached stream to the input of `layer` through the current (original) weights."""
        for batch in self.batches:
            if layer < batch.at:
                raise ValueError(f"layers must be visited in ascending order: at {batch.at}, asked for {layer}")
            batch.hidden = self._layers(batch.hidden, batch, batch.at, layer)
            batch.at = layer

    @torch.no_grad()
    def run_from(self, layer: int) -> list[torch.Tensor]:
        """Per sample (a, V) log-softmax of layers `layer`..L-1 + head on the streams entering `layer`.

        Call `advance(layer)` BEFORE swapping layer `layer`'s weights: the cached stream must be
        the uncompressed one."""
        if not 0 <= layer < self.n_layers:
            raise ValueError(f"layer {layer} outside 0..{self.n_layers - 1}")
        out: list[torch.Tensor | None] = [None] * len(self.samples)
        for idx, batch in zip(self.order, self.batches, strict=True):
            if batch.at != layer:
                raise ValueError(f"streams are at layer {batch.at}, not {layer}: call advance({layer}) first")
            last = self._layers(batch.hidden, batch, layer, self.n_layers)
            for i, lp in zip(idx, self._head(last, batch), strict=True):
                out[i] = lp
        return out  # type: ignore[return-value]

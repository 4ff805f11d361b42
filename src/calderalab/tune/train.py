"""Recovery tuning: train L, R so the compressed model's next-token distributions match the original's.

Objective, per calibration token t (positions 0..T−1 of every window, each predicting the next):

    KL(P_orig,t ‖ P_comp,t) = Σ_v p_v (log p_v − log q_v),   minimised as the mean over tokens,

with Q frozen and only the factors L, R of every tuned module trained (Adam). The original model's
distributions come from its last hidden states, cached once (the input of its output embedding:
d_model floats per token instead of a vocabulary of log-probabilities); the output embedding is
never compressed, so head(cached) is exactly the original's logits.

Imports torch and calderalab.tune.factors; the model is any causal LM with get_output_embeddings.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from calderalab.tune.factors import LowRankLinear, installed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TuneConfig:
    """Recovery-tuning settings. Defaults live here only (the CLI passes None to keep them).

    steps: Adam steps, each on `batch_size` calibration windows (windows cycle in a seeded order).
    lr: Adam learning rate for L and R (unit-RMS rotated basis; the SmolLM2 demo store's 4-bit factors
      have grid steps 0.04-0.19 in layer 0). On SmolLM2 (README "Recovery tuning") 1e-2 diverged and
      1e-3 lowered the calibration KL; the planted test needs 1e-2 to undo 30% noise in 48 steps.
    quant_aware: train through the factors' quantiser (straight-through), see tune.factors.
    rank16: a 16-bit part of the rank added to every tuned module (0: none), trained with L and R and
      stored as float16 beside them (tune.factors; every stored bit counted in the store's bpw).
    seed: the window order; the same seed, data and model give the same store byte for byte.
    heldout_tokens: tokens of the held-out text scored before and after (not used in training).
    """

    steps: int = 32
    lr: float = 1e-3
    batch_size: int = 4
    quant_aware: bool = True
    rank16: int = 0
    seed: int = 0
    heldout_tokens: int = 4096

    def __post_init__(self) -> None:
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps={self.steps!r} must be an integer >= 1")
        if not 0 < self.lr < 1:
            raise ValueError(f"lr={self.lr!r} must be in (0, 1)")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size!r} must be an integer >= 1")
        if isinstance(self.rank16, bool) or not isinstance(self.rank16, int) or self.rank16 < 0:
            raise ValueError(f"rank16={self.rank16!r} must be an integer >= 0 (0: no 16-bit part)")
        if not isinstance(self.heldout_tokens, int) or self.heldout_tokens < 2:
            raise ValueError(f"heldout_tokens={self.heldout_tokens!r} must be an integer >= 2")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def kl_mean(head_ref: Tensor, logits: Tensor) -> Tensor:
    """Mean over tokens of KL(P_ref ‖ P). head_ref, logits: (..., vocab) logits of the original and the model."""
    logp = F.log_softmax(head_ref.float(), dim=-1)  # (..., V)
    logq = F.log_softmax(logits.float(), dim=-1)  # (..., V)
    return F.kl_div(logq.reshape(-1, logq.shape[-1]), logp.reshape(-1, logp.shape[-1]), log_target=True,
                    reduction="batchmean")


def head_inputs(model: nn.Module, token_ids: Tensor, batch_size: int) -> list[Tensor]:
    """The input of the model's output embedding for every window, per batch: (B, T, d_model) each, CPU.

    Call with the ORIGINAL weights: these are the teacher's distributions for the whole run.
    """
    head = model.get_output_embeddings()
    captured: list[Tensor] = []
    hook = head.register_forward_pre_hook(lambda _module, inputs: captured.append(inputs[0].detach().cpu()))
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            for batch in torch.split(token_ids, batch_size):
                model(input_ids=batch.to(device), use_cache=False)
    finally:
        hook.remove()
    return captured


def calib_kl(model: nn.Module, token_ids: Tensor, teacher: list[Tensor], batch_size: int) -> float:
    """Mean KL(P_orig ‖ P_model) over every calibration token (model as it is now: weights or installed modules)."""
    head = model.get_output_embeddings()
    device = next(model.parameters()).device
    total, n = 0.0, 0
    with torch.no_grad():
        for batch, h_ref in zip(torch.split(token_ids, batch_size), teacher):
            logits = model(input_ids=batch.to(device), use_cache=False).logits  # (B, T, V)
            tokens = batch.numel()
            total += float(kl_mean(head(h_ref.to(device)), logits)) * tokens
            n += tokens
    return total / n


def window_order(n_windows: int, config: TuneConfig) -> list[Tensor]:
    """The window indices of each step: seeded permutations, cycled. → steps × (≤ batch_size,)."""
    gen = torch.Generator().manual_seed(config.seed)
    order = torch.cat([torch.randperm(n_windows, generator=gen)
                       for _ in range(-(-config.steps * config.batch_size // n_windows))])
    return [order[i * config.batch_size:(i + 1) * config.batch_size] for i in range(config.steps)]


def tune_modules(
    model: nn.Module,
    modules: Mapping[tuple[int, str], LowRankLinear],
    token_ids: Tensor,
    teacher: list[Tensor],
    config: TuneConfig,
    progress: Callable[[int, int, float], None] | None = None,
) -> list[float]:
    """Train every module's L, R in place for config.steps Adam steps; return the loss of each step.

    token_ids: (n_windows, T); teacher: head_inputs(original model, token_ids, any batch size).
    """
    h_all = torch.cat(teacher)  # (n_windows, T, d_model)
    if h_all.shape[:2] != token_ids.shape:
        raise ValueError(f"teacher states {tuple(h_all.shape[:2])} do not match the windows {tuple(token_ids.shape)}")
    params = [p for m in modules.values() for p in m.parameters()]  # L, R (and L16, R16)
    optimizer = torch.optim.Adam(params, lr=config.lr)
    head = model.get_output_embeddings()
    device = next(model.parameters()).device
    losses = []
    was_training = model.training
    model.eval()  # no dropout: the objective is the deterministic forward
    # Only L and R learn: the model's own weights (Q's originals, norms, embeddings) get no gradients.
    unfrozen = [p for p in model.parameters() if p.requires_grad]
    for p in unfrozen:
        p.requires_grad_(False)
    try:
        with installed(model, modules), torch.enable_grad():
            for step, rows in enumerate(window_order(token_ids.shape[0], config)):
                optimizer.zero_grad(set_to_none=True)
                logits = model(input_ids=token_ids[rows].to(device), use_cache=False).logits  # (B, T, V)
                with torch.no_grad():
                    ref = head(h_all[rows].to(device))  # (B, T, V)
                loss = kl_mean(ref, logits)
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
                log.debug("tune step %d: KL %.5f", step, losses[-1])
                if progress is not None:
                    progress(step + 1, config.steps, losses[-1])
    finally:
        model.train(was_training)
        for p in unfrozen:
            p.requires_grad_(True)
    return losses

"""Output sensitivity of every target linear: how far the model's next-token distribution moves per
unit of weight error in that module, from the Fisher information of the model's own distribution.

For a module y = W x, an error ΔW moves the model's next-token distribution p by, to second order
(the first-order term vanishes at the original weights),

    KL(p ‖ p_ΔW) ≈ ½ E_t[(gᵀ ΔW x)²] ≈ ½ tr(ΔWᵀ G ΔW H),   H = E[x xᵀ],  G = E[g gᵀ],

with g = ∂ log p(y_t) / ∂(module output) and y_t drawn from p itself: the true Fisher, since the KL
is taken around the model's own distribution, not the data's. The second step is K-FAC's (x and g
independent); H is the Hessian LDLQ already minimises tr(ΔW H ΔWᵀ) under. With G replaced by its
mean diagonal (the incoherence rotation spreads the error evenly over output rows), one number per
module is left:

    sensitivity = ½ mean_i G_ii,   predicted KL ≈ sensitivity · tr(ΔW H ΔWᵀ)   (nats per token)

which `calderalab.kl_budget` multiplies by each candidate spec's measured error. On SmolLM2 the
measured KL of six uniform stores from 2 to 4 bits was 1.28-1.37x the prediction summed over modules,
in the right order for every pair (README, "Bits where the KL is").

Cost: one forward and one backward pass per calibration batch (the weights need no gradients; the
graph starts at the input embeddings). Deterministic: the sampled tokens come from a seeded
generator. Imports torch; target discovery from calderalab.models at call time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

ModuleKey = tuple[int, str]


@dataclass(frozen=True)
class FisherConfig:
    """samples: calibration sequences the Fisher is averaged over (the first ones of the set; on SmolLM2
    32 sequences of 512 tokens took 112 s on 2 cores in the peer benchmark). batch_size: sequences per backward pass.
    seed: the generator the tokens y_t ~ p are drawn from."""

    samples: int = 32
    batch_size: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("samples", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"FisherConfig.{name}={value!r} must be a positive integer")


def output_sensitivity(model: nn.Module, token_ids: torch.Tensor, config: FisherConfig = FisherConfig(),
                       progress: Callable[[int, int], None] | None = None) -> dict[ModuleKey, float]:
    """{(layer, module): ½ mean over tokens and output channels of g²} for every target linear.

    token_ids: (n, seq_len) int64 calibration sequences; the first `config.samples` are used.
    """
    from calderalab import models

    if token_ids.dim() != 2 or token_ids.shape[0] == 0:
        raise ValueError(f"the Fisher needs calibration token ids of shape (n, seq_len), got {tuple(token_ids.shape)}")
    ids = token_ids[: config.samples]
    keys = list(models.module_shapes(model))
    sums: dict[ModuleKey, torch.Tensor] = {}
    counts: dict[ModuleKey, int] = dict.fromkeys(keys, 0)

    def watch(key: ModuleKey):
        def on_output(_module, _inputs, output):
            def on_grad(grad):
                g = grad.detach().float().reshape(-1, grad.shape[-1])
                sums[key] = sums.get(key, 0) + g.pow(2).sum()
                counts[key] += g.numel()
            if output.requires_grad:
                output.register_hook(on_grad)
        return on_output

    def grad_from_here(_module, _inputs, output):  # the graph starts at the embeddings: no weight gradients
        return output.detach().requires_grad_(True)

    handles = [models.target_linear(model, l, n).register_forward_hook(watch((l, n))) for l, n in keys]
    handles.append(model.get_input_embeddings().register_forward_hook(grad_from_here))
    generator = torch.Generator().manual_seed(config.seed)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        batches: Sequence[torch.Tensor] = torch.split(ids, config.batch_size)
        for i, batch in enumerate(batches):
            with torch.enable_grad():
                logits = model(input_ids=batch.to(device)).logits.float()
                logp = torch.log_softmax(logits, dim=-1)
                with torch.no_grad():
                    y = torch.multinomial(logp.exp().reshape(-1, logp.shape[-1]).cpu(), 1, generator=generator)
                logp.reshape(-1, logp.shape[-1]).gather(1, y.to(device)).sum().backward()
            if progress is not None:
                progress(i + 1, len(batches))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    missing = [f"{l}.{n}" for l, n in keys if counts[(l, n)] == 0]
    if missing:
        raise RuntimeError(f"no gradient reached {missing[:5]}: the modules are not on the path to the logits")
    return {key: 0.5 * float(sums[key]) / counts[key] for key in keys}

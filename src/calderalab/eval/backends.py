"""Scoring backends: batched greedy generation and option log-likelihoods on a Hugging Face model.

Owns tokenising rendered prompts, padding, and the model calls. It must not parse answers or
decide correctness (that is `eval.runner`, pure). Imports torch; the model and tokenizer are
passed in, so this file never imports transformers at module level.

Both paths pad on the LEFT with an attention mask and explicit positions, so a padded row sees
the same positions and keys as it would alone: batched results equal one-at-a-time results up
to float rounding (tested).
"""

from __future__ import annotations

import copy
import inspect
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch

from calderalab.eval.batching import left_pad, length_batches, prefix_groups
from calderalab.eval.probes import Message, has_complete_answer_line

log = logging.getLogger(__name__)

FinishReason = Literal["answer", "eos", "cap"]
Prompt = str | Sequence[Message]
OnBatch = Callable[[int], None]


@dataclass(frozen=True)
class Generation:
    """One generated reply. `truncated`: the token cap was hit before a complete answer line."""

    text: str
    n_tokens: int
    truncated: bool
    finish_reason: FinishReason


@dataclass(frozen=True)
class OptionScores:
    """Log-likelihoods of each option continuation, with the token counts they sum over."""

    logliks: tuple[float, ...]
    n_tokens: tuple[int, ...]

    def normalized(self) -> tuple[float, ...]:
        """Per-token log-likelihoods (length normalised, lm-eval's acc_norm counts bytes instead)."""
        return tuple(ll / max(n, 1) for ll, n in zip(self.logliks, self.n_tokens))


class ScoringBackend(Protocol):
    """What the runner needs from a model: greedy replies and option log-likelihoods.

    `HFBackend` is the real one; `eval.planted` has backends that are wrong (or right) in a known
    way, which is how the suite shows that a measurement can fail.
    """

    def generate(self, prompts: Sequence[Prompt], max_new_tokens: int, stop_at_answer: bool = True,
                 on_batch: OnBatch | None = None) -> list[Generation]: ...

    def choice_scores(self, items: Sequence[tuple[Prompt, Sequence[str]]], assistant_prefix: str = "",
                      on_batch: OnBatch | None = None) -> list[OptionScores]: ...


class AnswerLineStop:
    """Stopping criterion: a row is done once its generated text holds a complete `Answer:` line.

    Returns one bool per row (transformers' per-sequence stopping), so a batch ends as soon as
    every row has answered. The full reply is only decoded when the newest token holds a newline,
    which keeps the per-step cost at one short batch decode.
    """

    def __init__(self, tokenizer: Any, prompt_len: int) -> None:
        self.tokenizer = tokenizer
        self.prompt_len = prompt_len

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        if input_ids.shape[1] <= self.prompt_len:
            return done
        last = self.tokenizer.batch_decode(input_ids[:, -1:].tolist(), skip_special_tokens=True)
        for row, piece in enumerate(last):
            if "\n" in piece:
                text = self.tokenizer.decode(input_ids[row, self.prompt_len :].tolist(), skip_special_tokens=True)
                done[row] = has_complete_answer_line(text)
        return done


class HFBackend:
    """Greedy generation and choice log-likelihoods for a transformers causal LM.

    The tokenizer's chat template is used when it has one; otherwise messages are rendered as
    plain `Role: content` lines. Inputs are processed in batches of `batch_size`, sorted by
    length, and results come back in input order.
    """

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 8, share_context: bool = True) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        # Choice scoring: one pass over a context shared by all its options (KV cache reuse).
        self.share_context = share_context
        self.pad_id = self._pad_id()
        self.eos_ids = self._eos_ids()
        forward_params = inspect.signature(model.forward).parameters
        self._accepts_logits_to_keep = "logits_to_keep" in forward_params
        # transformers 5.x renamed past_key_values to cache (the old name warns until it is removed).
        self._cache_kw = "cache" if "cache" in forward_params else "past_key_values"

    # ------------------------------------------------------------------ rendering and tokens
    @property
    def uses_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def render(self, prompt: Prompt, assistant_prefix: str = "") -> str:
        """Prompt text: the chat template with the generation prompt, then `assistant_prefix`."""
        if isinstance(prompt, str):
            return prompt + assistant_prefix
        messages = [dict(m) for m in prompt]
        if self.uses_chat_template:
            text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        else:
            text = "".join(f"{m['role'].capitalize()}: {m['content']}\n" for m in messages) + "Assistant:"
            assistant_prefix = (" " + assistant_prefix) if assistant_prefix else ""
        return text + assistant_prefix

    def encode(self, text: str) -> list[int]:
        # A chat-templated text already holds its special tokens (BOS, turn markers).
        return list(self.tokenizer(text, add_special_tokens=not self.uses_chat_template)["input_ids"])

    def _pad_id(self) -> int:
        for candidate in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id):
            if candidate is not None:
                return int(candidate)
        return 0  # no pad/eos at all: masked positions never reach the output, any id works

    def _eos_ids(self) -> set[int]:
        ids = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        if ids is None:
            ids = self.tokenizer.eos_token_id
        if ids is None:
            return set()
        return {int(i) for i in (ids if isinstance(ids, (list, tuple)) else [ids])}

    # ------------------------------------------------------------------ generation
    def generate(
        self,
        prompts: Sequence[Prompt],
        max_new_tokens: int,
        stop_at_answer: bool = True,
        on_batch: OnBatch | None = None,
    ) -> list[Generation]:
        """Greedy replies (temperature 0) for each prompt (messages or raw text), in input order."""
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        encoded = [self.encode(self.render(p)) for p in prompts]
        results: list[Generation | None] = [None] * len(encoded)
        for batch in length_batches([len(e) for e in encoded], self.batch_size):
            outs = self._generate_batch([encoded[i] for i in batch], max_new_tokens, stop_at_answer)
            for i, out in zip(batch, outs):
                results[i] = out
            if on_batch is not None:
                on_batch(len(batch))
        return [r for r in results if r is not None]

    def _generation_config(self, max_new_tokens: int) -> Any:
        config = copy.deepcopy(self.model.generation_config)
        config.max_new_tokens = max_new_tokens
        config.max_length = None
        config.do_sample = False
        config.num_beams = 1
        config.use_cache = True  # the KV cache: each step runs only the new token
        # Greedy decoding ignores these; clearing them keeps transformers from warning about them.
        config.temperature, config.top_p, config.top_k = None, None, None
        config.pad_token_id = self.pad_id
        if self.eos_ids:
            config.eos_token_id = sorted(self.eos_ids)
        return config

    @torch.no_grad()
    def _generate_batch(self, rows: list[list[int]], max_new_tokens: int, stop_at_answer: bool) -> list[Generation]:
        device = next(self.model.parameters()).device
        input_ids, attention_mask = left_pad(rows, self.pad_id)
        prompt_len = input_ids.shape[1]
        stopping = [AnswerLineStop(self.tokenizer, prompt_len)] if stop_at_answer else []
        out = self.model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            generation_config=self._generation_config(max_new_tokens),
            stopping_criteria=stopping,
        )
        return [self._finish(out[row, prompt_len:].tolist(), max_new_tokens) for row in range(out.shape[0])]

    def _finish(self, new_ids: list[int], max_new_tokens: int) -> Generation:
        """Cut a row at its first end token (finished rows are filled with pad) and label why it ended."""
        stop_ids = self.eos_ids | {self.pad_id}
        cut = next((i for i, t in enumerate(new_ids) if t in stop_ids), None)
        kept = new_ids if cut is None else new_ids[:cut]
        text = self.tokenizer.decode(kept, skip_special_tokens=True)
        answered = has_complete_answer_line(text)
        if answered:
            reason: FinishReason = "answer"
        elif cut is not None or len(new_ids) < max_new_tokens:
            reason = "eos"
        else:
            reason = "cap"
        n_tokens = len(kept) + (1 if cut is not None and new_ids[cut] in self.eos_ids else 0)
        return Generation(text=text, n_tokens=n_tokens, truncated=reason == "cap", finish_reason=reason)

    # ------------------------------------------------------------------ choice log-likelihood
    def choice_loglik(
        self, items: Sequence[tuple[Prompt, Sequence[str]]], on_batch: OnBatch | None = None
    ) -> list[list[float]]:
        """Sum log-likelihood of each option continuation given its context: one list per item."""
        return [list(s.logliks) for s in self.choice_scores(items, on_batch=on_batch)]

    def choice_scores(
        self,
        items: Sequence[tuple[Prompt, Sequence[str]]],
        assistant_prefix: str = "",
        on_batch: OnBatch | None = None,
    ) -> list[OptionScores]:
        """Log-likelihoods and token counts of each option continuation, per item.

        The lm-evaluation-harness way: the context + continuation text is tokenised as a whole
        and only the continuation's tokens are scored, so BPE merges across the boundary match
        what the model would see. `assistant_prefix` is appended to rendered messages.
        """
        pairs: list[tuple[list[int], list[int]]] = []
        owners: list[tuple[int, int]] = []
        shared: dict[int, tuple[list[int], list[list[int]]]] = {}  # item -> (context, continuations)
        for item_idx, (prompt, options) in enumerate(items):
            if len(options) == 0:
                raise ValueError(f"choice item {item_idx} has no options")
            context = self.render(prompt, assistant_prefix)
            encoded = [self._encode_pair(context, option) for option in options]
            if self.share_context and all(ctx == encoded[0][0] for ctx, _ in encoded):
                shared[item_idx] = (encoded[0][0], [cont for _, cont in encoded])
                continue
            for opt_idx, pair in enumerate(encoded):
                pairs.append(pair)
                owners.append((item_idx, opt_idx))
        scored = self._score_pairs(pairs, on_batch)
        # Options of one token each (letters): a batch of contexts, one next-token distribution per row.
        single = [i for i, (_, conts) in shared.items() if all(len(c) == 1 for c in conts)]
        for item_idx, res in zip(single, self._score_next_tokens([shared.pop(i) for i in single], on_batch)):
            owners.extend((item_idx, opt_idx) for opt_idx in range(len(res)))
            scored.extend(res)
        for item_idx, (context_ids, conts) in shared.items():
            for opt_idx, res in enumerate(self._score_shared_context(context_ids, conts)):
                owners.append((item_idx, opt_idx))
                scored.append(res)
            if on_batch is not None:
                on_batch(len(conts))
        logliks = [[0.0] * len(options) for _, options in items]
        counts = [[0] * len(options) for _, options in items]
        for (item_idx, opt_idx), (ll, n) in zip(owners, scored):
            logliks[item_idx][opt_idx] = ll
            counts[item_idx][opt_idx] = n
        return [OptionScores(tuple(ll), tuple(n)) for ll, n in zip(logliks, counts)]

    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """(context tokens, continuation tokens); trailing context spaces move to the continuation."""
        stripped = context.rstrip(" ")
        continuation = context[len(stripped) :] + continuation
        context_ids = self.encode(stripped)
        whole = self.encode(stripped + continuation)
        if whole[: len(context_ids)] == context_ids and len(whole) > len(context_ids):
            return context_ids, whole[len(context_ids) :]
        # The boundary merged into one token: fall back to encoding the continuation alone.
        cont_ids = list(self.tokenizer(continuation, add_special_tokens=False)["input_ids"])
        if not cont_ids:
            raise ValueError(f"continuation {continuation!r} encodes to no tokens")
        return context_ids, cont_ids

    def _score_pairs(self, pairs: list[tuple[list[int], list[int]]], on_batch: OnBatch | None) -> list[tuple[float, int]]:
        # The last token is never an input: only its probability is read.
        sequences = [(ctx + cont)[:-1] for ctx, cont in pairs]
        results: list[tuple[float, int] | None] = [None] * len(pairs)
        for batch in length_batches([len(s) for s in sequences], self.batch_size):
            conts = [pairs[i][1] for i in batch]
            scored = self._score_batch([sequences[i] for i in batch], conts)
            for i, res in zip(batch, scored):
                results[i] = res
            if on_batch is not None:
                on_batch(len(batch))
        return [r for r in results if r is not None]

    def _score_next_tokens(
        self, items: list[tuple[list[int], list[list[int]]]], on_batch: OnBatch | None
    ) -> list[list[tuple[float, int]]]:
        """Log-probabilities of single-token continuations of many contexts.

        Each item is (context, continuations of one token each). Consecutive contexts that share a
        token prefix (the rotations of one lettered probe share everything up to the options) form a
        group: the prefix runs once, its KV cache is repeated over the group, and only the suffixes
        run, left-padded so every row ends on the last position. Equal to `_score_batch` up to float
        rounding (a test checks it); the rotations are most of the evaluation's cost, and about a
        third of their tokens are a shared prefix.
        """
        results: list[list[tuple[float, int]]] = []
        contexts = [ctx for ctx, _ in items]
        for prefix_len, group in prefix_groups(contexts, self.batch_size):
            logprobs = self._next_token_logprobs([contexts[i] for i in group], prefix_len)  # (g, vocab)
            for row, i in enumerate(group):
                results.append([(float(logprobs[row, c[0]].double()), 1) for c in items[i][1]])
            if on_batch is not None:
                on_batch(sum(len(items[i][1]) for i in group))
        return results

    @torch.no_grad()
    def _next_token_logprobs(self, contexts: list[list[int]], prefix_len: int) -> torch.Tensor:
        """log-softmax of the next-token logits after each context; contexts[*][:prefix_len] are equal."""
        device = next(self.model.parameters()).device
        keep: dict[str, Any] = {"logits_to_keep": 1} if self._accepts_logits_to_keep else {}
        if prefix_len == 0:  # nothing shared (one-token contexts): one left-padded batch
            ids, mask = left_pad(contexts, self.pad_id)
            logits = self.model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False,
                                position_ids=((mask.cumsum(-1) - 1).clamp(min=0)).to(device), **keep).logits
            return torch.log_softmax(logits[:, -1].float(), dim=-1)
        prefix = torch.tensor([contexts[0][:prefix_len]], device=device)  # (1, P)
        out = self.model(input_ids=prefix, use_cache=True, **keep)
        cache = getattr(out, "cache", None) or out.past_key_values
        cache.batch_repeat_interleave(len(contexts))
        suffix_ids, suffix_mask = left_pad([c[prefix_len:] for c in contexts], self.pad_id)  # (g, W)
        attention_mask = torch.cat([torch.ones((len(contexts), prefix_len), dtype=torch.long), suffix_mask], dim=1)
        position_ids = prefix_len + (suffix_mask.cumsum(-1) - 1).clamp(min=0)  # (g, W): pads repeat a position, masked
        logits = self.model(input_ids=suffix_ids.to(device), attention_mask=attention_mask.to(device),
                            position_ids=position_ids.to(device), use_cache=True, **{self._cache_kw: cache}, **keep).logits
        return torch.log_softmax(logits[:, -1].float(), dim=-1)  # (g, vocab)

    @torch.no_grad()
    def _score_shared_context(self, context: list[int], conts: list[list[int]]) -> list[tuple[float, int]]:
        """Score every continuation of one context with ONE pass over the context.

        The context's KV cache is computed once and repeated over the options, so a prompt of
        T tokens with k options costs T + k·max|option| token positions instead of k·T; the
        log-likelihoods equal those of `_score_batch` (a test checks it).
        """
        device = next(self.model.parameters()).device
        kwargs: dict[str, Any] = {"logits_to_keep": 1} if self._accepts_logits_to_keep else {}
        out = self.model(input_ids=torch.tensor([context], device=device), use_cache=True, **kwargs)
        first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)  # (vocab,): predicts each option's 1st token
        totals = [float(first[c[0]].double()) for c in conts]
        longer = [i for i, c in enumerate(conts) if len(c) > 1]
        if longer:
            steps = [conts[i][:-1] for i in longer]  # inputs after the context; right-padded (causal: harmless)
            width = max(len(x) for x in steps)
            input_ids = torch.full((len(steps), width), self.pad_id, dtype=torch.long)  # (k, width)
            step_mask = torch.zeros((len(steps), width), dtype=torch.long)  # (k, width)
            for row, x in enumerate(steps):
                input_ids[row, : len(x)] = torch.tensor(x)
                step_mask[row, : len(x)] = 1
            attention_mask = torch.cat([torch.ones((len(steps), len(context)), dtype=torch.long), step_mask], dim=1)
            position_ids = torch.arange(len(context), len(context) + width).expand(len(steps), width)  # (k, width)
            cache = getattr(out, "cache", None) or out.past_key_values
            cache.batch_repeat_interleave(len(steps))
            logits = self.model(
                input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                position_ids=position_ids.to(device), use_cache=True, **{self._cache_kw: cache},
            ).logits.float()  # (k, width, vocab)
            logprobs = torch.log_softmax(logits, dim=-1)
            for row, i in enumerate(longer):
                target = torch.tensor(conts[i][1:], device=logprobs.device)  # (n_cont - 1,)
                picked = logprobs[row, : len(target)].gather(-1, target[:, None])  # (n_cont - 1, 1)
                totals[i] += float(picked.sum().double())
        return [(total, len(c)) for total, c in zip(totals, conts)]

    @torch.no_grad()
    def _score_batch(self, rows: list[list[int]], conts: list[list[int]]) -> list[tuple[float, int]]:
        device = next(self.model.parameters()).device
        input_ids, attention_mask = left_pad(rows, self.pad_id)  # (batch, T)
        # Left padding: positions count real tokens only, so every row sees its unpadded positions.
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # (batch, T)
        keep = max(len(c) for c in conts)
        kwargs: dict[str, Any] = {"logits_to_keep": keep} if self._accepts_logits_to_keep else {}
        out = self.model(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            position_ids=position_ids.to(device),
            use_cache=False,
            **kwargs,
        )
        logits = out.logits[:, -keep:, :].float()  # (batch, keep, vocab): rows all end at T-1
        logprobs = torch.log_softmax(logits, dim=-1)
        scored = []
        for row, cont in enumerate(conts):
            target = torch.tensor(cont, dtype=torch.long, device=logprobs.device)  # (n_cont,)
            # The prediction for cont[j] is at the position right before it; the last n_cont positions.
            picked = logprobs[row, keep - len(cont) :, :].gather(-1, target[:, None])  # (n_cont, 1)
            scored.append((float(picked.sum().double()), len(cont)))
        return scored

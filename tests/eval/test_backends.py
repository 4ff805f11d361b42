"""HFBackend on tiny models: batching, left padding, stopping, truncation, choice log-likelihoods."""

from __future__ import annotations

import torch
from tiny_lm import chain, scripted_llama

from calderalab.eval.backends import AnswerLineStop, HFBackend

PROMPTS = [
    [{"role": "user", "content": "What is 2+2?"}],
    [{"role": "user", "content": "A much longer question about trains leaving stations at 3:15 PM."}],
    "raw text prompt",
    [{"role": "user", "content": "x"}],
    [{"role": "user", "content": "Order A, B, C by height; B is tallest and C is shortest."}],
]


def test_batched_generation_equals_one_at_a_time(tok, random_lm):
    batched = HFBackend(random_lm, tok, batch_size=4).generate(PROMPTS, max_new_tokens=10, stop_at_answer=False)
    single = HFBackend(random_lm, tok, batch_size=1).generate(PROMPTS, max_new_tokens=10, stop_at_answer=False)
    assert [g.text for g in batched] == [g.text for g in single]
    assert [g.n_tokens for g in batched] == [g.n_tokens for g in single]
    assert [g.finish_reason for g in batched] == [g.finish_reason for g in single]
    assert sum(g.truncated for g in batched) >= 3  # random text rarely ends, never answers


def test_generation_is_deterministic(tok, random_lm):
    backend = HFBackend(random_lm, tok, batch_size=3)
    assert backend.generate(PROMPTS, 4) == backend.generate(PROMPTS, 4)


def test_stops_once_the_answer_line_is_complete(tok):
    model = scripted_llama(tok, chain("Answer: 5\nxyz"))
    backend = HFBackend(model, tok, batch_size=2)
    (stopped,) = backend.generate([PROMPTS[0]], max_new_tokens=40)
    assert stopped.text == "Answer: 5\n"
    assert (stopped.n_tokens, stopped.finish_reason, stopped.truncated) == (10, "answer", False)
    (free,) = backend.generate([PROMPTS[0]], max_new_tokens=20, stop_at_answer=False)
    assert free.text == "Answer: 5\nxyz" + "z" * 7 and free.n_tokens == 20
    assert not free.truncated  # the cap was hit, but after the answer line


def test_per_row_stop_and_truncation_in_one_batch(tok):
    script = chain("Answer: 5\n", start="Q", end="x") | chain("bcdfg", start="?")
    backend = HFBackend(scripted_llama(tok, script), tok, batch_size=2)
    answered, rambling = backend.generate(["Q", "long prompt?"], max_new_tokens=12)
    assert answered.text == "Answer: 5\n" and answered.finish_reason == "answer"
    assert rambling.text == "bcdfg" + "g" * 7 and rambling.truncated and rambling.finish_reason == "cap"


def test_eos_ends_a_reply_without_truncation(tok):
    backend = HFBackend(scripted_llama(tok, chain("ok", end="</s>")), tok)
    (gen,) = backend.generate([PROMPTS[0]], max_new_tokens=30)
    assert (gen.text, gen.n_tokens, gen.finish_reason, gen.truncated) == ("ok", 3, "eos", False)


def test_answer_line_stop_flags_rows_separately(tok):
    prompt = tok("<|assistant|>", add_special_tokens=False)["input_ids"]
    rows = [prompt + tok(t, add_special_tokens=False)["input_ids"] for t in ["Answer: 7\n", "Answer:\n\n", "Answer: 7\nX"]]
    width = max(len(r) for r in rows)
    ids = torch.tensor([[0] * (width - len(r)) + r for r in rows])
    done = AnswerLineStop(tok, prompt_len=1 + width - len(rows[0]))(ids, None)
    assert done.tolist() == [True, False, False]  # empty answer line; newest token not a newline


def _manual_loglik(model, tok, context: str, continuation: str) -> float:
    ctx = tok(context, add_special_tokens=False)["input_ids"]
    cont = tok(continuation, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(ids).logits[0].double(), dim=-1)
    return sum(float(logprobs[len(ctx) - 1 + j, t]) for j, t in enumerate(cont))


def test_choice_loglik_matches_a_manual_forward_pass(tok, random_lm):
    backend = HFBackend(random_lm, tok, batch_size=3)
    items = [(PROMPTS[0], [" 4", " 5", " 22"]), (PROMPTS[4], [" C<A<B", " B"])]
    scores = backend.choice_scores(items, assistant_prefix="Answer:")
    for (prompt, options), got in zip(items, scores):
        context = backend.render(prompt, "Answer:")
        want = [_manual_loglik(random_lm, tok, context, o) for o in options]
        torch.testing.assert_close(torch.tensor(got.logliks), torch.tensor(want), atol=1e-4, rtol=0)
        assert got.n_tokens == tuple(len(o) for o in options)  # char tokenizer: one token per char


def test_batched_choice_equals_one_at_a_time(tok, random_lm):
    items = [(p, [" A", " B", " C", " 12:30 PM"]) for p in PROMPTS]
    batched = HFBackend(random_lm, tok, batch_size=7).choice_loglik(items)
    single = HFBackend(random_lm, tok, batch_size=1).choice_loglik(items)
    torch.testing.assert_close(torch.tensor(batched), torch.tensor(single), atol=1e-4, rtol=0)
    assert [max(range(4), key=r.__getitem__) for r in batched] == [max(range(4), key=r.__getitem__) for r in single]


def test_shared_context_scoring_equals_padded_batches(tok, random_lm):
    """The KV-cache path (one context pass per item) gives the padded full-sequence log-likelihoods."""
    items = [(p, [" A", " B", " 12:30 PM", " 1168"]) for p in PROMPTS]
    shared = HFBackend(random_lm, tok, batch_size=4, share_context=True).choice_scores(items, assistant_prefix="Answer:")
    padded = HFBackend(random_lm, tok, batch_size=4, share_context=False).choice_scores(items, assistant_prefix="Answer:")
    torch.testing.assert_close(torch.tensor([s.logliks for s in shared]), torch.tensor([s.logliks for s in padded]),
                               atol=1e-4, rtol=0)
    assert [s.n_tokens for s in shared] == [s.n_tokens for s in padded]


def test_batched_next_token_scoring_equals_padded_batches(tok, random_lm):
    """One-token options (letters) take the batched next-token path; it equals the full-sequence scores."""
    items = [(p, ["A", "B", "C", "D"]) for p in PROMPTS]
    backend = HFBackend(random_lm, tok, batch_size=3, share_context=True)
    calls = []
    fast = backend.choice_scores(items, assistant_prefix="Answer:", on_batch=calls.append)
    padded = HFBackend(random_lm, tok, batch_size=4, share_context=False).choice_scores(items, assistant_prefix="Answer:")
    torch.testing.assert_close(torch.tensor([s.logliks for s in fast]), torch.tensor([s.logliks for s in padded]),
                               atol=1e-4, rtol=0)
    assert all(s.n_tokens == (1, 1, 1, 1) for s in fast) and sum(calls) == 4 * len(PROMPTS)


def test_rotations_share_their_prefix_and_equal_the_padded_scores(tok, random_lm):
    """Rotated letter probes share a long prefix: it runs once per group, scores unchanged."""
    from calderalab.eval.batching import prefix_groups
    from calderalab.eval.probes import understanding_rotations
    from calderalab.eval.tasks import generate_instances, load_families

    insts = generate_instances(load_families(), 1, seed=0)[:3]
    items = [(list(it.messages), ["A", "B", "C", "D"][: len(it.continuations)])
             for inst in insts for it in understanding_rotations(inst)]
    backend = HFBackend(random_lm, tok, batch_size=4)
    contexts = [backend.encode(backend.render(p, "Answer:")) for p, _ in items]
    groups = prefix_groups(contexts, 4)
    assert [len(g) for _, g in groups] == [len(i.plan_options) for i in insts]  # one group per instance
    assert all(p > 50 for p, _ in groups)
    fast = backend.choice_scores(items, assistant_prefix="Answer:")
    padded = HFBackend(random_lm, tok, batch_size=4, share_context=False).choice_scores(items, assistant_prefix="Answer:")
    torch.testing.assert_close(torch.tensor([s.logliks for s in fast]), torch.tensor([s.logliks for s in padded]),
                               atol=1e-4, rtol=0)


def test_choice_picks_the_planted_option(tok):
    backend = HFBackend(scripted_llama(tok, chain("Answer: 7\n")), tok)
    (scores,) = backend.choice_loglik([(PROMPTS[0], ["Answer: 8", "Answer: 7", "Answers"])])
    assert max(range(3), key=scores.__getitem__) == 1
    assert scores[1] > scores[0] and scores[1] > scores[2]


def test_left_padding_leaves_real_token_logits_unchanged(tok, random_lm):
    short = tok("<s><|user|>hi\n<|assistant|>", add_special_tokens=False)["input_ids"]
    pad = 9
    ids = torch.tensor([[0] * pad + short])
    mask = torch.tensor([[0] * pad + [1] * len(short)])
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        padded = random_lm(input_ids=ids, attention_mask=mask, position_ids=positions).logits[0, pad:]
        alone = random_lm(input_ids=torch.tensor([short])).logits[0]
    torch.testing.assert_close(padded, alone, atol=1e-4, rtol=0)


def test_bad_arguments_are_rejected(tok, random_lm):
    import pytest

    with pytest.raises(ValueError, match="batch_size"):
        HFBackend(random_lm, tok, batch_size=0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        HFBackend(random_lm, tok).generate(PROMPTS, max_new_tokens=0)
    with pytest.raises(ValueError, match="no options"):
        HFBackend(random_lm, tok).choice_loglik([(PROMPTS[0], [])])

"""Batching of token rows for the scoring backends: length-sorted batches, runs of contexts that
share a prefix (the rotations of one probe), and left padding. Pure: token ids in, indices or
tensors out; no model calls."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first), for little padding."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


MIN_SHARED_PREFIX = 16  # tokens; below this a shared prefix is not worth a pass of its own
SHARED_FRACTION = 0.2  # a group's shared prefix is at least this share of each context


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def prefix_groups(contexts: Sequence[Sequence[int]], max_group: int) -> list[tuple[int, list[int]]]:
    """Runs of consecutive contexts sharing a prefix of >= MIN_SHARED_PREFIX tokens, at most max_group
    long: (shared prefix length, indices). Every suffix keeps at least one token (the last one is
    the position whose next-token distribution is read)."""
    groups: list[tuple[int, list[int]]] = []
    i = 0
    while i < len(contexts):
        members, shared = [i], len(contexts[i]) - 1
        j = i + 1
        while j < len(contexts) and len(members) < max_group:
            common = min(shared, common_prefix_len(contexts[i], contexts[j]), len(contexts[j]) - 1)
            # Rotations of one probe share ~30% and have nearly equal lengths; two probes that only
            # share the chat template are not worth a group (their padded suffixes cost more).
            if common < max(MIN_SHARED_PREFIX, SHARED_FRACTION * len(contexts[j])) or \
                    abs(len(contexts[j]) - len(contexts[i])) > SHARED_FRACTION * len(contexts[i]):
                break
            members, shared = members + [j], common
            j += 1
        groups.append((shared, members))
        i = j
    return groups


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token rows. Returns input_ids and attention_mask, both (batch, max_len)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r) :] = 1
    return ids, mask

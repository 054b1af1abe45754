"""Translation search: greedy and beam search over an encoder-decoder, with the decoder state as cache.

The model runs `encode` once per batch of sources and then `decode` one target token at a time; beam search
keeps K hypotheses per sentence and reorders the decoder state (batch first) to follow them. A hypothesis
ends at </s>; finished ones stay in the beam with their score, extended by <pad> at no cost. The best
finished hypothesis maximises log p / lp(length), with GNMT's lp = ((5 + length) / 6) ** length_penalty
(0 compares raw log-probabilities; larger values favour longer outputs). With beam 1 this is greedy search.

Shapes: B sentences, K beam, S source length, V vocabulary.
"""

from __future__ import annotations

import torch
from torch import nn

from fbt.data.tokenizer import BOS_ID, EOS_ID, PAD_ID
from fbt.errors import FbtError

EXTRA_TOKENS = 10  # a translation may be this many tokens longer than twice its source


def max_translation_tokens(context: int, source_length: int) -> int:
    """Tokens a translation of a source (padded) of `source_length` ids may take: 2 x source length + 10, within
    the decoder's `context` positions, one of which holds <s>."""
    return min(context - 1, 2 * source_length + EXTRA_TOKENS)


def check_search(beam: int, length_penalty: float) -> None:
    if not isinstance(beam, int) or beam < 1:
        raise FbtError(f"beam must be a positive integer, got {beam!r}")
    if not length_penalty >= 0:
        raise FbtError(f"length penalty must be >= 0, got {length_penalty}")


def next_token_logits(logits: torch.Tensor) -> torch.Tensor:
    """The last step's logits (B, V) with <pad> and <s> ruled out: a translation never emits them."""
    return logits[:, -1].float().index_fill(-1, torch.tensor([PAD_ID, BOS_ID], device=logits.device), float("-inf"))


def strip(row: list[int]) -> list[int]:
    """Generated ids up to (not including) the first </s>."""
    return row[: row.index(EOS_ID)] if EOS_ID in row else row


@torch.no_grad()
def greedy_search(model: nn.Module, source: torch.Tensor, max_new_tokens: int) -> list[list[int]]:
    """The most likely token at every step, for each source (B, S); returns B id lists without </s>."""
    state = model.encode(source)
    token = source.new_full((source.shape[0], 1), BOS_ID)
    done = torch.zeros(source.shape[0], dtype=torch.bool, device=source.device)
    produced = []
    for _ in range(max_new_tokens):
        logits, state = model.decode(token, state)
        token = next_token_logits(logits).argmax(-1).masked_fill(done, PAD_ID)[:, None]  # (B, 1)
        produced.append(token)
        done |= token[:, 0] == EOS_ID
        if done.all():
            break
    if not produced:
        return [[] for _ in range(source.shape[0])]
    return [strip(row) for row in torch.cat(produced, dim=1).tolist()]


def length_penalty_factor(lengths: torch.Tensor, alpha: float) -> torch.Tensor:
    return ((5.0 + lengths) / 6.0) ** alpha


@torch.no_grad()
def beam_search(
    model: nn.Module, source: torch.Tensor, max_new_tokens: int, beam: int, length_penalty: float = 1.0
) -> list[list[int]]:
    """The best of `beam` hypotheses per source (B, S); returns B id lists without </s>."""
    check_search(beam, length_penalty)
    B, K = source.shape[0], beam
    device = source.device
    state = model.reorder_state(model.encode(source), torch.arange(B, device=device).repeat_interleave(K))
    token = source.new_full((B * K, 1), BOS_ID)
    scores = torch.zeros(B, K, device=device)
    scores[:, 1:] = float("-inf")  # all beams start equal: keep one until the first step branches
    finished = torch.zeros(B * K, dtype=torch.bool, device=device)
    lengths = torch.zeros(B * K, device=device)
    history = source.new_zeros(B * K, 0)
    offsets = torch.arange(B, device=device)[:, None] * K  # (B, 1)
    for _ in range(max_new_tokens):
        logits, state = model.decode(token, state)
        logp = torch.log_softmax(next_token_logits(logits), dim=-1)  # (B*K, V)
        V = logp.shape[-1]
        ended = torch.full((V,), float("-inf"), device=device)
        ended[PAD_ID] = 0.0
        logp = torch.where(finished[:, None], ended, logp)
        top_scores, top = (scores.view(B * K, 1) + logp).view(B, K * V).topk(K, dim=1)  # (B, K)
        chosen = (offsets + top // V).view(-1)  # (B*K,) the beam each new hypothesis extends
        token = (top % V).view(-1, 1)
        state = model.reorder_state(state, chosen)
        history = torch.cat([history[chosen], token], dim=1)
        lengths = lengths[chosen] + (~finished[chosen]).float()
        finished = finished[chosen] | (token[:, 0] == EOS_ID)
        scores = top_scores
        if finished.all():
            break
    normalised = scores / length_penalty_factor(lengths.view(B, K), length_penalty)
    best = (offsets[:, 0] + normalised.argmax(dim=1)).tolist()
    rows = history.tolist()
    return [strip([t for t in rows[i] if t != PAD_ID]) for i in best]


def search(
    model: nn.Module, source: torch.Tensor, max_new_tokens: int, beam: int = 1, length_penalty: float = 1.0
) -> list[list[int]]:
    """Greedy search for beam 1, beam search otherwise."""
    check_search(beam, length_penalty)
    if beam == 1:
        return greedy_search(model, source, max_new_tokens)
    return beam_search(model, source, max_new_tokens, beam, length_penalty)

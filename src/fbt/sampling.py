"""Incremental decoding: the prompt runs once, then one token per forward with the model's state as cache."""

from __future__ import annotations

import torch
from torch import nn

from fbt.errors import FbtError


def check_sampling(max_new_tokens: int, temperature: float, top_k: int, top_p: float) -> None:
    """One clear error for settings that cannot sample."""
    if max_new_tokens < 0:
        raise FbtError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if not temperature >= 0:
        raise FbtError(f"temperature must be >= 0 (0 picks the most likely token), got {temperature}")
    if top_k < 0:
        raise FbtError(f"top_k must be >= 0 (0 keeps every token), got {top_k}")
    if not 0 < top_p <= 1:
        raise FbtError(f"top_p must be in (0, 1], got {top_p}")


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Mask logits (B, V) outside the top-k tokens and outside the smallest set with probability >= top_p."""
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
        # Drop a token when the tokens ranked above it already reach top_p; the first is always kept.
        drop_sorted = (cumulative - torch.softmax(sorted_logits, dim=-1)) >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_next(
    logits: torch.Tensor, temperature: float, top_k: int, top_p: float, generator: torch.Generator | None
) -> torch.Tensor:
    """Next tokens (B,) from last-step logits (B, V); temperature 0 picks the most likely token."""
    if temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(filter_logits(logits.float() / temperature, top_k, top_p), dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate(
    model: nn.Module,
    prompt: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Continue prompt (B, P) by max_new_tokens; returns the new tokens (B, max_new_tokens)."""
    check_sampling(max_new_tokens, temperature, top_k, top_p)
    was_training = model.training
    model.eval()
    # A GPT reads at most its context per forward: a longer prompt goes in windows, its cache sliding along.
    window = getattr(model, "max_forward_tokens", None) or prompt.shape[1]
    state = None
    for start in range(0, prompt.shape[1], window):
        logits, state = model(prompt[:, start : start + window], state)
    produced = []
    for index in range(max_new_tokens):
        token = sample_next(logits[:, -1], temperature, top_k, top_p, generator)  # (B,)
        produced.append(token)
        if index + 1 < max_new_tokens:
            logits, state = model(token[:, None], state)
    model.train(was_training)
    return torch.stack(produced, dim=1) if produced else prompt.new_zeros(prompt.shape[0], 0)

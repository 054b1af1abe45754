"""Translating with a trained seq2seq run, and scoring it on a split of its corpus."""

from __future__ import annotations

import torch
from torch import nn
from tqdm import tqdm

from fbt.api import check_data_exists, load_run, load_streams
from fbt.data.tokenizer import EOS_ID, PAD_ID, BpeTokenizer
from fbt.data.translation import held_out_groups, load_split_pairs, pad, read_corpus
from fbt.decoding import check_search, max_translation_tokens, search
from fbt.errors import FbtError
from fbt.scoring import corpus_scores
from fbt.training.evaluate import evaluate


def translate_texts(
    model: nn.Module,
    tokenizer: BpeTokenizer,
    texts: list[str],
    beam: int = 1,
    length_penalty: float = 1.0,
    batch_size: int = 64,
    progress: bool = False,
) -> list[str]:
    """One translation per text, in order. Sources longer than the model's positions are cut to fit; a
    translation stops at </s> or at 2 x source length + 10 tokens."""
    check_search(beam, length_penalty)
    if batch_size < 1:
        raise FbtError(f"batch size must be >= 1, got {batch_size}")
    context = model.config.context
    device = next(model.parameters()).device
    sources = [ids[: context - 1] + [EOS_ID] for ids in tokenizer.encode_batch([t.strip() for t in texts])]
    order = sorted(range(len(texts)), key=lambda i: len(sources[i]))  # similar lengths batch together
    results: list[str] = [""] * len(texts)
    batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    for chunk in tqdm(batches, desc="translate", unit="batch", leave=False, disable=None if progress else True):
        source = pad([sources[i] for i in chunk], PAD_ID).to(device)  # (B, S)
        limit = max_translation_tokens(context, source.shape[1])
        for i, ids in zip(chunk, search(model, source, limit, beam, length_penalty), strict=True):
            # One line per translation: whitespace runs (line breaks included) become one space.
            results[i] = " ".join(tokenizer.decode(ids).split())
    return results


def translate_run(path: str, texts: list[str], beam: int = 1, length_penalty: float = 1.0, batch_size: int = 64,
                  device: str = "auto", progress: bool = False) -> list[str]:  # fmt: skip
    """Translations of `texts` by the latest checkpoint of a translation run (or a checkpoint directory)."""
    model, task, _, _ = load_run(path, device)
    if task.name != "translation":
        raise FbtError(f"{path} is a {task.name} run; fbt translate needs a translation run")
    with torch.no_grad():
        return translate_texts(model, task.tokenizer, texts, beam, length_penalty, batch_size, progress)


def evaluate_translation(
    path: str,
    split: str = "test",
    data: str | None = None,
    beam: int = 1,
    length_penalty: float = 1.0,
    device: str = "auto",
    progress: bool = False,
) -> dict:
    """Teacher-forced loss, accuracy and perplexity on `split`, and BLEU/chrF of translating every pair of it
    (with the same scores of copying the source, the floor any translation must clear); `groups` names the
    held-out groups of a corpus split by groups."""
    model, task, _, config = load_run(path, device)
    if not data:
        check_data_exists(config)
    data = data or config.data
    (stream,) = load_streams(task, config, data, (split,))
    metrics = evaluate(model, stream, task, next(model.parameters()).device, progress=progress)
    corpus = read_corpus(data, config.source_column, config.target_column, config.target_data, config.group_column)
    sources, references = load_split_pairs(corpus, split)
    hypotheses = translate_texts(model, task.tokenizer, sources, beam, length_penalty, progress=progress)
    scores = corpus_scores(hypotheses, references)
    copy = corpus_scores(sources, references)
    groups = held_out_groups(corpus, split) if split != "train" else []
    return {
        **metrics,
        "bleu": scores["bleu"],
        "chrf": scores["chrf"],
        "copy_source_bleu": copy["bleu"],
        "copy_source_chrf": copy["chrf"],
        "sentences": len(sources),
        **({"groups": ", ".join(groups)} if groups else {}),
        "beam": beam,
        "bleu_signature": scores["bleu_signature"],
        "chrf_signature": scores["chrf_signature"],
    }

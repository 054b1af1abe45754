"""Translating with a seq2seq model, and scoring its translations of a split of its corpus."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from fbt.data.tokenizer import EOS_ID, PAD_ID, BpeTokenizer
from fbt.data.translation import ParallelCorpus, held_out_groups, load_split_pairs, pad
from fbt.decoding import check_search, max_translation_tokens, search
from fbt.errors import FbtError
from fbt.progress import progress_display
from fbt.rundir import write_text_atomic
from fbt.scoring import corpus_scores

EXAMPLES = 3  # translations `fbt eval` shows beside their sources and references


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
    for chunk in progress_display(batches, desc="translate", unit="batch", leave=False, shown=progress):
        source = pad([sources[i] for i in chunk], PAD_ID).to(device)  # (B, S)
        limit = max_translation_tokens(context, source.shape[1])
        for i, ids in zip(chunk, search(model, source, limit, beam, length_penalty), strict=True):
            # One line per translation: whitespace runs (line breaks included) become one space.
            results[i] = " ".join(tokenizer.decode(ids).split())
    return results


def score_translations(
    model: nn.Module,
    tokenizer: BpeTokenizer,
    corpus: ParallelCorpus,
    split: str,
    beam: int = 1,
    length_penalty: float = 1.0,
    progress: bool = False,
    outputs: str | None = None,
) -> dict:
    """BLEU/chrF of translating every pair of `split`, with the same scores of copying the source (the floor any
    translation must clear); `groups` names the held-out groups of a corpus split by groups; `examples` shows
    the first EXAMPLES translations beside their sources and references. With `outputs`, every translation is
    written there, one line per pair of the split."""
    sources, references = load_split_pairs(corpus, split)
    hypotheses = translate_texts(model, tokenizer, sources, beam, length_penalty, progress=progress)
    if outputs:
        write_text_atomic(Path(outputs), "".join(line + "\n" for line in hypotheses))
    scores = corpus_scores(hypotheses, references)
    copy = corpus_scores(sources, references)
    groups = held_out_groups(corpus, split) if split != "train" else []
    return {
        "bleu": scores["bleu"],
        "chrf": scores["chrf"],
        "copy_source_bleu": copy["bleu"],
        "copy_source_chrf": copy["chrf"],
        "sentences": len(sources),
        **({"groups": ", ".join(groups)} if groups else {}),
        "beam": beam,
        "bleu_signature": scores["bleu_signature"],
        "chrf_signature": scores["chrf_signature"],
        "examples": [
            {"source": source, "reference": reference, "translation": hypothesis}
            for source, reference, hypothesis in list(zip(sources, references, hypotheses))[:EXAMPLES]
        ],
    }

"""Corpus-level BLEU and chrF with sacrebleu (the `mt` extra), with the signatures that make them
reproducible: the defaults are the WMT conventions (13a tokenization, exponential smoothing, chrF with
character 6-grams and beta 2)."""

from __future__ import annotations

from fbt.errors import FbtError


def corpus_scores(hypotheses: list[str], references: list[str]) -> dict:
    """{"bleu", "chrf", "bleu_signature", "chrf_signature"} of hypotheses against one reference each."""
    try:
        from sacrebleu.metrics import BLEU, CHRF
    except ImportError:
        raise FbtError("BLEU and chrF need sacrebleu: pip install 'fbt[mt]'") from None
    if len(hypotheses) != len(references):
        raise FbtError(f"{len(hypotheses)} hypotheses for {len(references)} references")
    bleu, chrf = BLEU(), CHRF()
    return {
        "bleu": bleu.corpus_score(hypotheses, [references]).score,
        "chrf": chrf.corpus_score(hypotheses, [references]).score,
        "bleu_signature": str(bleu.get_signature()),
        "chrf_signature": str(chrf.get_signature()),
    }

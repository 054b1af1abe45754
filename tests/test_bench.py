"""`fbt bench` reports every figure for every model; no speed is asserted (speed belongs to benchmarks)."""

import json

import pytest
from families import LANGUAGE_MODELS

from fbt.bench import forward_flops_per_token, parse_model_spec
from fbt.cli import main
from fbt.errors import FbtError

BASE = dict(dim=16, layers=2, heads=2, ff=32, span=8, context=16, vocab_size=32)


def test_model_specs_override_the_shared_sizes():
    label, config, _ = parse_model_spec("transformer-xl:layers=3,dim=32", BASE)
    assert (label, config.layers, config.dim, config.span) == ("transformer-xl L3", 3, 32, 8)
    _, per_layer, _ = parse_model_spec("feedback:kv=per-layer", BASE)
    assert not per_layer.shared_kv
    with pytest.raises(FbtError, match="unknown model setting"):
        parse_model_spec("feedback:colour=red", BASE)
    with pytest.raises(FbtError, match="unknown K/V choice 'both'; choose one of shared, per-layer"):
        parse_model_spec("feedback:kv=both", BASE)
    with pytest.raises(FbtError, match="unknown model"):
        parse_model_spec("bert", BASE)


def test_flops_count_matches_a_hand_count():
    _, config, _ = parse_model_spec("feedback", {**BASE, "dim": 4, "ff": 8, "span": 3, "layers": 1, "vocab_size": 5})
    # q, out: 2 * 2*4*4; ffn: 2 * 2*4*8; scores, positions, values: 3 * 2*3*4; shared K/V: 2 * 2*4*4; head 2*4*5
    assert forward_flops_per_token(config) == 64 + 128 + 72 + 64 + 40


def test_bench_json_has_one_entry_per_model(capsys):
    args = [
        "bench",
        "--models",
        "transformer-xl:layers=3",
        *LANGUAGE_MODELS,
        "--dim",
        "16",
        "--heads",
        "2",
        "--ff",
        "32",
        "--span",
        "8",
        "--context",
        "16",
        "--layers",
        "2",
        "--batch",
        "2",
        "--segment",
        "8",
        "--repeats",
        "1",
        "--steps",
        "1",
        "--decode-tokens",
        "2",
        "--decode-batches",
        "1",
        "4",
        "--json",
    ]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [m["name"] for m in report["models"]] == ["transformer-xl L3", *(f"{name} L2" for name in LANGUAGE_MODELS)]
    for entry in report["models"]:
        # No upper bound: on a loaded machine the measured matmul peak can be low enough to put MFU over 1.
        assert entry["train_tokens_per_s"] > 0 and entry["mfu"] > 0
        assert set(entry["decode_tokens_per_s"]) == {"1", "4"}
        assert entry["peak_memory_mb"] >= 0

"""save_pretrained, from_pretrained and generate on every model family (models/pretrained.py)."""

import json

import pytest
import torch
from families import FAMILIES, LANGUAGE_MODELS

from fbt import api, checkpoint, rundir, sampling
from fbt.data.tokenizer import EOS_ID, PAD_ID
from fbt.data.translation import make_batch
from fbt.decoding import max_translation_tokens, search
from fbt.errors import FbtError
from fbt.models import ModelConfig, build_model, from_pretrained, model_class
from fbt.models.feedback import FeedbackTransformer
from fbt.models.gpt import GPT
from fbt.models.seq2seq import Seq2Seq
from fbt.models.transformer_xl import TransformerXL
from fbt.training.config import TrainConfig

TINY = dict(vocab_size=40, dim=32, layers=2, heads=2, ff=64, span=8, context=16)
FILES = {"model.safetensors", "config.json", "generation_config.json"}
LM_DEFAULTS = {"max_new_tokens": 200, "temperature": 1.0, "top_k": 0, "top_p": 1.0}  # those of `fbt generate`


def tiny_model(family, **changes):
    """A tiny model whose weights no fresh build reproduces (random init, then nudged)."""
    torch.manual_seed(0)
    extra = {"encoder_layers": 1} if model_class(family).translates else {}
    model = build_model(ModelConfig(**{**TINY, **extra, "model": family, **changes}))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    return model


def sources():
    """Two sources ending in </s>, the shorter padded."""
    return torch.tensor([[5, 9, 12, 7, EOS_ID], [8, 3, EOS_ID, PAD_ID, PAD_ID]])


def logits_of(model):
    if model.translates:
        batch, _ = make_batch([[5, 9, 12, 7], [8, 3]], [[4, 6, 10], [11]])
        return model(batch)[0]
    return model(torch.tensor([[3, 14, 15, 9, 26, 5], [35, 8, 9, 7, 9, 3]]))[0]


def assert_same_weights(model, other):
    ours, theirs = model.state_dict(), other.state_dict()
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert torch.equal(ours[name], theirs[name]), name


@pytest.mark.parametrize("family", FAMILIES)
def test_save_then_load_gives_the_same_model(family, tmp_path):
    model = tiny_model(family)
    model.save_pretrained(tmp_path / "saved")
    assert {path.name for path in (tmp_path / "saved").iterdir()} == FILES  # no temporary file left behind
    assert json.loads((tmp_path / "saved" / "config.json").read_text()) == model.config.to_dict()  # flat
    for loader in (model_class(family).from_pretrained, from_pretrained):
        loaded = loader(tmp_path / "saved")
        assert type(loaded) is model_class(family)
        assert not loaded.training
        assert loaded.config == model.config
        assert_same_weights(model, loaded)
        with torch.no_grad():
            assert torch.equal(logits_of(model.eval()), logits_of(loaded))


def test_loading_never_unpickles(tmp_path, monkeypatch):
    tiny_model("feedback").save_pretrained(tmp_path)

    def refuse(*args, **kwargs):
        raise AssertionError("torch.load (pickle) was called")

    monkeypatch.setattr(torch, "load", refuse)
    assert isinstance(from_pretrained(tmp_path), FeedbackTransformer)


def test_an_interrupted_save_keeps_the_previous_files(tmp_path, monkeypatch):
    model = tiny_model("gpt")
    model.save_pretrained(tmp_path)
    before = (tmp_path / "model.safetensors").read_bytes()

    def write_half_then_fail(tensors, path):
        with open(path, "wb") as handle:
            handle.write(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(rundir, "save_file", write_half_then_fail)
    with torch.no_grad():
        model.head.weight.add_(1.0)
    with pytest.raises(KeyboardInterrupt):
        model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").read_bytes() == before
    assert {path.name for path in tmp_path.iterdir()} == FILES


def test_a_run_directory_loads_the_weights_of_its_latest_checkpoint(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("to be or not to be, that is the question.\n" * 100)
    model_config = ModelConfig(model="feedback", **TINY)
    train_config = TrainConfig(task="text", data=str(text), steps=2, batch=2, segment=8, warmup=1, eval_tokens=64)
    run = tmp_path / "run"
    api.train(model_config, train_config, run, device="cpu", progress=False)
    expected, _, _, _ = api.load_run(run, device="cpu")
    for path in (run, checkpoint.find_checkpoint(run)):
        loaded = FeedbackTransformer.from_pretrained(path)
        assert not loaded.training
        assert loaded.config.vocab_size == 256  # the text task's, as the run trained it
        assert_same_weights(expected, loaded)
        assert loaded.generation_settings() == LM_DEFAULTS  # a run saves no generation config
    with pytest.raises(FbtError, match="holds a feedback model"):
        GPT.from_pretrained(run)


@pytest.mark.parametrize("family", LANGUAGE_MODELS)
def test_generate_samples_as_fbt_sampling_does_after_the_prompt(family):
    model = tiny_model(family).eval()
    prompt = torch.tensor([[3, 14, 15, 9, 26], [5, 35, 8, 9, 7]])
    out = model.generate(prompt, max_new_tokens=12, temperature=0.9, top_k=5, top_p=0.8, seed=3)
    new = sampling.generate(model, prompt, 12, 0.9, 5, 0.8, torch.Generator().manual_seed(3))
    assert out.shape == (2, 5 + 12)
    assert torch.equal(out[:, :5], prompt)
    assert torch.equal(out[:, 5:], new)
    one = model.generate([3, 14, 15, 9, 26], max_new_tokens=12, temperature=0.9, top_k=5, top_p=0.8, seed=3)
    assert one.shape == (1, 17) and torch.equal(one[0, :5], prompt[0])


def test_the_seed_makes_sampling_reproducible_and_temperature_zero_is_greedy():
    model = tiny_model("feedback").eval()
    prompt = torch.tensor([[3, 14, 15]])
    first, second = (model.generate(prompt, max_new_tokens=20, seed=seed) for seed in (1, 2))
    assert torch.equal(model.generate(prompt, max_new_tokens=20, seed=1), first)
    assert not torch.equal(first, second)
    greedy = model.generate(prompt, max_new_tokens=20, temperature=0.0, seed=1)
    assert torch.equal(model.generate(prompt, max_new_tokens=20, temperature=0.0), greedy)
    assert torch.equal(greedy[:, 3:], sampling.generate(model, prompt, 20, temperature=0.0))


def test_generate_takes_its_defaults_from_the_generation_config(tmp_path):
    model = tiny_model("gpt")
    assert model.generation_settings() == LM_DEFAULTS
    model.save_pretrained(tmp_path, generation_config={"max_new_tokens": 5, "temperature": 0.0})
    saved = json.loads((tmp_path / "generation_config.json").read_text())
    assert saved == {**LM_DEFAULTS, "max_new_tokens": 5, "temperature": 0.0}
    loaded = GPT.from_pretrained(tmp_path)
    prompt = torch.tensor([[3, 14, 15]])
    out = loaded.generate(prompt)
    assert out.shape == (1, 3 + 5)
    assert torch.equal(out, loaded.generate(prompt, seed=9))  # temperature 0: no sampling
    assert torch.equal(out[:, 3:], sampling.generate(loaded, prompt, 5, temperature=0.0))
    assert loaded.generate(prompt, max_new_tokens=2).shape == (1, 3 + 2)  # an argument overrides the config
    sampled = loaded.generate(prompt, temperature=1.0, top_k=4, seed=0)
    assert torch.equal(
        sampled[:, 3:], sampling.generate(loaded, prompt, 5, 1.0, 4, 1.0, torch.Generator().manual_seed(0))
    )
    loaded.save_pretrained(tmp_path / "again")  # keeps the config it was loaded with
    assert json.loads((tmp_path / "again" / "generation_config.json").read_text()) == saved


BAD_SETTINGS = [
    ({"temperature": -1.0}, "temperature"),
    ({"top_k": -1}, "top_k"),
    ({"top_p": 0.0}, "top_p"),
    ({"max_new_tokens": -1}, "max_new_tokens"),
    ({"max_new_tokens": 2.5}, "max_new_tokens must be an integer"),
    ({"temperature": "hot"}, "temperature must be a number"),
]


@pytest.mark.parametrize(("settings", "message"), BAD_SETTINGS)
def test_bad_sampling_settings_are_one_line_errors(settings, message, tmp_path):
    model = tiny_model("lstm")
    with pytest.raises(FbtError, match=message):
        model.generate([3, 4], **settings)
    with pytest.raises(FbtError, match=message):
        model.save_pretrained(tmp_path, generation_config=settings)
    model.save_pretrained(tmp_path)
    (tmp_path / "generation_config.json").write_text(json.dumps({**LM_DEFAULTS, **settings}))
    with pytest.raises(FbtError, match=f"generation_config.json is invalid: .*{message}"):
        from_pretrained(tmp_path)


def test_bad_prompts_and_unknown_settings_are_errors(tmp_path):
    model = tiny_model("feedback")
    for prompt in ([], [3, 40], [-1], torch.zeros(2, 3, 4, dtype=torch.long)):
        with pytest.raises(FbtError):
            model.generate(prompt, max_new_tokens=1)
    with pytest.raises(FbtError, match="unknown generation settings beam"):
        model.save_pretrained(tmp_path, generation_config={"beam": 4})


def test_seq2seq_generate_translates_with_the_search_of_fbt_translate(tmp_path):
    model = tiny_model("seq2seq").eval()
    with torch.no_grad():
        model.head.weight[EOS_ID] = 0.0  # </s> scores 0, below the best token: translations run to their limit
    source = sources()
    default = search(model, source, max_translation_tokens(TINY["context"], source.shape[1]))
    assert [len(ids) for ids in default] == [TINY["context"] - 1] * 2
    assert model.generate(source) == default
    assert model.generate(source, max_new_tokens=6, beam=3, length_penalty=0.5) == search(model, source, 6, 3, 0.5)
    assert model.generate([5, 9, 12, 7, EOS_ID]) == default[:1]
    model.save_pretrained(tmp_path, generation_config={"beam": 2, "max_new_tokens": 4})
    assert json.loads((tmp_path / "generation_config.json").read_text()) == {
        "beam": 2,
        "length_penalty": 1.0,
        "max_new_tokens": 4,
    }
    assert Seq2Seq.from_pretrained(tmp_path).generate(source) == search(model, source, 4, 2, 1.0)
    for settings in ({"beam": 0}, {"length_penalty": -1.0}, {"max_new_tokens": -1}):
        with pytest.raises(FbtError):
            model.generate(source, **settings)
    with pytest.raises(FbtError, match="unknown generation settings temperature"):
        model.save_pretrained(tmp_path, generation_config={"temperature": 0.5})


def test_the_wrong_family_class_names_the_family_it_holds(tmp_path):
    tiny_model("gpt").save_pretrained(tmp_path)
    for wrong in (FeedbackTransformer, TransformerXL, Seq2Seq):
        with pytest.raises(FbtError) as error:
            wrong.from_pretrained(tmp_path)
        message = str(error.value)
        assert "holds a gpt model (GPT)" in message and "fbt.models.from_pretrained loads any" in message
        assert "\n" not in message
    assert isinstance(from_pretrained(tmp_path), GPT)


def test_missing_and_corrupt_directories_are_one_line_errors(tmp_path):
    with pytest.raises(FbtError, match="no such model directory"):
        from_pretrained(tmp_path / "nowhere")
    saved = tmp_path / "saved"
    tiny_model("transformer-xl").save_pretrained(saved)
    config = (saved / "config.json").read_text()
    (saved / "config.json").write_text(config[: len(config) // 2])
    with pytest.raises(FbtError, match="config.json is corrupt"):
        from_pretrained(saved)
    (saved / "config.json").write_text(json.dumps({**json.loads(config), "widht": 3}))
    with pytest.raises(FbtError, match="config.json is corrupt: unknown model config keys: widht"):
        from_pretrained(saved)
    (saved / "config.json").write_text(json.dumps({**json.loads(config), "dim": 64, "heads": 2}))
    with pytest.raises(FbtError, match="model.safetensors does not fit the model config"):
        from_pretrained(saved)
    (saved / "config.json").write_text(config)
    (saved / "model.safetensors").unlink()
    with pytest.raises(FbtError, match="missing file .*model.safetensors"):
        from_pretrained(saved)
    (saved / "config.json").unlink()
    with pytest.raises(FbtError, match="missing file .*config.json"):
        from_pretrained(saved)


def test_non_finite_weights_are_never_saved(tmp_path):
    model = tiny_model("feedback")
    with torch.no_grad():
        model.head.weight[0, 0] = float("nan")
    with pytest.raises(FbtError, match="weight head.weight holds NaN or infinite values") as error:
        model.save_pretrained(tmp_path / "saved")
    assert "\n" not in str(error.value)
    assert not (tmp_path / "saved").exists()


def test_a_run_directory_is_never_overwritten(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(FbtError, match="holds a training run"):
        tiny_model("lstm").save_pretrained(tmp_path)
    assert [path.name for path in tmp_path.iterdir()] == ["checkpoints"]

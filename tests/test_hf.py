"""The transformers integration (fbt.hf): AutoModelForCausalLM, generate(), Trainer, conversion, fbt export."""

import itertools
import json
import os
import shutil
import subprocess
import sys

import pytest

transformers = pytest.importorskip("transformers")

import torch  # noqa: E402
from families import LANGUAGE_MODELS  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from tiny_runs import TINY_MODEL, tiny_configs, write_corpus  # noqa: E402
from toy_task import VOCAB, RecallTask, write_recall_data  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments, pipeline  # noqa: E402

from fbt import api  # noqa: E402
from fbt.cli import main  # noqa: E402
from fbt.data.tokenizer import train_tokenizer  # noqa: E402
from fbt.errors import FbtError  # noqa: E402
from fbt.hf import FbtByteTokenizer, FbtConfig, FbtForCausalLM, export_hf, load_hf_as_fbt  # noqa: E402
from fbt.hf.tokenization import word_tokenizer  # noqa: E402
from fbt.models import ModelConfig, build_model, from_pretrained  # noqa: E402
from fbt.tasks import TASKS, task_class  # noqa: E402
from fbt.tasks.code_exec import CodeExecTask  # noqa: E402

TINY = {**TINY_MODEL, "dropout": 0.0, "span": 5}
pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_pair(family, vocab_size=11):
    """Our model and its transformers wrapper with the same (random, nudged) float64 weights, in eval mode."""
    torch.manual_seed(0)
    ours = build_model(ModelConfig(model=family, vocab_size=vocab_size, **TINY)).double().eval()
    with torch.no_grad():
        for parameter in ours.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    wrapped = FbtForCausalLM(FbtConfig.from_model_config(ours.config)).double().eval()
    wrapped.model.load_state_dict(ours.state_dict())
    return ours, wrapped


def assert_same_weights(model, other):
    ours, theirs = model.state_dict(), other.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[name], theirs[name]) for name in ours)


def one_error_line(capsys, argv):
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fbt: error: "), err
    return err


@pytest.mark.parametrize("family", LANGUAGE_MODELS)
def test_logits_equal_ours_with_and_without_a_cache(family):
    ours, wrapped = tiny_pair(family)
    first, second = torch.randint(0, 11, (2, 6)), torch.randint(0, 11, (2, 3))
    with torch.no_grad():
        logits, state = ours(first)
        next_logits, _ = ours(second, state)
        out = wrapped(first)
        carried = wrapped(second, cache=out.cache)
        whole = wrapped(torch.cat([first, second], dim=1), use_cache=False)
    assert out.logits.dtype == torch.float64 and whole.cache is None
    torch.testing.assert_close(out.logits, logits, atol=1e-9, rtol=0)
    torch.testing.assert_close(carried.logits, next_logits, atol=1e-9, rtol=0)
    torch.testing.assert_close(whole.logits, torch.cat([logits, next_logits], dim=1), atol=1e-9, rtol=0)
    assert carried.cache.get_seq_length() == 9


@pytest.mark.parametrize("family", LANGUAGE_MODELS)
def test_greedy_generate_equals_our_greedy_generation(family):
    ours, wrapped = tiny_pair(family)
    prompt = torch.randint(0, 11, (2, 4))
    expected = ours.generate(prompt, max_new_tokens=8, temperature=0)
    for use_cache in (True, False):
        produced = wrapped.generate(prompt, max_new_tokens=8, do_sample=False, use_cache=use_cache)
        assert torch.equal(produced, expected), use_cache


def test_sampling_with_a_seed_is_reproducible():
    _, wrapped = tiny_pair("feedback")
    prompt = torch.tensor([[1, 2, 3]])

    def sample(seed):
        transformers.set_seed(seed)
        return wrapped.generate(prompt, max_new_tokens=20, do_sample=True, top_k=0)

    assert torch.equal(sample(1), sample(1))
    assert not torch.equal(sample(1), sample(2))


def test_beam_search_returns_distinct_beams():
    _, wrapped = tiny_pair("feedback")
    beams = wrapped.generate(
        torch.tensor([[1, 2, 3]]), max_new_tokens=5, num_beams=4, num_return_sequences=4, do_sample=False
    )
    assert beams.shape == (4, 8) and len({tuple(row) for row in beams.tolist()}) == 4


@pytest.mark.parametrize("family", LANGUAGE_MODELS)
def test_beam_search_over_every_continuation_finds_the_exhaustive_best(family):
    ours, wrapped = tiny_pair(family, vocab_size=3)
    prompt = torch.tensor([[0, 2, 1, 1]])
    continuations = torch.tensor(list(itertools.product(range(3), repeat=3)))  # (27, 3)
    with torch.no_grad():
        logits, _ = ours(torch.cat([prompt.expand(27, -1), continuations], dim=1))
    log_probs = logits[:, 3:-1].log_softmax(-1).gather(-1, continuations[..., None]).sum((1, 2))  # (27,)
    beams = wrapped.generate(
        prompt,
        max_new_tokens=3,
        num_beams=27,
        num_return_sequences=27,
        do_sample=False,
        length_penalty=0.0,  # a beam's score is the plain sum of its log-probabilities
        early_stopping=True,
        output_scores=True,
        return_dict_in_generate=True,
    )
    assert beams.sequences[0, 4:].tolist() == continuations[log_probs.argmax()].tolist()
    # Every continuation, each with its own score: beams kept their own states through the reorders.
    expected = dict(zip(map(tuple, continuations.tolist()), log_probs.tolist()))
    found = dict(zip(map(tuple, beams.sequences[:, 4:].tolist()), beams.sequences_scores.tolist()))
    assert found.keys() == expected.keys()
    assert all(abs(found[key] - expected[key]) < 1e-5 for key in expected)  # generate scores in float32


def test_the_loss_is_the_next_token_cross_entropy_without_ignored_labels():
    ours, wrapped = tiny_pair("gpt")
    tokens = torch.tensor([[1, 4, 2, 7, 3]])
    labels = tokens.clone()
    labels[0, 2] = -100
    with torch.no_grad():
        logits, _ = ours(tokens)
        loss = wrapped(tokens, labels=labels).loss
    expected = -logits[0, [0, 2, 3]].log_softmax(-1)[[0, 1, 2], [4, 7, 3]].mean()  # positions 0, 2, 3 predict 4, 7, 3
    torch.testing.assert_close(loss, expected.float())


def test_an_attention_mask_with_padding_is_refused():
    _, wrapped = tiny_pair("lstm")
    with pytest.raises(FbtError, match="unpadded"):
        wrapped(torch.tensor([[1, 2, 3]]), attention_mask=torch.tensor([[0, 1, 1]]))


class Blocks(torch.utils.data.Dataset):
    """Fixed-length byte blocks of a text file, each its own labels (the model shifts them)."""

    def __init__(self, path, length):
        data = torch.tensor(list(path.read_bytes()))
        self.blocks = data[: len(data) // length * length].view(-1, length)  # (N, length)

    def __len__(self):
        return len(self.blocks)

    def __getitem__(self, index):
        return {"input_ids": self.blocks[index], "labels": self.blocks[index]}


def test_trainer_lowers_the_loss_and_writes_a_loadable_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = FbtForCausalLM(FbtConfig(model="feedback", **TINY))
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"),
        max_steps=30,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        logging_steps=5,
        save_steps=30,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=Blocks(write_corpus(tmp_path / "text.txt"), 24))
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert losses[-1] < losses[0] - 1.0
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out" / "checkpoint-30")
    assert isinstance(loaded, FbtForCausalLM)
    assert_same_weights(model, loaded)


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    """A run of the text task trained for two steps."""
    tmp = tmp_path_factory.mktemp("run")
    model_config, train_config = tiny_configs(write_corpus(tmp / "text.txt"), steps=2, warmup=1)
    api.train(model_config, train_config, tmp / "run", device="cpu", progress=False)
    return tmp / "run"


def test_a_run_converts_to_transformers_and_back_unchanged(text_run, tmp_path, capsys):
    assert main(["export", str(text_run), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    assert main(["export", str(tmp_path / "hf"), "--format", "fbt", "--out", str(tmp_path / "back")]) == 0
    original = from_pretrained(text_run)
    assert_same_weights(original, from_pretrained(tmp_path / "back"))
    assert_same_weights(original, load_hf_as_fbt(tmp_path / "hf"))
    assert_same_weights(original, AutoModelForCausalLM.from_pretrained(tmp_path / "hf").model)
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_fbt.FbtForCausalLM"


def test_an_export_loads_by_remote_code_where_fbt_hf_is_not_imported(text_run, tmp_path):
    copied = shutil.copytree(export_hf(text_run, tmp_path / "hf"), tmp_path / "elsewhere")
    script = (
        "import sys; from transformers import AutoModelForCausalLM, AutoTokenizer; "
        f"model = AutoModelForCausalLM.from_pretrained({str(copied)!r}, trust_remote_code=True); "
        f"tokenizer = AutoTokenizer.from_pretrained({str(copied)!r}, trust_remote_code=True); "
        "print(type(model).__name__, type(tokenizer).__name__, 'fbt.hf' in sys.modules)"
    )
    environment = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules")}
    shown = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=environment, check=True)
    # The config's shim imports fbt.hf, whose registration then serves the model.
    assert shown.stdout.split() == ["FbtForCausalLM", "FbtByteTokenizer", "True"]
    assert {path.name for path in (tmp_path / "modules").rglob("*_fbt.py")} >= {"configuration_fbt.py"}


def test_an_export_generates_through_a_pipeline(text_run, tmp_path):
    copied = export_hf(text_run, tmp_path / "hf")
    model = AutoModelForCausalLM.from_pretrained(copied)
    tokenizer = AutoTokenizer.from_pretrained(copied)
    assert isinstance(tokenizer, FbtByteTokenizer) and tokenizer("hé")["input_ids"] == list("hé".encode())
    assert_same_weights(from_pretrained(text_run), model.model)
    generator = pipeline("text-generation", model=model, tokenizer=tokenizer)
    text = generator("to be", max_new_tokens=10, do_sample=False)[0]["generated_text"]
    expected = model.model.generate(list(b"to be"), max_new_tokens=10, temperature=0)[0].tolist()
    assert text == bytes(expected).decode("utf-8", errors="replace")


def test_a_bpe_run_exports_its_tokenizer_and_a_mismatch_is_refused(tmp_path, capsys):
    tokenizer = train_tokenizer(iter(["to be or not to be"] * 50), 270)
    ids = tokenizer.vocab_size  # at most 270: the corpus may offer fewer merges
    for vocab_size, name in ((ids, "fits"), (ids + 30, "mismatch")):
        build_model(ModelConfig(model="lstm", vocab_size=vocab_size, **TINY)).save_pretrained(tmp_path / name)
        tokenizer.save(tmp_path / name)
    export_hf(tmp_path / "fits", tmp_path / "hf")
    loaded = AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert loaded("to be")["input_ids"] == tokenizer.encode("to be")
    capsys.readouterr()  # the export's own output (transformers may show a progress bar)
    err = one_error_line(capsys, ["export", str(tmp_path / "mismatch"), "--out", str(tmp_path / "out")])
    assert f"{ids} ids" in err and f"reads {ids + 30}" in err


class WordRecallTask(RecallTask):
    """A task of one's own that names its transformers tokenizer: the recall ids as words."""

    @classmethod
    def transformers_tokenizer(cls, tokenizer_file):
        return word_tokenizer(tuple(map(str, range(VOCAB))))


def test_a_run_exports_the_tokenizer_its_task_names(tmp_path, monkeypatch):
    monkeypatch.setitem(TASKS, "word-recall", WordRecallTask)
    monkeypatch.setattr(WordRecallTask, "name", "word-recall")
    code = tmp_path / "code"
    sizes = ["--train-size", "30", "--valid-size", "4", "--test-size", "4", "--statements", "20"]
    assert main(["data", "code-exec", "--out", str(code), *sizes]) == 0
    datasets = {"code-exec": code, "word-recall": write_recall_data(tmp_path / "recall")}
    for task, data in datasets.items():
        model_config, train_config = tiny_configs(data, task=task, steps=1, warmup=0)
        api.train(model_config, train_config, tmp_path / task, device="cpu", progress=False)
        exported = AutoTokenizer.from_pretrained(export_hf(tmp_path / task, tmp_path / f"{task}-hf"))
        prompt = CodeExecTask.example_prompt if task == "code-exec" else "1 2 3"
        assert exported(prompt)["input_ids"] == task_class(task)().encode(prompt), task


def test_bad_input_is_one_line(text_run, tmp_path, capsys):
    one_error_line(capsys, ["export", str(tmp_path / "missing"), "--out", str(tmp_path / "out")])
    err = one_error_line(capsys, ["export", str(text_run), "--format", "onnx", "--out", str(tmp_path / "out")])
    assert "unknown format 'onnx'" in err
    build_model(ModelConfig(model="seq2seq", vocab_size=20, **TINY)).save_pretrained(tmp_path / "seq2seq")
    assert "translation model" in one_error_line(capsys, ["export", str(tmp_path / "seq2seq"), "--out", "x"])
    (tmp_path / "gpt2").mkdir()
    (tmp_path / "gpt2" / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    err = one_error_line(capsys, ["export", str(tmp_path / "gpt2"), "--format", "fbt", "--out", "x"])
    assert "'gpt2' model" in err
    export_hf(text_run, tmp_path / "hf")
    weights = load_file(tmp_path / "hf" / "model.safetensors")
    dropped = sorted(weights)[0]
    save_file(
        {name: tensor for name, tensor in weights.items() if name != dropped}, tmp_path / "hf" / "model.safetensors"
    )
    capsys.readouterr()
    err = one_error_line(capsys, ["export", str(tmp_path / "hf"), "--format", "fbt", "--out", "x"])
    assert f"missing {dropped}" in err
    with pytest.raises(FbtError, match="miss"):
        AutoModelForCausalLM.from_pretrained(tmp_path / "hf")


def test_export_without_transformers_asks_for_the_extra(text_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    for name in [name for name in sys.modules if name == "fbt.hf" or name.startswith("fbt.hf.")]:
        monkeypatch.delitem(sys.modules, name)
    err = one_error_line(capsys, ["export", str(text_run), "--out", str(tmp_path / "out")])
    assert "pip install 'fbt[hf]'" in err

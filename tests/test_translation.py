"""Translation: decoders against references, padding, search, BLEU, the data split and the CLI end to end."""

import gzip
import json
import math
import random
from contextlib import nullcontext

import pytest
import torch

from fbt.cli import main
from fbt.data.tokenizer import EOS_ID, PAD_ID
from fbt.data.translation import make_batch, read_corpus, split_indices
from fbt.decoding import beam_search, greedy_search
from fbt.errors import FbtError
from fbt.models import ModelConfig, build_model
from fbt.scoring import corpus_scores

SMALL = dict(model="seq2seq", vocab_size=40, dim=16, heads=2, ff=32, layers=2, encoder_layers=2, context=24)


def seq2seq(decoder, seed=0, **changes):
    torch.manual_seed(seed)
    return build_model(ModelConfig(**{**SMALL, "decoder": decoder, **changes})).eval()


def random_pairs(seed, count, vocab=40):
    """Token ids avoiding the specials 0..2, of varied lengths."""
    rng = random.Random(seed)
    return [
        (
            [rng.randrange(3, vocab) for _ in range(rng.randint(1, 7))],
            [rng.randrange(3, vocab) for _ in range(rng.randint(1, 7))],
        )
        for _ in range(count)
    ]


def naive_feedback_logits(model, source, target):
    """The feedback decoder written out plainly: every step recomputes the keys and values of its visible
    memories from scratch, one head at a time, with explicit softmaxes."""
    cfg, decoder = model.config, model.decoder
    H, E, S = cfg.heads, cfg.head_width, cfg.span
    visible = source != PAD_ID
    encoded = model.encoder(model.embed(source), visible)  # (B, S_src, D)
    embedded = model.embed(target)
    memories, tops = [], []

    def heads_attend(q, k, v, extra=None, mask=None):  # q (B, A), k/v (B, n, A)
        out = []
        for h in range(H):
            part = slice(h * E, (h + 1) * E)
            scores = (k[:, :, part] @ q[:, part, None]).squeeze(-1)  # (B, n)
            if extra is not None:
                scores = scores + q[:, part] @ extra
            scores = scores / math.sqrt(E)
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            out.append((torch.softmax(scores, -1)[:, :, None] * v[:, :, part]).sum(1))
        return torch.cat(out, -1)

    for t in range(target.shape[1]):
        x = embedded[:, t]
        states = [x]
        past = memories[max(0, t - S) :]
        for index, layer in enumerate(decoder.layers):
            if past:
                memory = torch.stack(past, 1)
                norm, key, value = decoder.kv_projections()[0 if cfg.shared_kv else index]
                q = layer.query(layer.norm_attn(x))
                read = heads_attend(q, key(norm(memory)), value(norm(memory)), decoder.pos_keys[:, S - len(past) :])
                x = x + layer.out(read)
            cross = layer.cross
            read = heads_attend(cross.query(cross.norm(x)), cross.key(encoded), cross.value(encoded), mask=visible)
            x = x + cross.out(read)
            x = x + layer.ff(layer.norm_ff(x))
            states.append(x)
        weights = torch.softmax(decoder.memory_weights, 0)
        memories.append(sum(w * s for w, s in zip(weights, states)))
        tops.append(x)
    return model.head(decoder.norm_out(torch.stack(tops, 1)))


def stepwise_logits(model, batch):
    state = model.encode(batch.source)
    steps = []
    for t in range(batch.target.shape[1]):
        logits, state = model.decode(batch.target[:, t : t + 1], state)
        steps.append(logits)
    return torch.cat(steps, 1)


@pytest.mark.parametrize("head_dim", [0, 5], ids=["E=D/H", "E=5"])
@pytest.mark.parametrize("shared_kv", [True, False])
def test_feedback_decoder_equals_naive_reference(shared_kv, head_dim):
    model = seq2seq("feedback", span=3, shared_kv=shared_kv, head_dim=head_dim).double()
    batch, _ = make_batch(*zip(*random_pairs(1, 4)))
    expected = naive_feedback_logits(model, batch.source, batch.target)
    parallel, _ = model(batch)
    torch.testing.assert_close(parallel, expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(stepwise_logits(model, batch), expected, rtol=1e-10, atol=1e-10)


def test_feedback_decoder_gradients_equal_naive_reference():
    model = seq2seq("feedback", span=3).double().train()
    batch, labels = make_batch(*zip(*random_pairs(2, 3)))
    grads = []
    for forward in (lambda: model(batch)[0], lambda: naive_feedback_logits(model, batch.source, batch.target)):
        model.zero_grad()
        torch.nn.functional.cross_entropy(forward().flatten(0, 1), labels.flatten(), ignore_index=-100).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for ours, reference in zip(*grads):
        torch.testing.assert_close(ours, reference, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("head_dim", [0, 5], ids=["E=D/H", "E=5"])
def test_transformer_decoder_step_by_step_equals_parallel(head_dim):
    model = seq2seq("transformer", head_dim=head_dim).double()
    batch, _ = make_batch(*zip(*random_pairs(3, 5)))
    parallel, _ = model(batch)
    torch.testing.assert_close(stepwise_logits(model, batch), parallel, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("decoder", ["feedback", "transformer"])
def test_padding_never_changes_a_real_output(decoder):
    model = seq2seq(decoder).double()
    pairs = random_pairs(4, 4)
    batch, labels = make_batch(*zip(*pairs))
    together, _ = model(batch)
    for row, (source, target) in enumerate(pairs):
        alone, _ = model(make_batch([source], [target])[0])
        real = labels[row] != -100
        torch.testing.assert_close(together[row, real], alone[0, : int(real.sum())], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("decoder", ["feedback", "transformer"])
def test_beam_one_equals_greedy(decoder):
    model = seq2seq(decoder, seed=5)
    batch, _ = make_batch(*zip(*random_pairs(6, 6)))
    assert beam_search(model, batch.source, 12, beam=1) == greedy_search(model, batch.source, 12)


def plain_beam_search(model, source, beam, max_new_tokens, alpha):
    """Beam search written out plainly: every hypothesis is scored by a full forward from scratch."""
    hypotheses = [([], 0.0, False)]  # (ids, log p, ended)
    for _ in range(max_new_tokens):
        candidates = []
        for ids, score, ended in hypotheses:
            if ended:
                candidates.append((ids, score, True))
                continue
            logits, _ = model(make_batch([source], [ids])[0])
            logp = torch.log_softmax(logits[0, -1].double().index_fill(0, torch.tensor([0, 1]), -math.inf), -1)
            candidates += [(ids + [token], score + logp[token].item(), token == EOS_ID) for token in range(len(logp))]
        hypotheses = sorted(candidates, key=lambda h: -h[1])[:beam]
        if all(ended for _, _, ended in hypotheses):
            break
    ids, _, _ = max(hypotheses, key=lambda h: h[1] / ((5 + len(h[0])) / 6) ** alpha)
    return ids[:-1] if ids and ids[-1] == EOS_ID else ids


@pytest.mark.parametrize(("decoder", "seed"), [("feedback", 26), ("transformer", 12)])
def test_beam_search_equals_plain_reference(decoder, seed):
    model = seq2seq(decoder, seed=seed, vocab_size=8).double()
    with torch.no_grad():  # sharper, less </s>-prone outputs, so that hypotheses end at varied lengths
        model.head.weight.mul_(4)
        model.head.weight[EOS_ID] *= 0.5
    pairs = random_pairs(10, 8, vocab=8)
    batch, _ = make_batch(*zip(*pairs))
    found = beam_search(model, batch.source, 8, beam=3, length_penalty=1.0)
    assert found == [plain_beam_search(model, source, 3, 8, 1.0) for source, _ in pairs]
    assert len({len(ids) for ids in found}) > 1, found


def test_bleu_of_a_perfect_hypothesis_is_100():
    references = ["In the beginning God created the heaven and the earth.", "And God said, Let there be light."]
    scores = corpus_scores(references, references)
    assert scores["bleu"] == pytest.approx(100.0)
    assert scores["chrf"] == pytest.approx(100.0)
    assert "tok:13a" in scores["bleu_signature"]
    assert corpus_scores(["the the the", "light"], references)["bleu"] < 5


def write_tsv(path, groups=8, verses=30):
    """A toy parallel corpus: target words are a fixed renaming of the source words."""
    rng = random.Random(0)
    lexicon = {"uno": "one", "dos": "two", "tres": "three", "luz": "light", "dios": "god", "tierra": "earth"}
    lines = ["book\tchapter\tverse\tspanish\tenglish"]
    for g in range(groups):
        for v in range(verses):
            words = [rng.choice(list(lexicon)) for _ in range(rng.randint(2, 6))]
            lines.append(f"Book{g}\t1\t{v}\t{' '.join(words)}\t{' '.join(lexicon[w] for w in words)}")
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    return path


def test_group_split_holds_out_whole_groups(tmp_path):
    corpus = read_corpus(str(write_tsv(tmp_path / "c.tsv.gz")), "spanish", "english", group_column="book")
    splits = split_indices(corpus)
    groups = {name: {corpus.groups[i] for i in indices} for name, indices in splits.items()}
    assert groups["test"] and groups["valid"]
    assert not groups["test"] & groups["train"] and not groups["valid"] & groups["train"]
    assert not groups["test"] & groups["valid"]
    assert sorted(i for indices in splits.values() for i in indices) == list(range(len(corpus.sources)))
    assert split_indices(corpus) == splits  # deterministic


def test_pair_split_without_groups_keeps_repeated_sources_together(tmp_path):
    corpus = read_corpus(str(write_tsv(tmp_path / "c.tsv.gz")), "spanish", "english")
    side = {}
    for name, indices in split_indices(corpus).items():
        for i in indices:
            assert side.setdefault(corpus.sources[i], name) == name


def test_bad_corpora_are_clear_errors(tmp_path):
    path = write_tsv(tmp_path / "c.tsv.gz")
    with pytest.raises(FbtError, match="no column 'french'"):
        read_corpus(str(path), "spanish", "french")
    (tmp_path / "a.txt").write_text("uno\ndos\n")
    (tmp_path / "b.txt").write_text("one\n")
    with pytest.raises(FbtError, match="not aligned"):
        read_corpus(str(tmp_path / "a.txt"), target_data=str(tmp_path / "b.txt"))


TRANSLATION_RUN = [
    "--task",
    "translation",
    "--source-column",
    "spanish",
    "--target-column",
    "english",
    "--group-column",
    "book",
    "--model",
    "seq2seq",
    "--encoder-layers",
    "1",
    "--layers",
    "1",
    "--dim",
    "16",
    "--heads",
    "2",
    "--ff",
    "32",
    "--span",
    "16",
    "--context",
    "40",
    "--max-length",
    "30",
    "--batch-tokens",
    "256",
    "--vocab-size",
    "300",
    "--lr",
    "3e-3",
    "--warmup",
    "2",
    "--eval-every",
    "0",
    "--log-every",
    "1",
    "--save-every",
    "2",
]


@pytest.mark.parametrize("decoder", ["feedback", "transformer"])
def test_train_eval_translate_end_to_end(tmp_path, capsys, decoder):
    data = write_tsv(tmp_path / "c.tsv.gz")
    run = tmp_path / "run"
    args = ["train", *TRANSLATION_RUN, "--data", str(data), "--decoder", decoder, "--steps", "4"]
    assert main([*args, "--out", str(run), "--no-progress"]) == 0
    assert (run / "tokenizer.json").is_file()
    assert list(run.glob("checkpoints/step-*/tokenizer.json"))
    capsys.readouterr()
    hypotheses = tmp_path / "test.hyp"
    assert main(["eval", str(run), "--split", "test", "--json", "--beam", "2", "--outputs", str(hypotheses)]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"bleu", "chrf", "perplexity", "copy_source_bleu", "bleu_signature"} <= set(result)
    assert 0 <= result["bleu"] <= 100 and result["sentences"] > 0
    written = hypotheses.read_text(encoding="utf-8").splitlines()
    assert len(written) == result["sentences"] and len(result["examples"]) == 3
    assert [example["translation"] for example in result["examples"]] == written[:3]
    assert main(["eval", str(run), "--split", "test", "--beam", "2"]) == 0
    assert "examples 1, source: " in capsys.readouterr().out
    # The run tooling on a translation run: listed with its recorded BLEU, shown, plotted.
    assert main(["runs", str(tmp_path), "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["task"] == "translation" and listed["test"] == result["bleu"] and listed["test_name"] == "bleu"
    assert main(["show", str(run)]) == 0
    assert "seq2seq" in (shown := capsys.readouterr().out) and "eval test" in shown
    assert main(["plot", str(run), "--out", str(tmp_path / "curves.png")]) == 0
    capsys.readouterr()
    assert set(result["groups"].split(", ")) <= {f"Book{g}" for g in range(8)}
    sentences = tmp_path / "in.txt"
    sentences.write_text("uno dos\nluz\n\ntierra dios tres\n")
    assert main(["translate", str(run), "--input", str(sentences), "--beam", "3"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 4
    # --output holds one line per input line, with --json or not; --json prints the pairs to stdout.
    output = tmp_path / "out.txt"
    command = ["translate", str(run), "--input", str(sentences), "--beam", "3", "--output", str(output)]
    assert main([*command, "--json"]) == 0
    assert output.read_text(encoding="utf-8").splitlines() == printed
    pairs = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [pair["translation"] for pair in pairs] == printed and pairs[0]["source"] == "uno dos"
    assert main(command) == 0
    assert capsys.readouterr().out == "" and output.read_text(encoding="utf-8").splitlines() == printed


def test_resumed_translation_run_continues_the_loss_curve(tmp_path):
    data = write_tsv(tmp_path / "c.tsv.gz")
    base = ["train", *TRANSLATION_RUN, "--data", str(data), "--decoder", "feedback", "--no-progress"]
    assert main([*base, "--steps", "6", "--out", str(tmp_path / "whole")]) == 0
    assert main([*base, "--steps", "4", "--schedule", "constant", "--out", str(tmp_path / "part")]) == 0
    assert main([*base, "--steps", "6", "--schedule", "constant", "--out", str(tmp_path / "part2")]) == 0
    assert main(["train", "--resume", "--steps", "6", "--out", str(tmp_path / "part"), "--no-progress"]) == 0

    def losses(run):
        rows = (tmp_path / run / "metrics.csv").read_text().splitlines()[1:]
        return [float(row.split(",")[6]) for row in rows if row.startswith("train")]

    assert losses("part") == losses("part2")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "feedback"], "translation trains the seq2seq model"),
        (["--context", "10"], "must exceed --max-length"),
        (["--decoder", "lstm"], "invalid choice"),
    ],
)
def test_bad_translation_settings_are_one_line_errors(tmp_path, capsys, args, message):
    data = write_tsv(tmp_path / "c.tsv.gz")
    with pytest.raises(SystemExit) if "invalid" in message else nullcontext():
        code = main(
            [
                "train",
                *TRANSLATION_RUN,
                "--data",
                str(data),
                "--steps",
                "3",
                *args,
                "--out",
                str(tmp_path / "r"),
                "--no-progress",
            ]
        )
        assert code == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err

"""Byte-level BPE: exact round trip on any UTF-8 text, byte accounting, and clear errors for bad files."""

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fbt.cli import main
from fbt.data.tokenizer import MIN_VOCAB, load_tokenizer, train_tokenizer
from fbt.errors import FbtError

CORPUS = ["In the beginning God created the heaven and the earth.", "Y la tierra estaba desordenada y vacía."] * 50


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(iter(CORPUS), MIN_VOCAB + 100)


@settings(max_examples=200, deadline=None)
@given(text=st.text())
@example(text="<pad> x<s></s>")  # text spelling a special token is still text
def test_round_trip_is_exact_on_any_text(tokenizer, text):
    ids = tokenizer.encode(text)
    assert all(0 <= i < tokenizer.vocab_size for i in ids)
    assert tokenizer.decode(ids) == text
    # Every id stands for a fixed byte string: the counts add up to the text's UTF-8 size.
    assert int(tokenizer.token_bytes[ids].sum()) == len(text.encode("utf-8"))


def test_merges_are_learned(tokenizer):
    text = "In the beginning God created the heaven"
    assert len(tokenizer.encode(text)) < len(text.encode("utf-8")) / 2


def test_saved_tokenizer_loads_back_the_same(tmp_path, tokenizer):
    path = tokenizer.save(tmp_path)
    again = load_tokenizer(tmp_path)
    assert path.name == "tokenizer.json"
    assert again.encode("créé the heaven 🙂") == tokenizer.encode("créé the heaven 🙂")


def test_vocab_smaller_than_the_byte_alphabet_is_refused():
    with pytest.raises(FbtError, match="at least 259"):
        train_tokenizer(iter(CORPUS), 100)


def test_cli_trains_a_tokenizer(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(CORPUS))
    assert main(["tokenizer", "train", "--data", str(corpus), "--vocab-size", "300", "--out", str(tmp_path / "t")]) == 0
    assert load_tokenizer(tmp_path / "t").vocab_size == 300
    assert "300 ids" in capsys.readouterr().out


@pytest.mark.parametrize("content", ["{not json", '{"model": {"type": "BPE"}}', "\udcff"])
def test_corrupt_tokenizer_is_one_line_error(tmp_path, capsys, content):
    directory = tmp_path / "bad"
    directory.mkdir()
    (directory / "tokenizer.json").write_bytes(content.encode("utf-8", errors="surrogateescape"))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(CORPUS))
    code = main(
        [
            "train",
            "--task",
            "lm",
            "--tokenizer",
            str(directory),
            "--data",
            str(corpus),
            "--steps",
            "1",
            "--out",
            str(tmp_path / "run"),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert len(err.strip().splitlines()) == 1 and "tokenizer" in err, err


def test_missing_tokenizer_is_one_line_error(tmp_path, capsys):
    code = main(
        [
            "train",
            "--task",
            "lm",
            "--tokenizer",
            str(tmp_path / "nowhere"),
            "--data",
            str(tmp_path),
            "--steps",
            "1",
            "--out",
            str(tmp_path / "run"),
            "--no-progress",
        ]
    )
    assert code == 1
    assert "no tokenizer at" in capsys.readouterr().err

"""`fbt data enwik8` on a small stand-in corpus: the file or its zip installed byte for byte, every bad input
one line on stderr with nothing written, and the byte-level task reading the installed directory."""

from __future__ import annotations

import hashlib
import json
import random
import zipfile

import pytest
import torch

from fbt.cli import main
from fbt.data import enwik8
from fbt.data.text import load_text_split, read_text_bytes, split_bounds
from fbt.errors import FbtError

CORPUS = random.Random(8).randbytes(2000)


@pytest.fixture(autouse=True)
def small_enwik8(monkeypatch):
    """enwik8's published size and checksums replaced by those of CORPUS."""
    monkeypatch.setattr(enwik8, "SIZE", len(CORPUS))
    monkeypatch.setattr(enwik8, "SHA256", hashlib.sha256(CORPUS).hexdigest())
    monkeypatch.setattr(enwik8, "MD5", hashlib.md5(CORPUS).hexdigest())


@pytest.fixture
def raw(tmp_path):
    path = tmp_path / "enwik8"
    path.write_bytes(CORPUS)
    return path


def write_zip(path, members):
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def install(source, out, *flags):
    return main(["data", "enwik8", "--from", str(source), "--out", str(out), *flags])


def error_line(capsys, source, out, *flags):
    """The single stderr line of a failed `fbt data enwik8`."""
    assert install(source, out, *flags) != 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def assert_nothing_written(out):
    assert not out.exists() or list(out.iterdir()) == []


def test_raw_file_is_installed_with_its_description(raw, tmp_path, capsys):
    out = tmp_path / "data" / "enwik8"
    assert install(raw, out) == 0
    assert (out / "enwik8").read_bytes() == CORPUS
    assert sorted(path.name for path in out.iterdir()) == ["dataset.json", "enwik8"]  # no temporary file left
    assert json.loads((out / "dataset.json").read_text()) == {
        "name": "enwik8",
        "file": "enwik8",
        "bytes": 2000,
        "sha256": hashlib.sha256(CORPUS).hexdigest(),
        "md5": hashlib.md5(CORPUS).hexdigest(),
        "splits": {"train": [0, 1800], "valid": [1800, 1900], "test": [1900, 2000]},
    }
    printed = capsys.readouterr().out.strip()
    assert printed.startswith(f"wrote {out / 'enwik8'}: 2,000 bytes checked (sha256 {enwik8.SHA256})")
    assert "split 1,800 / 100 / 100 bytes" in printed and printed.endswith(f"--task text --data {out}")


def test_zip_is_installed(tmp_path):
    source = write_zip(tmp_path / "enwik8.zip", {"README": b"other members are fine", "enwik8": CORPUS})
    out = tmp_path / "out"
    assert install(source, out) == 0
    assert (out / "enwik8").read_bytes() == CORPUS


def test_wrong_size_is_one_line_and_writes_nothing(tmp_path, capsys):
    source = tmp_path / "enwik8"
    source.write_bytes(CORPUS + b"x")
    out = tmp_path / "out"
    line = error_line(capsys, source, out)
    assert "2,001 bytes" in line and "2,000" in line
    assert_nothing_written(out)
    zipped = write_zip(tmp_path / "enwik8.zip", {"enwik8": CORPUS[:-1]})
    line = error_line(capsys, zipped, out)
    assert "1,999 bytes" in line and "2,000" in line
    assert_nothing_written(out)


def test_wrong_checksum_is_one_line_and_writes_nothing(tmp_path, capsys):
    damaged = bytearray(CORPUS)
    damaged[1000] ^= 1
    source = tmp_path / "enwik8"
    source.write_bytes(damaged)
    out = tmp_path / "out"
    line = error_line(capsys, source, out)
    assert hashlib.sha256(damaged).hexdigest() in line and enwik8.SHA256 in line
    assert_nothing_written(out)
    zipped = write_zip(tmp_path / "enwik8.zip", {"enwik8": bytes(damaged)})
    assert enwik8.SHA256 in error_line(capsys, zipped, out)
    assert_nothing_written(out)


def test_zip_without_enwik8(tmp_path, capsys):
    source = write_zip(tmp_path / "enwik8.zip", {"data/enwik8": CORPUS, "README": b"x"})
    out = tmp_path / "out"
    assert "no member named enwik8" in error_line(capsys, source, out)
    assert_nothing_written(out)


def test_corrupt_zip(tmp_path, capsys):
    out = tmp_path / "out"
    whole = write_zip(tmp_path / "whole.zip", {"enwik8": CORPUS}).read_bytes()
    truncated = tmp_path / "truncated.zip"  # its directory at the end cut off: not recognised as a zip
    truncated.write_bytes(whole[: len(whole) // 2])
    assert "not a readable zip" in error_line(capsys, truncated, out)
    # The directory intact but the compressed bytes damaged: found while the member is read.
    member = zipfile.ZipFile(tmp_path / "whole.zip").getinfo("enwik8")
    start = member.header_offset + 30 + len("enwik8")  # the local header's fixed part, then the name
    damaged = bytearray(whole)
    for at in range(start + 10, start + 60):
        damaged[at] ^= 0xFF
    broken = tmp_path / "broken.zip"
    broken.write_bytes(damaged)
    assert "corrupt zip" in error_line(capsys, broken, out)
    assert_nothing_written(out)


def test_missing_directory_and_empty_sources(tmp_path, capsys):
    out = tmp_path / "out"
    assert "no such file" in error_line(capsys, tmp_path / "missing", out)
    assert "is a directory" in error_line(capsys, tmp_path, out)
    empty = tmp_path / "enwik8"
    empty.write_bytes(b"")
    assert "empty" in error_line(capsys, empty, out)
    assert_nothing_written(out)


def test_existing_output_needs_force(raw, tmp_path, capsys):
    out = tmp_path / "out"
    assert install(raw, out) == 0
    (out / "enwik8").write_bytes(b"an old copy")
    assert "--force" in error_line(capsys, raw, out)
    assert (out / "enwik8").read_bytes() == b"an old copy"
    assert install(raw, out, "--force") == 0
    assert (out / "enwik8").read_bytes() == CORPUS
    assert "is a file" in error_line(capsys, raw, raw)


def test_failed_force_keeps_the_old_copy(raw, tmp_path, capsys):
    out = tmp_path / "out"
    assert install(raw, out) == 0
    damaged = tmp_path / "damaged"
    damaged.write_bytes(CORPUS[::-1])
    error_line(capsys, damaged, out, "--force")
    assert (out / "enwik8").read_bytes() == CORPUS
    assert sorted(path.name for path in out.iterdir()) == ["dataset.json", "enwik8"]


def test_byte_task_reads_the_installed_directory(raw, tmp_path):
    out = tmp_path / "out"
    enwik8.prepare_enwik8(raw, out)
    assert split_bounds(2000)["valid"] == (1800, 1900)
    for split in ("train", "valid", "test"):
        from_dir, from_file = load_text_split(out, split), load_text_split(raw, split)
        assert all(torch.equal(a, b) for a, b in zip(from_dir, from_file, strict=True))
    assert bytes(load_text_split(out, "valid")[0].tolist()) == CORPUS[1800:1899]
    assert read_text_bytes(out) == CORPUS  # what the subword task reads


def test_directory_without_dataset_json_keeps_its_error(tmp_path):
    (tmp_path / "enwik8").write_bytes(CORPUS)
    with pytest.raises(FbtError, match="is a directory, but language modelling reads one text file"):
        load_text_split(tmp_path, "train")


def test_dataset_json_naming_no_file_is_an_error(raw, tmp_path):
    out = tmp_path / "out"
    enwik8.prepare_enwik8(raw, out)
    (out / "dataset.json").write_text(json.dumps({"file": "../enwik8"}))
    with pytest.raises(FbtError, match="does not name a file"):
        load_text_split(out, "train")

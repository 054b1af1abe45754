"""enwik8 from a copy the user brings: checked against its published size and checksums, then installed.

enwik8 is the first 100,000,000 bytes of an English Wikipedia XML dump (the Hutter Prize corpus), distributed
as enwik8.zip (36,445,475 bytes, one member `enwik8`). Either the file or the zip is accepted; nothing is
downloaded. The output directory holds `enwik8` and `dataset.json` (name, size, checksums, split bounds),
and `--task text --data DIR` reads it with the standard 90M/5M/5M split (`split_bounds`).
"""

from __future__ import annotations

import hashlib
import os
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

from fbt.data.text import DATASET_INFO, split_bounds
from fbt.errors import FbtError
from fbt.rundir import staged, write_json_atomic

NAME = "enwik8"  # the file's name, and the zip member holding it
SIZE = 100_000_000
SHA256 = "2b49720ec4d78c3c9fabaee6e4179a5e997302b3a70029f30f2d582218c024a8"
MD5 = "a1fa5ffddb56f4953e226637dabbb36a"
CHUNK = 1 << 20  # bytes read, hashed and written at a time


def prepare_enwik8(source: str | Path, out_dir: str | Path, overwrite: bool = False) -> Path:
    """Checks `source` (enwik8, or a zip holding it) and writes out_dir/enwik8 and out_dir/dataset.json;
    returns the path of the written enwik8. Files already there are an error unless `overwrite`; they are
    replaced only once the new copy has passed its checks."""
    source, out = Path(source), Path(out_dir)
    if out.is_file():
        raise FbtError(f"{out} is a file; --out names a dataset directory")
    existing = [name for name in (NAME, DATASET_INFO) if (out / name).exists()]
    if existing and not overwrite:
        raise FbtError(f"{out} already holds a dataset ({', '.join(existing)}); pass --force to replace it")
    with open_enwik8(source) as (stream, size):
        if size != SIZE:
            raise FbtError(f"{source} holds {size:,} bytes, but enwik8 is {SIZE:,}: not a copy of enwik8")
        out.mkdir(parents=True, exist_ok=True)
        target = out / NAME
        with staged(target) as temporary:
            sha256, md5 = copy_hashed(stream, temporary, size)
            if sha256 != SHA256:
                raise FbtError(
                    f"{source} holds bytes of sha256 {sha256} (md5 {md5}), but enwik8's sha256 is {SHA256} "
                    f"(md5 {MD5}): a damaged copy or another file"
                )
    bounds = {split: list(span) for split, span in split_bounds(size).items()}
    info = {"name": NAME, "file": NAME, "bytes": size, "sha256": sha256, "md5": md5, "splits": bounds}
    write_json_atomic(out / DATASET_INFO, info)
    return target


@contextmanager
def open_enwik8(source: Path) -> Iterator[tuple[BinaryIO, int]]:
    """The bytes of `source` as a stream, and their size: the file itself, or the `enwik8` member of a zip.
    A zip that turns out corrupt while it is read is a one-line error too."""
    if source.is_dir():
        raise FbtError(f"{source} is a directory; --from names the enwik8 file or enwik8.zip")
    if not source.is_file():
        raise FbtError(f"no such file: {source}")
    if source.stat().st_size == 0:
        raise FbtError(f"{source} is empty")
    if not zipfile.is_zipfile(source):
        if source.suffix.lower() == ".zip":  # named as a zip but without a readable one: truncated or damaged
            raise FbtError(f"{source} is not a readable zip archive (truncated or damaged?)")
        with open(source, "rb") as stream:
            yield stream, os.fstat(stream.fileno()).st_size
        return
    try:
        with zipfile.ZipFile(source) as archive:
            if NAME not in archive.namelist():
                held = ", ".join(archive.namelist()[:5]) or "nothing"
                raise FbtError(f"{source} holds no member named {NAME} (it holds {held})")
            with archive.open(NAME) as stream:
                yield stream, archive.getinfo(NAME).file_size
    except (zipfile.BadZipFile, zlib.error, EOFError) as error:
        raise FbtError(f"{source} is a corrupt zip archive: {error}") from None


def copy_hashed(stream: BinaryIO, target: Path, size: int) -> tuple[str, str]:
    """Copies `stream` into `target` chunk by chunk, flushed to the disk, with a progress bar over its `size`
    bytes (on a terminal only); returns the sha256 and md5 of the bytes copied."""
    sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with (
        open(target, "wb") as copy,
        tqdm(total=size, desc=NAME, unit="B", unit_scale=True, unit_divisor=1024, disable=None) as bar,
    ):
        while chunk := stream.read(CHUNK):
            sha256.update(chunk)
            md5.update(chunk)
            copy.write(chunk)
            bar.update(len(chunk))
        copy.flush()
        os.fsync(copy.fileno())
    return sha256.hexdigest(), md5.hexdigest()

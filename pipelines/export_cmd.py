"""`kvid export DIR --format lance --out DEST`: a curated folder as a Lance dataset.

One row per clip: every index column (curate/schema.py, types kept) plus ``mp4``, the clip's
bytes (read from its shard by the index's offset, as ``curate.shards.read_clip_bytes`` does),
as a plain ``large_binary`` column so that every Lance reader gets the bytes themselves:
``lance.dataset(DEST)``, Ray Data's ``read_lance``, Hugging Face ``datasets``. (Lance's
blob encoding would hand non-Lance readers a position/size descriptor instead.) Written in
batches, so memory follows the batch, not the dataset, into a hidden folder beside DEST that
is renamed into place at the end: a killed export leaves no half dataset at DEST.

pylance is an optional extra (``pip install 'kvid[lance]'``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from collections.abc import Iterator

import pyarrow as pa

from curate import schema, shards
from curate.where import ClipFolderError, read_selection
from pipelines.config import ConfigError

FORMATS = ("lance",)
BLOB_COLUMN = "mp4"
BATCH_BYTES = 256 << 20  # clip bytes per written batch
BATCH_ROWS = 1024

EPILOG = """\
examples:
  kvid export data/ --format lance --out data.lance
  kvid export data/ --format lance --out moving.lance --where 'motion_score > 2 and duration_s >= 4'

  python -c "import lance; print(lance.dataset('data.lance').to_table(columns=['clip_id', 'caption']))"
  # Ray Data: ray.data.read_lance('data.lance'); the clip bytes are the 'mp4' column

One row per clip: every index column of DIR (types kept) and 'mp4', the clip's bytes. --where
filters on index columns first (the syntax of curate.loader.ClipDataset's where). DEST must
not exist. Needs pylance: pip install 'kvid[lance]'.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Write a curated folder as another dataset format: its index columns and its clips' bytes."
    parser.epilog = EPILOG
    parser.add_argument("dir", metavar="DIR", help="output folder of `kvid curate`")
    parser.add_argument("--format", required=True, choices=FORMATS, help="the format to write (lance)")
    parser.add_argument("--out", required=True, metavar="DEST", help="where to write the dataset (must not exist)")
    parser.add_argument("--where", metavar="EXPR", help="only clips matching EXPR, e.g. 'motion_score > 2'")


def import_lance():
    try:
        import lance
    except ImportError:
        raise ConfigError("--format lance needs pylance, which is not installed: pip install 'kvid[lance]' "
                          "(or pip install pylance)") from None
    return lance


def export_schema() -> pa.Schema:
    return schema.CLIP_SCHEMA.append(pa.field(BLOB_COLUMN, pa.large_binary()))


def clip_batches(folder: str, table: pa.Table) -> Iterator[pa.RecordBatch]:
    """The index rows with their clips' bytes, a batch at a time (bounded by rows and bytes)."""
    sch = export_schema()
    start = 0
    while start < table.num_rows:
        blobs: list[bytes] = []
        size = 0
        rows = table.slice(start, BATCH_ROWS)
        for row in rows.select(["clip_id", "shard", "shard_offset", "shard_size"]).to_pylist():
            data = shards.read_clip_bytes(folder, row)
            if len(data) != row["shard_size"]:
                raise ConfigError(f"clip {row['clip_id']}: its shard {row['shard']} is shorter than the index says "
                                  "(a damaged or partly copied folder)")
            blobs.append(data)
            size += len(data)
            if size >= BATCH_BYTES:
                break
        part = rows.slice(0, len(blobs)).append_column(BLOB_COLUMN, pa.array(blobs, pa.large_binary()))
        yield from part.cast(sch).to_batches()
        start += len(blobs)


def export_lance(folder: str, dest: str, where: str | None = None) -> dict:
    lance = import_lance()
    try:
        table = read_selection(folder, where, list(schema.COLUMNS))  # parts of older kvids: new columns null
    except ClipFolderError as e:
        raise ConfigError(str(e)) from None
    if os.path.lexists(dest):
        raise ConfigError(f"{dest} exists: remove it or give another --out")
    parent = os.path.dirname(os.path.abspath(dest))
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(os.path.abspath(dest))}.tmp-{os.getpid()}")
    t0 = time.monotonic()
    try:
        reader = pa.RecordBatchReader.from_batches(export_schema(), clip_batches(folder, table))
        lance.write_dataset(reader, tmp, schema=export_schema(), mode="create")
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    n_bytes = sum(r or 0 for r in table.column("shard_size").to_pylist())
    return {"clips": table.num_rows, "bytes": n_bytes, "wall_s": time.monotonic() - t0}


def run(args: argparse.Namespace) -> int:
    if args.format == "lance":
        s = export_lance(args.dir, args.out, args.where)
    print(f"kvid export: {s['clips']} clips ({s['bytes'] / 1e6:.1f} MB of mp4) -> {args.out} (lance, "
          f"{s['wall_s']:.1f} s); read it with lance.dataset({args.out!r}); the clip bytes are the '{BLOB_COLUMN}' column")
    return 0

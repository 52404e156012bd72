"""Size-bounded, streaming Parquet shards with `datasets` features, and image cells.

    writer = ShardWriter(folder, "train", features, max_bytes=500_000_000)
    for row in rows:
        writer.write(row)                # buffered into row groups, written as they fill
    writer.close()                       # -> train-00000-of-00003.parquet, ...

The schema is `features.arrow_schema`, which carries the `datasets` features metadata, so
`datasets.load_dataset("parquet", data_files=one_shard)` decodes Image columns. Memory holds
one row group at a time (see bench/export.py). Image cells are `{"bytes", "path"}` dicts,
the storage of the datasets Image feature.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

# -- images ----------------------------------------------------------------------------------


def image_cell(path: str) -> dict[str, Any]:
    """The file's own bytes as a datasets Image cell (no re-encoding, no quality loss)."""
    return {"bytes": Path(path).read_bytes(), "path": Path(path).name}


LETTERBOX_GREY = (128, 128, 128)


def resized_cell(path: str, size: int, fit: str = "letterbox") -> dict[str, Any]:
    """The image as size x size (TAPO needs one size for anchor/positive/negative): scaled to
    fit and centred on grey ("letterbox"), or squashed to the square ("stretch")."""
    with Image.open(path) as image:
        fmt = "PNG" if image.format == "PNG" else "JPEG"
        image = image.convert("RGBA" if fmt == "PNG" and "A" in image.mode else "RGB")
        if fit == "stretch" or image.width == image.height:
            image = image.resize((size, size), Image.Resampling.BICUBIC)
        else:
            scale = size / max(image.size)
            inner = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            grey = LETTERBOX_GREY + ((255,) if image.mode == "RGBA" else ())
            canvas = Image.new(image.mode, (size, size), grey)
            canvas.paste(image.resize(inner, Image.Resampling.BICUBIC),
                         ((size - inner[0]) // 2, (size - inner[1]) // 2))
            image = canvas
        buffer = io.BytesIO()
        image.save(buffer, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    name = Path(path).stem + (".png" if fmt == "PNG" else ".jpg")
    return {"bytes": buffer.getvalue(), "path": name}


# -- size-bounded, streaming shards ----------------------------------------------------------


class ShardWriter:
    """Rows -> `<split>-NNNNN-of-MMMMM.parquet` shards of at most ~max_bytes each.

    Rows are buffered into row groups (`group_rows` rows, or fewer when their images are
    large) and each group is written at once, so memory holds one row group. Shards are
    written under temporary names and renamed on `close()`, when their count is known.
    """

    def __init__(
        self,
        folder: Path,
        split: str,
        features: datasets.Features,
        max_bytes: int,
        group_rows: int = 100,
        group_bytes: int = 64 << 20,
    ):
        self.folder, self.split, self.features = Path(folder), split, features
        self.schema = features.arrow_schema
        self.max_bytes, self.group_rows, self.group_bytes = max_bytes, group_rows, group_bytes
        self.folder.mkdir(parents=True, exist_ok=True)
        self._rows: list[dict] = []
        self._buffered = 0
        self._writer: pq.ParquetWriter | None = None
        self._shard_bytes = 0
        self._parts: list[Path] = []
        self.rows = 0
        self.bytes = 0

    def write(self, row: dict[str, Any]) -> None:
        self._rows.append(row)
        self._buffered += _row_bytes(row)
        self.rows += 1
        if len(self._rows) >= self.group_rows or self._buffered >= self.group_bytes:
            self._flush()

    def _flush(self) -> None:
        if not self._rows:
            return
        table = pa.Table.from_pylist(self._rows, schema=self.schema)
        size = table.nbytes
        if self._writer is not None and self._shard_bytes + size > self.max_bytes:
            self._writer.close()
            self._writer = None
        if self._writer is None:
            part = self.folder / f".{self.split}-{len(self._parts):05d}.partial"
            self._parts.append(part)
            self._writer = pq.ParquetWriter(part, self.schema)
            self._shard_bytes = 0
        self._writer.write_table(table, row_group_size=len(self._rows))
        self._shard_bytes += size
        self.bytes += size
        self._rows, self._buffered = [], 0

    def close(self) -> list[Path]:
        """Write what is buffered, close, and give the shards their final names."""
        self._flush()
        if self._writer is not None:
            self._writer.close()
        # An empty split gets no shard: `datasets` refuses a split without data, so the card
        # leaves an empty config out rather than declare one that cannot load.
        total = len(self._parts)
        final = []
        for index, part in enumerate(self._parts):
            target = self.folder / f"{self.split}-{index:05d}-of-{total:05d}.parquet"
            os.replace(part, target)
            final.append(target)
        return final


def _row_bytes(row: dict[str, Any]) -> int:
    """A cheap size estimate of a row: its bytes and strings, recursively."""
    total = 0
    stack: list[Any] = [row]
    while stack:
        value = stack.pop()
        if isinstance(value, bytes | str):
            total += len(value)
        elif isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list | tuple):
            stack.extend(value)
        else:
            total += 8
    return total

"""Dataset sources: one module per on-disk layout, each with `read(cfg) -> Layout`.

    from curation.ingest.sources import read_source
    layout = read_source(SourceConfig(kind="cub200", root="data/CUB_200_2011"))
    layout.classes        # list[ClassInfo], label_id 0..N-1 in the dataset's official order
    next(iter(layout.items))  # RawItem(key, path, label, split)

SOURCES is the registry (a dict: kind -> read function); curation/ingest/stage.py turns a Layout
into the item table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from curation.ingest.sources import (
    cub200,
    fgvc_aircraft,
    hf,
    imagefolder,
    manifest,
    oxford_flowers,
    oxford_pets,
    stanford_cars,
    stanford_dogs,
)
from curation.ingest.sources.common import Layout, RawItem

if TYPE_CHECKING:  # the image inspector's worker processes import this package: keep it light
    from curation.core.config import SourceConfig

SOURCES: dict[str, Callable[[SourceConfig], Layout]] = {
    "cub200": cub200.read,
    "stanford_cars": stanford_cars.read,
    "fgvc_aircraft": fgvc_aircraft.read,
    "stanford_dogs": stanford_dogs.read,
    "oxford_flowers": oxford_flowers.read,
    "oxford_pets": oxford_pets.read,
    "imagefolder": imagefolder.read,
    "manifest": manifest.read,
    "hf": hf.read,
}


def read_source(cfg: SourceConfig) -> Layout:
    """The Layout of one recipe source (raises a clear error when the layout is wrong)."""
    if cfg.kind not in SOURCES:
        raise ValueError(f"unknown source kind {cfg.kind!r}; known: {', '.join(SOURCES)}")
    return SOURCES[cfg.kind](cfg)


__all__ = ["SOURCES", "Layout", "RawItem", "read_source"]

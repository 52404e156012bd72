"""Bad input never stops ingest: each kind is quarantined with its reason code, and every
good item still comes through (acceptance 4 of issue 2)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import threading
import time
import zlib
from pathlib import Path

import layouts
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curation.core.config import Recipe, SourceConfig
from curation.core.rundir import RunDir
from curation.ingest.stage import REASONS, ingest_stage


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (a decompression bomb is just this)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def bad_folder(root: Path) -> tuple[Path, dict[str, str], list[Path]]:
    """An ImageFolder (classes.json lists two classes) with good images and one of each bad
    kind; returns root, {file relative to root: expected reason}, the good files."""
    root, expected = layouts.make_imagefolder(root, per_class=4, split_file=False)
    good = [e.path for e in expected]
    warbler, finch = root / "crimson_warbler", root / "azure_finch"
    bad: dict[str, str] = {}

    def put(rel: str, reason: str, data: bytes | None = None, image: Image.Image | None = None,
            **save) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if image is not None:
            image.save(path, **save)
        else:
            path.write_bytes(data or b"")
        bad[rel] = reason

    put("azure_finch/not_an_image.jpg", "unreadable", b"this is a text file, not a JPEG\n" * 4)
    noisy = Image.effect_noise((96, 96), 60).convert("RGB")
    noisy.save(warbler / "whole.jpg", quality=90)
    good.append(warbler / "whole.jpg")
    put("azure_finch/cut.jpg", "truncated", (warbler / "whole.jpg").read_bytes()[:2500])
    put("azure_finch/empty.jpg", "empty_file")
    os.mkfifo(root / "azure_finch" / "pipe.jpg")  # opening it would block forever
    bad["azure_finch/pipe.jpg"] = "unreadable"
    put("azure_finch/cmyk.jpg", "unsupported_mode", image=Image.new("CMYK", (20, 20), (0, 50, 90, 10)))
    put("azure_finch/deep.png", "unsupported_mode", image=Image.new("I;16", (20, 20), 40000))
    palette = Image.new("P", (20, 20), 0)
    palette.putpixel((3, 3), 1)
    put("azure_finch/palette_alpha.png", "unsupported_mode", image=palette, transparency=0)
    put("crimson_warbler/bomb.png", "too_many_pixels", png_header(100_000, 100_000))
    put("crimson_warbler/big.png", "too_many_pixels", png_header(10_000, 10_000))  # PIL only warns
    put("stray_folder/x.jpg", "unknown_label", image=Image.new("RGB", (9, 9), (1, 2, 3)))
    # The same bytes under two labels: both copies are label conflicts.
    shutil.copy(warbler / "img_1.jpg", finch / "copy_of_warbler.jpg")
    good.remove(warbler / "img_1.jpg")
    bad["crimson_warbler/img_1.jpg"] = bad["azure_finch/copy_of_warbler.jpg"] = "label_conflict"
    # Same bytes, same label: an exact duplicate, kept.
    shutil.copy(finch / "img_0.jpg", finch / "img_0_again.jpg")
    good.append(finch / "img_0_again.jpg")
    return root, bad, good


def bad_cub(base: Path) -> tuple[Path, dict[str, str], list[Path]]:
    """A CUB layout whose lists name a missing image and a class id not in classes.txt."""
    root, expected = layouts.make_cub(base)
    cub = root / "CUB_200_2011"
    expected[0].path.unlink()
    with (cub / "images.txt").open("a") as f:
        f.write("100 004.Groove_billed_Ani/extra.jpg\n")
    layouts.write_image(cub / "images" / "004.Groove_billed_Ani" / "extra.jpg")
    with (cub / "image_class_labels.txt").open("a") as f:
        f.write("100 999\n")
    with (cub / "train_test_split.txt").open("a") as f:
        f.write("100 1\n")
    bad = {str(expected[0].path): "missing_file",
           str(cub / "images" / "004.Groove_billed_Ani" / "extra.jpg"): "unknown_label"}
    return root, bad, [e.path for e in expected[1:]]


def bad_manifest(base: Path) -> tuple[Path, dict[str, str], list[Path]]:
    base.mkdir(parents=True)
    layouts.write_image(base / "a.jpg")
    layouts.write_image(base / "b.jpg")
    rows = [{"path": "a.jpg", "label": "owl", "split": "test"},
            {"path": "b.jpg", "label": "owl", "split": "holdout"},
            {"path": "./a.jpg", "label": "owl", "split": "test"}]  # listed twice
    (base / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    bad = {str(base / "b.jpg"): "unknown_split", str(base / "a.jpg"): "duplicate_item"}
    return base / "m.jsonl", bad, [base / "a.jpg"]


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    base = tmp_path_factory.mktemp("messy")
    folder, bad_f, good_f = bad_folder(base / "folder")
    cub, bad_c, good_c = bad_cub(base / "cub")
    manifest, bad_m, good_m = bad_manifest(base / "manifest")
    bad = {str(folder / k): v for k, v in bad_f.items()} | bad_c | bad_m
    recipe = Recipe(sources=[SourceConfig(kind="imagefolder", root=str(folder), dataset="birds"),
                             SourceConfig(kind="cub200", root=str(cub)),
                             SourceConfig(kind="manifest", root=str(manifest))])
    return recipe, bad, good_f + good_c + good_m, base


@pytest.mark.parametrize("workers", [0, 2])
def test_every_bad_input_is_quarantined_and_every_good_item_kept(messy, workers):
    recipe, bad, good, base = messy
    run = RunDir(base / f"run{workers}")
    report = ingest_stage(recipe, run, workers=workers)

    quarantine = pq.read_table(run.quarantine).to_pylist()
    got = {row["image_path"]: row["reason"] for row in quarantine}
    assert got == bad
    # every reason code was exercised (a worker crash has its own test below)
    assert set(REASONS) - {"worker_crashed", "worker_hung"} == set(bad.values())
    assert all(row["detail"] for row in quarantine)
    conflict = [r for r in quarantine if r["reason"] == "label_conflict"]
    assert sorted(r["label"] for r in conflict) == ["Crimson-crowned Warbler", "azure finch"]
    assert all("Crimson-crowned Warbler" in r["detail"] and "azure finch" in r["detail"]
               for r in conflict)
    assert {r["label"] for r in quarantine if r["reason"] == "unknown_label"} == {"stray_folder", "999"}

    items = pq.read_table(run.items).to_pylist()
    assert sorted(r["image_path"] for r in items) == sorted(str(p) for p in good)
    assert report.items == len(good) and report.quarantined == len(bad)
    assert report.reasons["unsupported_mode"] == 3 and report.reasons["too_many_pixels"] == 2
    assert report.datasets["birds"]["items"] == sum(1 for r in items if r["dataset"] == "birds")
    assert report.duplicates == 1


def test_pool_and_inline_write_identical_files(messy):
    recipe, _, _, base = messy
    runs = []
    for name, workers in (("a", 0), ("b", 2), ("c", 2)):
        run = RunDir(base / f"same_{name}")
        ingest_stage(recipe, run, workers=workers)
        runs.append(run)
    for table in ("items.parquet", "quarantine.parquet", "registry.json"):
        first = runs[0].path(table).read_bytes()
        assert all(run.path(table).read_bytes() == first for run in runs[1:]), table


def test_a_failed_ingest_leaves_the_previous_tables(tmp_path):
    root, _ = layouts.make_cub(tmp_path / "cub")
    run = RunDir(tmp_path / "run")
    ingest_stage(Recipe(sources=[SourceConfig(kind="cub200", root=str(root))]), run)
    before = run.items.read_bytes()
    broken = Recipe(sources=[SourceConfig(kind="stanford_dogs", root=str(tmp_path / "cub"))])
    with pytest.raises(FileNotFoundError, match="train_list.mat"):
        ingest_stage(broken, run)
    assert run.items.read_bytes() == before
    assert sorted(p.name for p in run.root.iterdir() if not p.name.startswith(".")) == [
        "items.parquet", "manifest.json", "quarantine.parquet", "registry.json", "sources.json"]


def _signal_workers_reading(path: Path, stop: threading.Event, hits: list[int],
                            sig: int = signal.SIGKILL) -> None:
    """Send `sig` to any child process of this one that has `path` open, as a decoder bug on
    that file would: SIGKILL, a crash (the OS takes the worker down, not our code); SIGSTOP,
    a decoder that never returns."""
    target = str(path)
    while not stop.is_set():
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) != os.getpid():
                    continue
                if int(entry.name) not in hits and \
                        any(os.readlink(fd) == target for fd in (entry / "fd").iterdir()):
                    os.kill(int(entry.name), sig)
                    hits.append(int(entry.name))
            except (OSError, IndexError, ValueError):  # the process ended meanwhile
                continue
        time.sleep(0.002)


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize(("sig", "reason"), [(signal.SIGKILL, "worker_crashed"),
                                             (signal.SIGSTOP, "worker_hung")])
def test_an_image_that_kills_or_hangs_its_worker_is_quarantined_and_the_rest_comes_through(
        tmp_path, sig, reason):
    root, expected = layouts.make_imagefolder(tmp_path / "folder", per_class=40, split_file=False)
    poison = root / "azure_finch" / "poison.jpg"
    with poison.open("wb") as f:  # large (hashed in chunks: open long enough to be seen), sparse
        f.truncate(512 << 20)
    stop, hits = threading.Event(), []
    watcher = threading.Thread(target=_signal_workers_reading, args=(poison, stop, hits, sig),
                               daemon=True)
    watcher.start()
    try:
        report = ingest_stage(Recipe(sources=[SourceConfig(kind="imagefolder", root=str(root))]),
                              RunDir(tmp_path / "run"), workers=2, batch_timeout_s=2)
    finally:
        stop.set()
        watcher.join()
    assert len(hits) > 1  # the worker really failed, again at each step of the bisection
    quarantine = pq.read_table(tmp_path / "run" / "quarantine.parquet").to_pylist()
    assert [(r["image_path"], r["reason"]) for r in quarantine] == [(str(poison), reason)]
    items = pq.read_table(tmp_path / "run" / "items.parquet").to_pylist()
    assert sorted(r["image_path"] for r in items) == sorted(str(e.path) for e in expected)
    assert report.reasons == {reason: 1}

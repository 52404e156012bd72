"""Values derived from an image, kept by the image's sha256: computed once per run directory.

A re-split, a re-export or a re-audit reads the same images again; their perceptual
signatures (split hygiene, the export's train/eval overlap check) need not be computed
again. The cache is `image_cache.sqlite` in the run directory, one row per (sha256, kind);
`kind` carries the deriver's version ("signature-v1"), so a changed hash function never
reads an old value. Deleting the file is always safe: everything in it is recomputed.

    >>> import tempfile, os
    >>> with ImageCache(os.path.join(tempfile.mkdtemp(), "c.sqlite")) as cache:
    ...     cache.put_many("kind-v1", {"ab": b"x"})
    ...     cache.get_many("kind-v1", ["ab", "cd"]), cache.get_many("kind-v2", ["ab"])
    ({'ab': b'x'}, {})
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

FILE = "image_cache.sqlite"


class ImageCache:
    """`get_many` / `put_many` of bytes by (kind, sha256). Use as a context manager."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS derived (kind TEXT NOT NULL, sha256 TEXT"
                         " NOT NULL, value BLOB NOT NULL, PRIMARY KEY (kind, sha256))"
                         " WITHOUT ROWID")

    def __enter__(self) -> ImageCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self._db.close()

    def get_many(self, kind: str, shas: Iterable[str]) -> dict[str, bytes]:
        """{sha256: value} of the shas the cache holds for `kind`."""
        shas = list(shas)
        found: dict[str, bytes] = {}
        for start in range(0, len(shas), 500):  # SQLite's bound-parameter limit
            chunk = shas[start : start + 500]
            found.update(self._db.execute(
                f"SELECT sha256, value FROM derived WHERE kind = ? AND sha256 IN "
                f"({','.join('?' * len(chunk))})", (kind, *chunk)))
        return found

    def put_many(self, kind: str, values: Mapping[str, bytes]) -> None:
        """Store values (one transaction): a killed run keeps all of them or none."""
        self._db.execute("BEGIN")
        self._db.executemany("INSERT OR REPLACE INTO derived (kind, sha256, value) VALUES (?, ?, ?)",
                             ((kind, sha, value) for sha, value in values.items()))
        self._db.execute("COMMIT")


@contextmanager
def open_cache(run_root: str | Path) -> Iterator[ImageCache | None]:
    """The run's cache, or None where it cannot be opened (a read-only run directory: the
    values are then computed, as without a cache).

        with open_cache(run.root) as cache:
            signatures = hygiene.signatures_by_sha(paths, cache)
    """
    try:
        cache = ImageCache(Path(run_root) / FILE)
    except sqlite3.Error:
        yield None
        return
    with cache:
        yield cache

"""Ingest and split: datasets on disk -> items.parquet + registry.json -> split.json + pool.parquet.

    sources/    one module per on-disk layout (six Fine-R1 datasets, ImageFolder, manifest, HF)
    stage.py    the ingest stage: hash, measure and decode every image; quarantine the unusable
    split.py    the split stage: seen/unseen classes, the k-shot pool, the held-out test items
    hygiene.py  class names that cross the seen/unseen line, near-duplicate images
    cli.py      `finecot ingest`, `finecot split`

Keep this file free of imports: the ingest worker processes import sources/ through it.
"""

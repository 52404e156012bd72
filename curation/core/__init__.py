"""What every stage uses: the recipe, the run directory, atomic tables, THE matcher, the ledger.

    config.py   the typed recipe (YAML + `--set`), every section refusing unknown fields
    rundir.py   the run directory: where each table of a run lives
    tables.py   atomic writes (temp name, then rename) and small Arrow helpers
    labels.py   the class registry and THE label matcher (filters, rewards and eval share it)
    ledger.py   SQLite record of every teacher request: the cache, the resume log, the bill
    ledger_schema.py  its migrations, running totals (triggers) and batch tables
    lineage.py  manifest.json: what each table was built from, what is stale
    lock.py     one writing command per run directory
    image_cache.py  values derived from an image (its signature), kept by sha256
    stage.py    what stages share: the progress callback, StageStopped
    cli.py      what the commands share: console, error exit, options, the transient bar
"""

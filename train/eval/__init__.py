"""Evaluation: open- and closed-world accuracy on seen and unseen classes, as the paper reports it.

    evaluate.py  the evaluation: items, prompts, the ledger cache, metrics, outputs
    models.py    the two back-ends: an OpenAI-compatible endpoint, or a local checkpoint
    metrics.py   pure functions from raw answers to scores and the paper's tables
    report.py    report.md + plot.png of a run, and `finecot eval compare`
    cli.py       `finecot eval run|compare`
"""

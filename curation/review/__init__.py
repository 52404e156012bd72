"""Human review in Label Studio: push rows as tasks, pull annotations, apply the verdicts.

    client.py         the Label Studio connection (SDK, plus two direct HTTP calls)
    push_pull.py      rows -> tasks (idempotent, resumable); annotations -> a table
    apply.py          the reviewers' verdicts -> reviewed.parquet, exclusions, corrections
    label_config.xml  the review interface
    cli.py            `finecot review push|pull|apply`
"""

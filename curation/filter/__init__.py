"""The filter stage: drafts.parquet -> accepted.parquet + rejected.parquet, every reason kept.

    rationale.py  the parser: raw teacher text -> think, answer and the four sections
    mentions.py   class names in free text, fast (the name scanner of the filters)
    name_forms.py the forms a class name takes in prose (plurals, possessives, moved years)
    side_text.py  side information: the phrase grammar of references to text given aside
    repetition.py degenerate text that loops
    domains.py    off-domain detection: the object called something outside its super-category
    dedup.py      near-duplicate rationales (MinHash)
    context.py    what the filters share: registry, settings, split, name indexes, caches
    filters.py    the label-grounded filters, one small function each, and `judge()`
    judge.py      the optional second teacher call that checks a visual analysis
    parallel.py   many drafts over worker processes, the same verdicts as one process
    stage.py      the stage over drafts.parquet, and funnel.json
    truth.py      precision and recall against a scripted teacher's own account
    audit.py      the same filters over an existing corpus (`finecot audit`)
    cli.py        `finecot filter`, `finecot audit`
"""

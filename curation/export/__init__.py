"""Export: the curated run -> a Hugging Face dataset folder, other trainers' formats, a report.

    stage.py     the export stage: sft, rl (TAPO triplets), eval_open, eval_closed configs
    shards.py    size-bounded streaming Parquet shards with `datasets` features
    triplets.py  which classes look alike: hard negatives and closed-world options
    embed.py     image embedders for triplets.py (a local model, or model-free)
    formats.py   LLaMA-Factory and EasyR1 files written from the exported folder
    card.py      the dataset card (README.md with the Hub YAML header)
    report.py    the run report: report/index.html and plots
    publish.py   push the exported folder to the Hugging Face Hub
    cli.py       `finecot export`, `finecot report`, `finecot publish`
"""

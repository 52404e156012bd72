"""The draft stage: the k-shot pool -> teacher requests -> drafts.parquet, through the ledger.

    stage.py      the stage: schedule, ask, record, and the quota loop until each class is full
    requests.py   what is asked: messages, request keys, images, and the acceptance check
    report.py     what a run tells: live counters, the final report and its summary line
    batch.py      batch mode: build, submit and collect a round through the Batches API
    batch_ops.py  `finecot batch build|import|status|collect|cancel` behind the commands
    cli.py        `finecot draft`, `finecot ledger ...`, `finecot batch ...`, and the draft bar
"""

"""The draft stage: the k-shot pool -> teacher requests -> drafts.parquet, through the ledger.

    stage.py     the stage: schedule, ask, record, and the quota loop until each class is full
    requests.py  what is asked: messages, request keys, images, and the acceptance check
    cli.py       `finecot draft`, `finecot ledger stats|export|path`, and the draft bar
"""

"""The teacher: any OpenAI-compatible endpoint, asked through Jinja prompts.

    client.py       async chat-completions client (retries, several endpoints, misconfiguration)
    answers.py      what a chat.completion body says: reasoning fields, usage, truncation
    images.py       images as data URLs, fitted into the recipe's size limits
    ratelimit.py    adaptive token buckets for requests and tokens per minute
    prompts.py      the templates of prompts/ rendered with StrictUndefined, and their sha256
    batch_files.py  batch-mode JSONL request and result lines, one line at a time
    batch_api.py    the Files and Batches APIs (upload, create, poll, download, cancel)
"""

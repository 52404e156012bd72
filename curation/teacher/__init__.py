"""The teacher: any OpenAI-compatible endpoint, asked through Jinja prompts.

    client.py     async chat-completions client (retries, several endpoints, usage and cost)
    ratelimit.py  adaptive token buckets for requests and tokens per minute
    prompts.py    the templates of prompts/ rendered with StrictUndefined, and their sha256
"""

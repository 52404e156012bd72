"""The prompt texts every config, trainer and evaluator shares (one prompt, README: Train).

- `FINE_R1_SYSTEM`: the `sft` system prompt; `FORMAT_INSTRUCTION` after a blank line
  (`rl_prompt_text`): the `rl` prompt, EasyR1's format_prompt.jinja and `finecot eval`'s
  open-world prompt; `closed_prompt_text`: the closed-world prompt, the `prompt` column of
  `eval_closed` and what `finecot eval` asks (train/eval/evaluate.py).

The system prompt, the instruction and the closed-world template are the Fine-R1 release's
(PKU-ICST-MIPL/FineR1_ICLR2026: TAPO/examples/format_prompt/cls_thinking.jinja and
eval/evaluation.py; MIT License, Copyright the Fine-R1 authors).

    >>> closed_prompt_text("Which bird?", ["A", "B"]).startswith(
    ...     "Given the question: Which bird?, based on the options provided in ['A', 'B']")
    True
"""

from __future__ import annotations

from collections.abc import Sequence

FINE_R1_SYSTEM = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant "
    "solves it. The assistant first thinks about the reasoning process in the mind and then "
    "provides the user with the answer. The reasoning process and answer are enclosed within "
    "<think> </think> and <answer> </answer> tags, respectively, i.e., <think> reasoning "
    "process here </think><answer> answer here </answer>"
)
FORMAT_INSTRUCTION = (
    "You first think through the reasoning process as an internal monologue, enclosed within "
    "<think> </think> tags. Then, provide your final answer enclosed within <answer> </answer> "
    "tags."
)
# The release puts the instruction after the question with a blank line between them
# (TAPO/examples/format_prompt/cls_thinking.jinja: `{{ content | trim }}`, "\n\n", instruction).
RL_PROMPT_SEPARATOR = "\n\n"
# The release's evaluation prompts (eval/evaluation.py), verbatim.
OPEN_TEMPLATE = ("Given the question: {question}. This is a fine-grained question. "
                 "Output reasoning in <think></think> and the final answer in <answer></answer>.")
CLOSED_TEMPLATE = ("Given the question: {question}, based on the options provided in {options}, "
                   "output the thinking process in <think> </think> and final choice in <answer> "
                   "</answer> tags. The response format should be: <think>...</think> "
                   "<answer>choice</answer>.")


def rl_prompt_text(question: str) -> str:
    """The text of an RL prompt (TAPO rollouts, and `finecot eval` open-world by default).

    >>> rl_prompt_text("  Which bird is this? ").split(RL_PROMPT_SEPARATOR)[0]
    'Which bird is this?'
    """
    return f"{question.strip()}{RL_PROMPT_SEPARATOR}{FORMAT_INSTRUCTION}"


def closed_prompt_text(question: str, options: Sequence[str]) -> str:
    """The closed-world prompt: the release's option template (the options listed in the order
    given), a blank line, the format instruction."""
    closed = CLOSED_TEMPLATE.format(question=question.strip(), options=list(options))
    return f"{closed}{RL_PROMPT_SEPARATOR}{FORMAT_INSTRUCTION}"

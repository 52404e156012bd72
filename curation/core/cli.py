"""What the commands share: the console, the error exit, the common options, the bars.

Only command-line modules (each stage folder's cli.py) import this file; the library reports
through curation/core/stage.py and never draws.

`errors(run_dir)` wraps a command's work: what can go wrong with the user's files (a damaged
table or ledger, a read-only run directory, a bad setting) ends as `error: MESSAGE` naming
the file and what to do, exit code 2, never a traceback. A bug still shows its traceback.
`stage_progress()` draws a bar on a terminal and, when stderr is a log file or a pipe, prints
a plain progress line every few seconds instead (a killed run leaves its progress behind).
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress, TaskID

from curation.core.config import Recipe, RecipeError, load_recipe
from curation.core.stage import StageStopped

console = Console(stderr=True, soft_wrap=True)  # paths are never broken across lines
PROGRESS_EVERY_S = 5.0  # a plain progress line this often when stderr is not a terminal

RunOption = Annotated[
    Path, typer.Option("--run", "-r", help="run directory (all files of the run live there)")
]
RecipeOption = Annotated[
    Path | None, typer.Option("--recipe", help="recipe YAML (its settings, then --set, apply)")
]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="override a recipe field, e.g. --set split.k=8 (repeatable)"),
]


def fail(message: str) -> typer.Exit:
    """Print `error: message` and return the exit (code 2) for the caller to raise."""
    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(code=2)


def load_spec(recipe: Path | None, overrides: list[str] | None) -> Recipe:
    """The recipe with its overrides, or a clean exit that names the bad field."""
    try:
        return load_recipe(recipe, overrides)
    except RecipeError as err:
        raise fail(str(err)) from None


def saved_recipe(run_dir: Path) -> Path | None:
    """A run directory remembers its recipe: later stages start from it."""
    saved = run_dir / "recipe.yaml"
    return saved if saved.exists() else None


def explain(err: BaseException, run_dir: Path | None) -> str | None:
    """The message for an error about the user's files or settings; None for anything else
    (a bug: its traceback is worth seeing)."""
    from curation.core.tables import DamagedFileError, damaged_files

    if isinstance(err, (RecipeError, DamagedFileError)):
        return str(err)
    if isinstance(err, PermissionError) or (
            isinstance(err, OSError) and err.errno in (errno.EROFS, errno.EACCES, errno.EPERM)):
        return _permission_message(err, run_dir)
    if isinstance(err, sqlite3.DatabaseError):
        return _ledger_message(err, run_dir)
    decoding = isinstance(err, (json.JSONDecodeError, UnicodeDecodeError)) or (
        type(err).__module__.startswith("pyarrow")
        or (isinstance(err, OSError) and not isinstance(err, FileNotFoundError)
            and err.filename is None))
    if decoding and run_dir is not None and run_dir.is_dir():
        broken = damaged_files(run_dir)
        if broken:
            return "\n".join(str(b) for b in broken)
    if isinstance(err, (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError)):
        return str(err)
    if isinstance(err, OSError):
        return f"{err} ({type(err).__name__}{f' on {run_dir}' if run_dir else ''})"
    return None


def _permission_message(err: OSError, run_dir: Path | None) -> str:
    target = err.filename or run_dir or "a file"
    message = f"cannot write {target}: {err.strerror or err}"
    if run_dir is not None and run_dir.is_dir() and not os.access(run_dir, os.W_OK):
        message += (f". The run directory {run_dir} is read-only for this user: make it "
                    "writable (chmod -R u+w), or copy it somewhere writable and use the copy. "
                    "Nothing was changed; read-only commands (ledger stats, ledger export, "
                    "publish) work on it as it is")
    return message


def _ledger_message(err: sqlite3.DatabaseError, run_dir: Path | None) -> str:
    from curation.core.ledger import LedgerError

    if isinstance(err, LedgerError):
        return str(err)
    where = run_dir / "ledger.sqlite" if run_dir else "the ledger"
    if run_dir is not None and run_dir.is_dir() and not os.access(run_dir, os.W_OK):
        return _permission_message(PermissionError(errno.EACCES, str(err), str(where)), run_dir)
    return (f"{where} cannot be read ({err}): it is damaged. Restore it from a backup, or move "
            "it aside and rerun (a new ledger starts; the requests it held are sent, and paid "
            "for, again; `sqlite3 ledger.sqlite .recover` may save them)")


@contextmanager
def errors(run_dir: Path | None = None) -> Iterator[None]:
    """Turn errors about the user's files and settings into `error: ...`, exit code 2.

    StageStopped passes through (callers report it with exit code 3), and so do bugs."""
    try:
        yield
    except (typer.Exit, StageStopped, KeyboardInterrupt):
        raise
    except Exception as err:
        message = explain(err, Path(run_dir) if run_dir is not None else None)
        if message is None:
            raise
        raise fail(message) from None


@contextmanager
def stopped_exit() -> Iterator[None]:
    """A stage stopped on purpose (budget, interrupt, another command holding the run):
    `stopped: MESSAGE`, exit code 3, as `finecot run` does."""
    try:
        yield
    except StageStopped as err:
        console.print(f"[yellow]stopped:[/yellow] {err}")
        raise typer.Exit(3) from None


@contextmanager
def stage_progress() -> Iterator[Callable[[str, int, int], None]]:
    """A transient rich progress bar, driven by a stage's progress(task, done, total) calls.
    It appears with the first call: a stage that reports nothing leaves no blank line.
    When stderr is not a terminal, a line `task: done/total` every PROGRESS_EVERY_S seconds
    (and the first and last of each task) instead."""
    if not console.is_terminal:
        yield progress_lines()
        return
    tasks: dict[str, TaskID] = {}
    bar = Progress(console=console, transient=True)

    def update(name: str, done: int, total: int) -> None:
        if not tasks:
            bar.start()
        if name not in tasks:
            tasks[name] = bar.add_task(name, total=total)
        bar.update(tasks[name], completed=done, total=total)

    try:
        yield update
    finally:
        if tasks:
            bar.stop()


def progress_lines(every_s: float = PROGRESS_EVERY_S) -> Callable[[str, int, int], None]:
    """progress(task, done, total) that prints `task: done/total (pct)` at most every
    `every_s` seconds per task, plus each task's first call and its completion: for logs."""
    last: dict[str, float] = {}
    finished: set[str] = set()

    def update(name: str, done: int, total: int) -> None:
        now = time.monotonic()
        complete = bool(total) and done >= total
        if name in last and now - last[name] < every_s and not (complete and name not in finished):
            return
        if complete:
            if name in finished:
                return
            finished.add(name)
        last[name] = now
        share = f" ({100 * done / total:.0f}%)" if total else ""
        console.print(f"{name}: {done}/{total or '?'}{share}", highlight=False)

    return update

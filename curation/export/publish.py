"""Publish: push an exported dataset folder to the Hugging Face Hub.

    HF_TOKEN=hf_... finecot publish USER/NAME --run runs/birds        # private by default
    HF_TOKEN=hf_... finecot publish USER/NAME --dir path/to/dataset --public

`plan_publish` checks everything that can be checked before any network call: the folder is
a finecot export (README.md whose header parses with `huggingface_hub.DatasetCard`, and
names shards that exist), the token is in the environment (never on the command line, never
logged), and what will be sent. `upload` is the one thin call to the Hub: `upload_folder`
(one commit for ordinary sizes; with huggingface_hub >= 1.0 and hf_xet, an interrupted
upload resumes when re-run) or, on older huggingface_hub, `upload_large_folder` (resumable,
several commits) above `large_bytes`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import DatasetCard, HfApi

log = logging.getLogger(__name__)

LARGE_BYTES = 5 * 1024**3  # above this, a resumable upload beats one big commit


@dataclass
class PublishPlan:
    """What `upload` will send, where, and how."""

    folder: Path
    repo_id: str
    private: bool
    files: list[Path] = field(default_factory=list)
    total_bytes: int = 0
    resumable: bool = False


def hf_token() -> str:
    """The Hub token from the environment (HF_TOKEN, or HUGGING_FACE_HUB_TOKEN)."""
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if not token:
        raise ValueError(
            "no Hugging Face token: set HF_TOKEN in the environment (a write token from "
            "https://huggingface.co/settings/tokens); it is never read from the command line"
        )
    return token


def plan_publish(
    folder: str | Path, repo_id: str, private: bool = True, large_bytes: int = LARGE_BYTES
) -> PublishPlan:
    """Validate the export folder and list what would be uploaded (no network)."""
    folder = Path(folder)
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ValueError(f"repo id {repo_id!r} must look like OWNER/NAME")
    readme = folder / "README.md"
    if not readme.is_file():
        raise FileNotFoundError(f"{readme} is missing: run `finecot export` first")
    card = DatasetCard(readme.read_text(encoding="utf-8"))
    configs = card.data.to_dict().get("configs") or []
    if not configs:
        raise ValueError(f"{readme} declares no configs: it is not a finecot export")
    for config in configs:
        for entry in config["data_files"]:
            if not list(folder.glob(entry["path"])):
                raise FileNotFoundError(
                    f"config {config['config_name']} names {entry['path']} but no file matches "
                    f"in {folder}: re-run `finecot export`"
                )
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    total = sum(p.stat().st_size for p in files)
    return PublishPlan(folder, repo_id, private, files, total, resumable=total > large_bytes)


def upload_call(plan: PublishPlan) -> str:
    """The HfApi method that pushes the folder.

    huggingface_hub < 1.0 has `upload_large_folder` (resumable, several commits) for large
    folders; newer releases fold that into `upload_folder` itself (with hf_xet, re-running an
    interrupted upload resumes it, and a large folder is committed in parts).
    """
    if plan.resumable and hasattr(HfApi, "upload_large_folder"):
        return "upload_large_folder"
    return "upload_folder"


class PublishError(ValueError):
    """The Hub could not be reached or refused the upload; the message says what to do."""


def upload(plan: PublishPlan, token: str) -> str:
    """Create the (private) dataset repo if needed and push the folder; return its URL.

    Network and HTTP failures raise PublishError naming the Hub's URL, the answer and what
    to do (the token is never in it); rerunning resumes where the upload stopped."""
    try:
        return _upload(plan, token)
    except Exception as err:
        # huggingface_hub's HTTP errors are OSErrors; its transport's (httpx, or httpx2 in
        # huggingface_hub 2) are not: both are a network failure to explain, not a bug
        if isinstance(err, OSError) or type(err).__module__.split(".")[0] in _TRANSPORTS:
            raise PublishError(_publish_message(err, plan, token)) from None
        raise


_TRANSPORTS = ("httpx", "httpx2", "httpcore", "requests", "urllib3")


def _publish_message(err: BaseException, plan: PublishPlan, token: str) -> str:
    from huggingface_hub import constants
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    hub = constants.ENDPOINT
    where = f"the Hugging Face Hub at {hub} (dataset {plan.repo_id})"
    if isinstance(err, OfflineModeIsEnabled):
        return (f"cannot publish to {where}: offline mode is on (HF_HUB_OFFLINE=1): unset "
                "HF_HUB_OFFLINE and rerun")
    response = getattr(err, "response", None)
    status = getattr(response, "status_code", None) if isinstance(err, HfHubHTTPError) else None
    detail = " ".join(str(err).split())[:300].replace(token, "***")
    if status in (401, 403):
        return (f"{where} refused the token (HTTP {status}): set HF_TOKEN to a token with write "
                f"access to {plan.repo_id.split('/')[0]} and rerun ({detail})")
    if status == 404:
        return (f"{where} answered 404: check the owner in {plan.repo_id!r} (your user or an "
                f"organisation you can write to) and HF_ENDPOINT ({detail})")
    if status is not None:
        return (f"{where} answered HTTP {status} ({detail}): the Hub may be down or busy; rerun "
                "the same command later (an interrupted upload resumes)")
    return (f"cannot reach {where} ({type(err).__name__}: {detail}): check the network, a proxy, "
            "or HF_ENDPOINT; rerun the same command (an interrupted upload resumes)")


def _upload(plan: PublishPlan, token: str) -> str:
    api = HfApi(token=token)
    api.create_repo(plan.repo_id, repo_type="dataset", private=plan.private, exist_ok=True)
    ignore = [".*", "**/.*"]  # partial files of an interrupted export never ship
    if upload_call(plan) == "upload_large_folder":
        api.upload_large_folder(
            repo_id=plan.repo_id,
            folder_path=plan.folder,
            repo_type="dataset",
            private=plan.private,
            ignore_patterns=ignore,
        )
    else:
        api.upload_folder(
            repo_id=plan.repo_id,
            folder_path=plan.folder,
            repo_type="dataset",
            commit_message="finecot export",
            ignore_patterns=ignore,
        )
    return f"https://huggingface.co/datasets/{plan.repo_id}"

"""Sharing a folder on the Hugging Face Hub, as `cogview-push` and `cogview-train --push_to_hub` both do: everything
that can fail here (the token, the repo id, the folder, the card, the picture, this machine's paths) is checked on a
staged copy first; the repo is created only then, and deleted again when this push created it and the upload fails.
Every failure is one line for the user and exit code 2.

Nothing heavy is imported at the top (torch, transformers), so a missing token or a bad repo id is answered at once."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import httpx2  # huggingface_hub's HTTP client: its HTTPError is the base of the Hub's errors and of a dropped connection
from huggingface_hub import HfApi, constants, get_token
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id


# What a pushed repo holds (anything else in the folder, such as checkpoints or pickles, stays home)
CONFIG_FILES = ("config.json", "generation_config.json")
PROCESSOR_FILES = (
    "processor_config.json",
    "preprocessor_config.json",
    "tokenizer_config.json",
    "tokenizer.json",
    "tokenizer.model",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
)
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
REPORT_FILES = ("train_metrics.json", "vqvae_metrics.json")
CARD_FILES = ("README.md", "samples.png")


class PushError(Exception):
    """A problem the user can fix: reported as one line, exit code 2."""


def resolve_token(token: str | None) -> str:
    token = token or get_token()
    if not token:
        raise PushError("no Hugging Face token: pass --token (--hub_token), set HF_TOKEN, or log in with `hf auth login`")
    return token


def check_repo_id(repo_id: str, option: str = "--repo_id") -> None:
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise PushError(f"invalid {option} {repo_id!r}: {error}") from None


def full_repo_id(api: HfApi, repo_id: str) -> str:
    """`NAME` -> `USER/NAME` (the token's user); also checks the token with the Hub before any work."""
    user = api.whoami()["name"]
    return repo_id if "/" in repo_id else f"{user}/{repo_id}"


def weight_files(folder: Path) -> list[str]:
    """model.safetensors, or a sharded checkpoint's index and the shards it names."""
    index_file = folder / "model.safetensors.index.json"
    if not index_file.is_file():
        return ["model.safetensors"] if (folder / "model.safetensors").is_file() else []
    shards = json.loads(index_file.read_text(encoding="utf-8")).get("weight_map", {}).values()
    return [index_file.name, *sorted(set(shards))]


def shared_files(folder: Path, with_card: bool = True) -> list[str]:
    """The files of a model or adapter folder that go to the Hub: weights (safetensors), configs, processor, the
    remote-code bundle, reports (and the card with its picture); never checkpoints or pickles."""
    from modeling_cogview.remote_code import BUNDLE_FILES

    present = {path.name for path in folder.iterdir() if path.is_file()}
    names = (*CONFIG_FILES, *PROCESSOR_FILES, *ADAPTER_FILES, *REPORT_FILES, *BUNDLE_FILES, *(CARD_FILES if with_card else ()))
    return sorted({name for name in names if name in present} | set(weight_files(folder)))


def stage_files(folder: Path, files: list[str], staging: Path) -> None:
    """`files` of `folder` in `staging`: weights hard-linked (copied across file systems), the small files copied so
    nothing written in `staging` can reach the user's folder, config.json without `_name_or_path`; a model folder
    without the whole remote-code bundle gets the package's current one."""
    from modeling_cogview.remote_code import BUNDLE_FILES, write_remote_code

    from .model_card import clean_config_file

    for name in files:
        source, target = folder / name, staging / name
        if name == "config.json":
            clean_config_file(source, target)
        elif name.endswith(".safetensors"):
            try:
                os.link(source, target)
            except OSError:
                shutil.copyfile(source, target)
        else:
            shutil.copyfile(source, target)
    if "config.json" in files and not all((staging / name).is_file() for name in BUNDLE_FILES):
        write_remote_code(staging)


def check_no_machine_paths(staging: Path) -> None:
    from .model_card import folder_machine_paths

    found = folder_machine_paths(staging)
    if found:
        where = "; ".join(f"{name}: {', '.join(paths)}" for name, paths in found.items())
        raise PushError(f"these files name folders of this machine, which must not be shared: {where}")


def upload_staged(
    api: HfApi, repo_id: str, staging: Path, commit_message: str, private: bool = False, revision: str | None = None
) -> str:
    """One commit of the staged folder on `revision` (default main, a missing branch made from main); returns the
    commit URL. The repo is created only now; when this call created it and the upload fails, it is deleted again."""
    existed = api.repo_exists(repo_id)
    api.create_repo(repo_id, private=True if private else None, exist_ok=True)
    try:
        if revision:
            api.create_branch(repo_id, branch=revision, exist_ok=True)  # upload_folder never creates one
        commit = api.upload_folder(repo_id=repo_id, folder_path=staging, commit_message=commit_message, revision=revision)
    except BaseException:
        if not existed:
            try:
                api.delete_repo(repo_id)
            except Exception as cleanup_error:  # noqa: BLE001 - the upload's error is the one to report
                print(f"note: the empty repo {repo_id} could not be deleted ({one_line(cleanup_error)})", file=sys.stderr)
        raise
    return commit.commit_url


def one_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


def describe_error(error: BaseException) -> str:
    """One line that says what failed: the user's mistake as is, the Hub's answer by its status, anything else by
    its type and first line."""
    if isinstance(error, PushError):
        return str(error)
    if not isinstance(error, (httpx2.HTTPError, ConnectionError)):  # HfHubHTTPError is an httpx2.HTTPError too
        return f"the push failed: {one_line(error)}"
    status = getattr(getattr(error, "response", None), "status_code", None)
    first_line = one_line(error).split(": ", 1)[-1]
    if status == 401:
        return f"the Hub at {constants.ENDPOINT} refused the token ({status}): {first_line}"
    if status == 403:
        return f"the Hub at {constants.ENDPOINT} refused to write there with this token ({status}): {first_line}"
    if status is not None:
        return f"the Hub at {constants.ENDPOINT} answered {status}: {first_line}"
    return (
        f"the connection to {constants.ENDPOINT} failed ({one_line(error)}); nothing was pushed unless the repo shows "
        "the commit: run the command again"
    )


__all__ = [
    "PushError",
    "check_no_machine_paths",
    "check_repo_id",
    "describe_error",
    "full_repo_id",
    "resolve_token",
    "shared_files",
    "stage_files",
    "upload_staged",
    "weight_files",
]

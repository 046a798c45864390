"""The test hub server, driven by the real huggingface_hub client: each endpoint the project calls, as it calls it.

huggingface_hub reads HF_ENDPOINT when it is imported, so each client runs in a fresh interpreter pointed at the
server (which runs in this process) and prints one `RESULT {json}` line that the test asserts on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


sys.path.insert(0, str(Path(__file__).parent))  # without conftest: the server lives next to this file
from hub_server import COMMIT_FAILURES, INITIAL_GITATTRIBUTES, HubServer


pytestmark = pytest.mark.slow  # Hub clients in fresh interpreters: RUN_SLOW=1 runs them


TOKEN = "hf_test"
USER = "you"

CLIENT_PRELUDE = """
import base64, json, sys
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError

api = HfApi()

def report(**values):
    print("RESULT " + json.dumps(values))

def failure(call):
    '''The class names and HTTP status of the error `call` raises (None when it succeeds).'''
    try:
        call()
    except Exception as error:
        response = getattr(error, "response", None)
        return {"types": [c.__name__ for c in type(error).__mro__], "status": getattr(response, "status_code", None)}
    return None
"""


def run_client(hub: HubServer, script: str, home: Path, *, token: str | None = TOKEN, timeout: int = 180) -> dict[str, Any]:
    """Runs `script` in a fresh interpreter whose huggingface_hub talks to `hub`, with its own cache in `home`."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(
        HF_ENDPOINT=hub.url,
        HF_HUB_DISABLE_XET="1",  # files travel inside the commit, the protocol this server speaks
        HF_HOME=str(home),
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        NO_PROXY="127.0.0.1,localhost",
        OMP_NUM_THREADS="1",  # the machine's few cores are shared
    )
    if token is not None:
        env["HF_TOKEN"] = token
    result = subprocess.run(
        [sys.executable, "-c", CLIENT_PRELUDE + textwrap.dedent(script)],
        env=env,
        cwd=home.parent,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert len(lines) == 1, result.stdout[-2000:] + result.stderr[-2000:]
    return json.loads(lines[0].removeprefix("RESULT "))


@pytest.fixture
def hub() -> Iterator[HubServer]:
    with HubServer(tokens={TOKEN: USER}) as server:
        yield server


def test_account_and_repos(hub, tmp_path):
    """whoami, create_repo (exist_ok reads the 409, a bare name lands under the token's user, another namespace is
    403), repo_exists and delete_repo, and an unknown token refused."""
    result = run_client(
        hub,
        """
        first = api.create_repo("you/demo")
        again = api.create_repo("you/demo", exist_ok=True)
        short = api.create_repo("short")
        existed = api.repo_exists("you/short")
        api.delete_repo("you/short")
        report(
            url=str(first), repos=[first.repo_id, again.repo_id, short.repo_id], user=api.whoami()["name"],
            existed=existed, exists_after_delete=api.repo_exists("you/short"),
            conflict=failure(lambda: api.create_repo("you/demo")),
            foreign=failure(lambda: api.create_repo("someone-else/demo")),
            wrong_token=failure(lambda: HfApi(token="hf_wrong").whoami()),
        )
        """,
        tmp_path / "home",
    )
    assert result["url"] == f"{hub.url}/you/demo" and result["user"] == USER
    assert result["repos"] == ["you/demo", "you/demo", "you/short"]
    assert result["existed"] and not result["exists_after_delete"] and not hub.repo_exists("you/short")
    assert result["conflict"]["status"] == 409 and "HfHubHTTPError" in result["conflict"]["types"]
    assert result["foreign"]["status"] == 403 and not hub.repo_exists("someone-else/demo")
    assert result["wrong_token"]["status"] == 401
    assert hub.files("you/demo") == {".gitattributes": INITIAL_GITATTRIBUTES} and len(hub.commits("you/demo")) == 1


README = b"""---
license: mit
tags:
- tiny
---
# A tiny model
"""


def test_upload_folder_on_branches_and_downloads_by_branch_and_commit(hub, tmp_path):
    """upload_folder (preupload, the card's YAML check, one commit) to main and to a new branch; snapshot_download
    and hf_hub_download by branch and by commit id; the hub's errors for a missing file, revision and repo, and for a
    card whose metadata is never closed."""
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    files = {"config.json": b'{"a": 1}', "README.md": README, "sub/weights.bin": bytes(range(256)) * 4}
    for path, content in files.items():
        (folder / path).write_bytes(content)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "README.md").write_bytes(b"---\nlicense: mit\n# never closed\n")
    result = run_client(
        hub,
        f"""
        from huggingface_hub import hf_hub_download, snapshot_download
        from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError
        api.create_repo("you/model")
        first = api.upload_folder(repo_id="you/model", folder_path={str(folder)!r}, commit_message="Add the model")
        api.create_branch("you/model", branch="dev")
        api.upload_file(repo_id="you/model", path_or_fileobj=b'{{"a": 2}}', path_in_repo="config.json", revision="dev",
                        commit_message="Try dev")
        by_commit = snapshot_download("you/model", revision=first.oid)
        dev_config = open(hf_hub_download("you/model", "config.json", revision="dev")).read()
        def refused(call, error):
            try:
                call()
            except error:
                return True
            return False
        report(
            commit=first.oid, url=first.commit_url,
            files=sorted(str(p.relative_to(by_commit)) for p in __import__("pathlib").Path(by_commit).rglob("*") if p.is_file()),
            dev_config=dev_config,
            missing_file=refused(lambda: hf_hub_download("you/model", "nope.json"), EntryNotFoundError),
            missing_revision=refused(lambda: hf_hub_download("you/model", "config.json", revision="nope"), RevisionNotFoundError),
            missing_repo=refused(lambda: hf_hub_download("you/none", "config.json"), RepositoryNotFoundError),
            broken_card=failure(lambda: api.upload_folder(repo_id="you/model", folder_path={str(tmp_path / "broken")!r})),
        )
        """,
        tmp_path / "home",
    )
    assert result["commit"] == hub.commits("you/model")[0].oid and result["url"].endswith(result["commit"])
    assert result["files"] == sorted([".gitattributes", *files])
    assert hub.files("you/model")["sub/weights.bin"] == files["sub/weights.bin"]
    assert [c.title for c in hub.commits("you/model", "dev")] == ["Try dev", "Add the model", "initial commit"]
    assert result["dev_config"] == '{"a": 2}' and hub.files("you/model")["config.json"] == b'{"a": 1}'
    assert result["missing_file"] and result["missing_revision"] and result["missing_repo"]
    assert result["broken_card"] is not None and len(hub.commits("you/model")) == 2  # refused before any commit


@pytest.mark.parametrize("failure", COMMIT_FAILURES)
def test_failing_commits_commit_nothing(hub, tmp_path, failure):
    """A dropped connection or a 500 answer to the commit: the client raises and the repo keeps its commits."""
    hub.store.create_repo("you/flaky", private=False)
    hub.fail_next_commits, hub.commit_failure = 1, failure
    result = run_client(
        hub,
        """
        report(error=failure(lambda: api.upload_file(repo_id="you/flaky", path_or_fileobj=b"x", path_in_repo="x.txt")))
        """,
        tmp_path / "home",
    )
    assert result["error"] is not None and hub.fail_next_commits == 0
    assert list(hub.files("you/flaky")) == [".gitattributes"]

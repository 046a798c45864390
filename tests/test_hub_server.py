"""The test hub server, driven by the real huggingface_hub and transformers clients.

huggingface_hub reads HF_ENDPOINT when it is imported, so each client runs in a fresh interpreter pointed at the
server (which runs in this process) and prints one `RESULT {json}` line that the test asserts on.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from collections.abc import Iterator
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


def decode(files: dict[str, str]) -> dict[str, bytes]:
    return {path: base64.b64decode(content) for path, content in files.items()}


def test_create_repo_answers_409_that_exist_ok_accepts(hub, tmp_path):
    result = run_client(
        hub,
        """
        first = api.create_repo("you/demo")
        again = api.create_repo("you/demo", exist_ok=True)
        short = api.create_repo("short")  # no namespace: the token's user
        report(
            url=str(first), first=first.repo_id, again=again.repo_id, short=short.repo_id,
            conflict=failure(lambda: api.create_repo("you/demo")),
            foreign=failure(lambda: api.create_repo("someone-else/demo")),
            user=api.whoami()["name"],
        )
        """,
        tmp_path / "home",
    )
    assert result["url"] == f"{hub.url}/you/demo"
    assert (result["first"], result["again"], result["short"]) == ("you/demo", "you/demo", "you/short")
    assert result["conflict"]["status"] == 409 and "HfHubHTTPError" in result["conflict"]["types"]
    assert result["foreign"]["status"] == 403 and not hub.repo_exists("someone-else/demo")
    assert result["user"] == USER
    # a new repo holds one commit with the hub's .gitattributes
    assert hub.files("you/demo") == {".gitattributes": INITIAL_GITATTRIBUTES}
    assert len(hub.commits("you/demo")) == 1


README = b"""---
license: mit
library_name: transformers
tags:
- tiny
- test
---
# A tiny model
"""


def test_upload_folder_makes_one_commit_and_metadata_reads_back(hub, tmp_path):
    folder = tmp_path / "model"
    (folder / "nested").mkdir(parents=True)
    local = {"README.md": README, "weights.bin": bytes(range(256)) * 3, "nested/notes.txt": b"notes\n"}
    for path, content in local.items():
        (folder / path).write_bytes(content)

    result = run_client(
        hub,
        f"""
        api.create_repo("you/demo")
        commit = api.upload_folder(folder_path={str(folder)!r}, repo_id="you/demo", commit_message="Add model")
        info = api.model_info("you/demo")
        report(
            oid=commit.oid, commit_url=commit.commit_url, sha=info.sha, tags=info.tags,
            card=info.card_data.to_dict(), siblings=sorted(s.rfilename for s in info.siblings),
            files=api.list_repo_files("you/demo"),
            top=[(type(e).__name__, e.path) for e in api.list_repo_tree("you/demo")],
            nested=[(e.path, e.size) for e in api.list_repo_tree("you/demo", path_in_repo="nested")],
        )
        """,
        tmp_path / "home",
    )
    commits = hub.commits("you/demo")
    assert [c.title for c in commits] == ["Add model", "initial commit"]
    assert result["oid"] == result["sha"] == commits[0].oid and commits[0].parent == commits[1].oid
    assert result["commit_url"] == f"{hub.url}/you/demo/commit/{commits[0].oid}"
    assert hub.files("you/demo") == {**local, ".gitattributes": INITIAL_GITATTRIBUTES}
    assert result["card"] == {"license": "mit", "library_name": "transformers", "tags": ["tiny", "test"]}
    assert set(result["tags"]) == {"transformers", "tiny", "test", "license:mit"}
    expected_files = sorted([*local, ".gitattributes"])
    assert result["siblings"] == sorted(result["files"]) == expected_files
    assert sorted(result["top"]) == [
        ["RepoFile", ".gitattributes"], ["RepoFile", "README.md"], ["RepoFile", "weights.bin"], ["RepoFolder", "nested"]
    ]
    assert result["nested"] == [["nested/notes.txt", 6]]


def test_download_by_branch_and_by_pinned_commit(hub, tmp_path):
    result = run_client(
        hub,
        """
        from huggingface_hub import hf_hub_download
        api.create_repo("you/demo")
        first = api.upload_file(path_or_fileobj=b"version 1", path_in_repo="weights.bin", repo_id="you/demo")
        second = api.upload_file(path_or_fileobj=b"version 2", path_in_repo="weights.bin", repo_id="you/demo")
        read = lambda revision: open(hf_hub_download("you/demo", "weights.bin", revision=revision), "rb").read().decode()
        report(first=first.oid, second=second.oid, main=read("main"), pinned=read(first.oid), latest=read(second.oid))
        """,
        tmp_path / "home",
    )
    assert [c.oid for c in hub.commits("you/demo")[:2]] == [result["second"], result["first"]]
    assert (result["main"], result["pinned"], result["latest"]) == ("version 2", "version 1", "version 2")
    assert hub.files("you/demo", result["first"])["weights.bin"] == b"version 1"


def test_snapshot_download_fetches_every_file_of_the_commit(hub, tmp_path):
    hub.create_repo("you/demo")
    head = hub.commit("you/demo", {"config.json": b"{}", "sub/dir/weights.bin": b"\x00\xff" * 100})
    result = run_client(
        hub,
        """
        import os
        from huggingface_hub import snapshot_download
        folder = snapshot_download("you/demo")
        files = {}
        for root, _, names in os.walk(folder):
            for name in names:
                path = os.path.join(root, name)
                files[os.path.relpath(path, folder)] = base64.b64encode(open(path, "rb").read()).decode()
        report(folder=folder, files=files)
        """,
        tmp_path / "home",
    )
    assert result["folder"].endswith(f"snapshots/{head}")
    assert decode(result["files"]) == hub.files("you/demo")


def test_missing_file_revision_and_repo_raise_the_hub_errors(hub, tmp_path):
    hub.create_repo("you/demo")
    hub.commit("you/demo", {"config.json": b"{}"})
    result = run_client(
        hub,
        """
        from huggingface_hub import hf_hub_download
        report(
            file=failure(lambda: hf_hub_download("you/demo", "missing.json")),
            revision=failure(lambda: hf_hub_download("you/demo", "config.json", revision="nope")),
            repo=failure(lambda: hf_hub_download("you/absent", "config.json")),
            exists=[api.file_exists("you/demo", "config.json"), api.file_exists("you/demo", "missing.json"),
                    api.repo_exists("you/demo"), api.repo_exists("you/absent")],
        )
        """,
        tmp_path / "home",
    )
    assert "EntryNotFoundError" in result["file"]["types"] and result["file"]["status"] == 404
    assert "RevisionNotFoundError" in result["revision"]["types"]
    assert "RepositoryNotFoundError" in result["repo"]["types"]
    assert result["exists"] == [True, False, True, False]


def test_writes_need_a_valid_token(hub, tmp_path):
    hub.create_repo("you/demo")
    result = run_client(
        hub,
        """
        upload = lambda **token: api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="you/demo", **token)
        report(
            anonymous_upload=failure(upload),
            anonymous_create=failure(lambda: api.create_repo("you/new")),
            wrong_token=failure(lambda: upload(token="hf_wrong")),
            wrong_whoami=failure(lambda: api.whoami(token="hf_wrong")),
            good_token=failure(lambda: upload(token="hf_test")),
        )
        """,
        tmp_path / "home",
        token=None,
    )
    for refused in ("anonymous_upload", "anonymous_create", "wrong_token", "wrong_whoami"):
        assert result[refused]["status"] == 401 and "HfHubHTTPError" in result[refused]["types"], refused
    assert result["good_token"] is None
    assert not hub.repo_exists("you/new")
    assert [c.title for c in hub.commits("you/demo")] == ["Upload x.txt with huggingface_hub", "initial commit"]


def test_private_repo_is_hidden_without_a_token(hub, tmp_path):
    hub.create_repo("you/secret", private=True)
    hub.commit("you/secret", {"config.json": b"{}"})
    result = run_client(
        hub,
        """
        from huggingface_hub import hf_hub_download
        created = api.create_repo("you/also-secret", private=True, token="hf_test")
        report(
            download=failure(lambda: hf_hub_download("you/secret", "config.json")),
            info=failure(lambda: api.model_info("you/secret")),
            with_token=open(hf_hub_download("you/secret", "config.json", token="hf_test")).read(),
            private=api.model_info("you/secret", token="hf_test").private,
        )
        """,
        tmp_path / "home",
        token=None,
    )
    assert "RepositoryNotFoundError" in result["download"]["types"]
    assert "RepositoryNotFoundError" in result["info"]["types"] and result["info"]["status"] == 401
    assert result["with_token"] == "{}" and result["private"] is True
    assert hub.store.repo("model", "you/also-secret").private


def test_commit_to_a_new_branch_needs_create_branch(hub, tmp_path):
    hub.create_repo("you/demo")
    result = run_client(
        hub,
        """
        from huggingface_hub import hf_hub_download
        upload = lambda: api.upload_file(path_or_fileobj=b"dev", path_in_repo="dev.txt", repo_id="you/demo", revision="dev")
        before = failure(upload)
        api.create_branch("you/demo", branch="dev")
        api.create_branch("you/demo", branch="dev", exist_ok=True)
        commit = upload()
        refs = api.list_repo_refs("you/demo")
        report(
            before=before, oid=commit.oid, branches={b.name: b.target_commit for b in refs.branches},
            again=failure(lambda: api.create_branch("you/demo", branch="dev")),
            content=open(hf_hub_download("you/demo", "dev.txt", revision="dev")).read(),
        )
        """,
        tmp_path / "home",
    )
    assert "RevisionNotFoundError" in result["before"]["types"]
    assert result["again"]["status"] == 409
    assert result["branches"] == hub.branches("you/demo") == {"main": hub.commits("you/demo")[0].oid, "dev": result["oid"]}
    assert result["content"] == "dev"
    assert hub.files("you/demo", "dev")["dev.txt"] == b"dev" and "dev.txt" not in hub.files("you/demo")


def test_create_pr_commits_to_a_pr_ref(hub, tmp_path):
    hub.create_repo("you/demo")
    result = run_client(
        hub,
        """
        from huggingface_hub import hf_hub_download
        commit = api.upload_file(path_or_fileobj=b"proposal", path_in_repo="x.txt", repo_id="you/demo", create_pr=True)
        refs = api.list_repo_refs("you/demo", include_pull_requests=True)
        report(
            pr_url=commit.pr_url, pr_revision=commit.pr_revision, pr_num=commit.pr_num, oid=commit.oid,
            pulls=[(r.name, r.target_commit) for r in refs.pull_requests],
            content=open(hf_hub_download("you/demo", "x.txt", revision=commit.pr_revision)).read(),
        )
        """,
        tmp_path / "home",
    )
    assert result["pr_url"] == f"{hub.url}/you/demo/discussions/1"
    assert (result["pr_revision"], result["pr_num"]) == ("refs/pr/1", 1)
    assert result["pulls"] == [["refs/pr/1", result["oid"]]]
    assert result["content"] == "proposal"  # the revision travelled URL-encoded: refs%2Fpr%2F1
    assert "x.txt" not in hub.files("you/demo")


def test_copy_delete_and_stale_parent_commit(hub, tmp_path):
    hub.create_repo("you/demo")
    head = hub.commit("you/demo", {"a.txt": b"a", "old/x.txt": b"x", "old/y.txt": b"y"})
    result = run_client(
        hub,
        f"""
        from huggingface_hub import CommitOperationCopy, CommitOperationDelete
        commit = api.create_commit(
            "you/demo",
            [CommitOperationCopy("a.txt", "b.txt"), CommitOperationDelete("old/")],
            commit_message="Reshuffle",
            parent_commit={head!r},
        )
        report(
            oid=commit.oid,
            stale=failure(lambda: api.create_commit(
                "you/demo", [CommitOperationDelete("a.txt")], commit_message="Stale", parent_commit={head!r})),
            missing=failure(lambda: api.delete_file("nothing.txt", "you/demo")),
        )
        """,
        tmp_path / "home",
    )
    assert result["oid"] == hub.commits("you/demo")[0].oid
    assert hub.files("you/demo") == {".gitattributes": INITIAL_GITATTRIBUTES, "a.txt": b"a", "b.txt": b"a"}
    assert result["stale"]["status"] == 412
    assert "EntryNotFoundError" in result["missing"]["types"]


@pytest.mark.parametrize("failure", COMMIT_FAILURES)
def test_failing_commit_requests(hub, tmp_path, failure):
    hub.create_repo("you/demo")
    hub.fail_next_commits, hub.commit_failure = 1, failure
    result = run_client(
        hub,
        """
        upload = lambda content: api.upload_file(path_or_fileobj=content, path_in_repo="w.bin", repo_id="you/demo")
        report(first=failure(lambda: upload(b"1")), second=failure(lambda: upload(b"2")))
        """,
        tmp_path / "home",
    )
    first = result["first"]
    if failure == "error":
        assert first["status"] == 500 and "HfHubHTTPError" in first["types"]
    else:  # no answer at all: the client sees a transport error, not an HTTP status
        assert "TransportError" in first["types"] and first["status"] is None
    assert result["second"] is None
    titles = [c.title for c in hub.commits("you/demo")]
    applied = ["Upload w.bin with huggingface_hub"] * (2 if failure == "lost-response" else 1)
    assert titles == [*applied, "initial commit"]
    assert hub.files("you/demo")["w.bin"] == b"2"
    assert [r.status for r in hub.requests if r.path.endswith("/commit/main")] == [0 if failure != "error" else 500, 200]


def test_folder_storage_survives_a_restart(tmp_path):
    storage = tmp_path / "hub-storage"
    with HubServer(tokens={TOKEN: USER}, folder=storage) as first:
        result = run_client(
            first,
            """
            api.create_repo("you/demo")
            report(oid=api.upload_file(path_or_fileobj=b"kept", path_in_repo="k.txt", repo_id="you/demo").oid)
            """,
            tmp_path / "home-1",
        )
        history = first.commits("you/demo")
    with HubServer(tokens={TOKEN: USER}, folder=storage) as second:
        assert second.commits("you/demo") == history
        again = run_client(
            second,
            """
            from huggingface_hub import hf_hub_download
            report(content=open(hf_hub_download("you/demo", "k.txt")).read(), sha=api.model_info("you/demo").sha)
            """,
            tmp_path / "home-2",
        )
    assert again == {"content": "kept", "sha": result["oid"]}


def test_transformers_push_to_hub_then_from_pretrained(hub, tmp_path):
    inputs = "torch.tensor([[1, 2, 3, 4, 5]])"
    pushed = run_client(
        hub,
        f"""
        import torch, transformers
        torch.manual_seed(0)
        config = transformers.GPT2Config(
            n_layer=1, n_embd=16, n_head=2, vocab_size=50, n_positions=16, bos_token_id=0, eos_token_id=0
        )
        model = transformers.GPT2LMHeadModel(config).eval()
        commit = model.push_to_hub("you/tiny-gpt2")
        with torch.no_grad():
            logits = model({inputs}).logits
        report(oid=commit.oid, logits=logits.flatten().tolist())
        """,
        tmp_path / "home-push",
    )
    files = hub.files("you/tiny-gpt2")
    assert {"config.json", "model.safetensors", "README.md"} <= set(files)
    assert hub.commits("you/tiny-gpt2")[0].oid == pushed["oid"]

    # a fresh interpreter with an empty cache and no token: everything comes from the server
    loaded = run_client(
        hub,
        f"""
        import torch, transformers
        from huggingface_hub import try_to_load_from_cache
        model = transformers.GPT2LMHeadModel.from_pretrained("you/tiny-gpt2").eval()
        with torch.no_grad():
            logits = model({inputs}).logits
        report(logits=logits.flatten().tolist(), cached=try_to_load_from_cache("you/tiny-gpt2", "model.safetensors"))
        """,
        tmp_path / "home-load",
        token=None,
    )
    assert loaded["logits"] == pushed["logits"]
    assert f"/snapshots/{pushed['oid']}/" in loaded["cached"]
    downloads = [r.path for r in hub.requests if r.method == "GET" and r.path.endswith("/model.safetensors")]
    assert downloads and all(r.startswith("/you/tiny-gpt2/resolve/") for r in downloads)

"""A minimal hub-protocol server for our tests: no installable server accepts uploads (olah, the hub-protocol server
on PyPI, is read-only and answers 401 for missing files).

It speaks the part of the Hugging Face Hub HTTP protocol that huggingface_hub 2.4 and transformers 5.24 use to create
repos, commit files (upload_file, upload_folder, create_commit, push_to_hub) and read them back (hf_hub_download,
snapshot_download, from_pretrained, model_info, list_repo_files/tree/refs/commits), with `HF_HUB_DISABLE_XET=1`: every
file is answered "regular" at preupload, so content travels base64-encoded inside the NDJSON commit and no LFS or Xet
storage is needed. Repos hold real commits: each is a snapshot (path -> blob) with a 40-hex id, branches point at
commits, and a revision may be a branch or a full commit id. Stdlib only.

    server = HubServer(tokens={"hf_test": "you"}).start()   # 127.0.0.1, free port, daemon thread
    ... run the client with HF_ENDPOINT=server.url HF_HUB_DISABLE_XET=1 HF_TOKEN=hf_test ...
    server.files("you/repo")                                 # {"config.json": b"...", ...}
    server.stop()

The client reads HF_ENDPOINT when huggingface_hub is imported, so run it in a subprocess pointed at `server.url`.
Repo ids always carry a namespace (`user/name`); `create_repo("name")` puts the repo under the token's user.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import socket
import socketserver
import threading
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit


# URL segment under /api/ -> repo type, and the prefix of a repo's web/resolve URL per type
API_KINDS = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}
DEFAULT_BRANCH = "main"
COMMIT_FAILURES = ("disconnect", "error", "lost-response")

# What the real hub puts in a new repo's first commit (shortened): the LFS rules for weight files
INITIAL_GITATTRIBUTES = b"""*.bin filter=lfs diff=lfs merge=lfs -text
*.h5 filter=lfs diff=lfs merge=lfs -text
*.onnx filter=lfs diff=lfs merge=lfs -text
*.pt filter=lfs diff=lfs merge=lfs -text
*.pth filter=lfs diff=lfs merge=lfs -text
*.safetensors filter=lfs diff=lfs merge=lfs -text
"""


class HubError(Exception):
    """An error answer: status, message, and the X-Error-Code that huggingface_hub maps to its exception classes."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = dict(headers or {})


def git_blob_oid(data: bytes) -> str:
    """git's blob id: the hub reports it as a regular file's `oid`, ETag and `blobId`, and the client compares it."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass(frozen=True)
class Commit:
    oid: str
    parent: str | None
    title: str
    message: str
    author: str
    date: str
    tree: dict[str, str]  # path -> blob oid: the whole snapshot, not a diff


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    created_at: str
    branches: dict[str, str] = field(default_factory=dict)  # name (or refs/pr/N) -> commit oid
    commits: dict[str, Commit] = field(default_factory=dict)
    pull_requests: int = 0

    @property
    def namespace(self) -> str:
        return self.repo_id.split("/")[0]

    def commit_at(self, revision: str) -> Commit:
        """A branch, `refs/heads/<branch>`, a PR ref, or a full commit id; else the hub's RevisionNotFound."""
        name = revision.removeprefix("refs/heads/")
        if name in self.branches:
            return self.commits[self.branches[name]]
        if revision in self.commits:
            return self.commits[revision]
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def history(self, revision: str) -> list[Commit]:
        """Commits reachable from `revision`, newest first."""
        commit: Commit | None = self.commit_at(revision)
        found = []
        while commit is not None:
            found.append(commit)
            commit = self.commits[commit.parent] if commit.parent else None
        return found


@dataclass(frozen=True)
class FileChange:
    """One line of a commit: `content` set adds/replaces `path`; None deletes it (a folder when `folder`)."""

    path: str
    content: bytes | None = None
    folder: bool = False


class HubStore:
    """Repos, commits and blobs, in memory or under `folder` (state.json + blobs/<oid>) so a restart keeps them."""

    def __init__(self, folder: Path | None = None):
        self._lock = threading.RLock()
        self._folder = folder
        self._repos: dict[tuple[str, str], Repo] = {}
        self._blobs: dict[str, bytes] = {}
        self._counter = itertools.count()  # makes two otherwise identical commits get distinct ids
        if folder is not None:
            (folder / "blobs").mkdir(parents=True, exist_ok=True)
            self._load()

    # -- reads --------------------------------------------------------------------------------------------------

    def repo(self, repo_type: str, repo_id: str) -> Repo | None:
        with self._lock:
            return self._repos.get((repo_type, repo_id))

    def blob(self, oid: str) -> bytes:
        if self._folder is not None:
            return (self._folder / "blobs" / oid).read_bytes()
        with self._lock:
            return self._blobs[oid]

    def blob_size(self, oid: str) -> int:
        if self._folder is not None:
            return (self._folder / "blobs" / oid).stat().st_size
        with self._lock:
            return len(self._blobs[oid])

    # -- writes -------------------------------------------------------------------------------------------------

    def create_repo(self, repo_type: str, repo_id: str, *, private: bool, author: str) -> Repo:
        with self._lock:
            if (repo_type, repo_id) in self._repos:
                raise HubError(409, f"You already created this {repo_type} repo")
            repo = Repo(repo_type, repo_id, private, now_iso())
            self._repos[(repo_type, repo_id)] = repo
            initial = self._new_commit(repo, None, {".gitattributes": INITIAL_GITATTRIBUTES}, "initial commit", "", author)
            repo.branches[DEFAULT_BRANCH] = initial.oid
            self._save()
            return repo

    def delete_repo(self, repo_type: str, repo_id: str) -> None:
        with self._lock:
            self._repos.pop((repo_type, repo_id))
            self._save()

    def commit(
        self,
        repo: Repo,
        branch: str,
        changes: Iterable[FileChange],
        *,
        title: str,
        message: str = "",
        author: str,
        expected_parent: str | None = None,
    ) -> Commit:
        """Applies `changes` on top of `branch` and moves the branch; the hub's errors for stale parents and
        deletions of files that are not there."""
        with self._lock:
            if branch not in repo.branches:
                raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            head = repo.commits[repo.branches[branch]]
            if expected_parent is not None and expected_parent != head.oid:
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            tree = dict(head.tree)
            added: dict[str, bytes] = {}
            for change in changes:
                if change.content is not None:
                    added[change.path] = change.content
                    tree[change.path] = git_blob_oid(change.content)
                    continue
                gone = [p for p in tree if p.startswith(change.path.rstrip("/") + "/")] if change.folder else [
                    p for p in tree if p == change.path
                ]
                if not gone:
                    raise HubError(404, f"A file with this name doesn't exist: {change.path}", "EntryNotFound")
                for path in gone:
                    del tree[path]
                    added.pop(path, None)
            commit = self._new_commit(repo, head.oid, added, title, message, author, base=tree)
            repo.branches[branch] = commit.oid
            self._save()
            return commit

    def create_branch(self, repo: Repo, branch: str, starting_point: str) -> None:
        with self._lock:
            if branch in repo.branches:
                raise HubError(409, f"Reference already exists: refs/heads/{branch}")
            repo.branches[branch] = repo.commit_at(starting_point).oid
            self._save()

    def delete_branch(self, repo: Repo, branch: str) -> None:
        with self._lock:
            if branch == DEFAULT_BRANCH:
                raise HubError(403, "Cannot delete the default branch")
            if branch not in repo.branches:
                raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            del repo.branches[branch]
            self._save()

    def open_pull_request(self, repo: Repo, starting_point: str) -> tuple[int, str]:
        """A PR is a `refs/pr/N` branch forked from `starting_point`: commits made with create_pr land there."""
        with self._lock:
            start = repo.commit_at(starting_point).oid
            repo.pull_requests += 1
            ref = f"refs/pr/{repo.pull_requests}"
            repo.branches[ref] = start
            self._save()
            return repo.pull_requests, ref

    def _new_commit(
        self,
        repo: Repo,
        parent: str | None,
        added: Mapping[str, bytes],
        title: str,
        message: str,
        author: str,
        base: Mapping[str, str] | None = None,
    ) -> Commit:
        tree = dict(base) if base is not None else {}
        for path, content in added.items():
            oid = git_blob_oid(content)
            tree[path] = oid
            self._put_blob(oid, content)
        date = now_iso()
        identity = json.dumps([parent, sorted(tree.items()), title, message, author, date, next(self._counter)])
        commit = Commit(hashlib.sha1(identity.encode()).hexdigest(), parent, title, message, author, date, tree)
        repo.commits[commit.oid] = commit
        return commit

    def _put_blob(self, oid: str, content: bytes) -> None:
        if self._folder is None:
            self._blobs[oid] = content
            return
        path = self._folder / "blobs" / oid
        if not path.exists():
            partial = path.with_suffix(".partial")
            partial.write_bytes(content)
            partial.replace(path)

    # -- persistence --------------------------------------------------------------------------------------------

    def _save(self) -> None:
        if self._folder is None:
            return
        state = {"repos": [asdict(repo) for repo in self._repos.values()]}
        partial = self._folder / "state.json.partial"
        partial.write_text(json.dumps(state))
        partial.replace(self._folder / "state.json")

    def _load(self) -> None:
        assert self._folder is not None
        state_file = self._folder / "state.json"
        if not state_file.exists():
            return
        for data in json.loads(state_file.read_text())["repos"]:
            commits = {oid: Commit(**commit) for oid, commit in data.pop("commits").items()}
            repo = Repo(**data, commits=commits)
            self._repos[(repo.repo_type, repo.repo_id)] = repo


# -- model card metadata ----------------------------------------------------------------------------------------


def _yaml_scalar(text: str) -> Any:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("null", "~", ""):
        return None
    try:
        return int(text)
    except ValueError:
        return text


def front_matter(text: str) -> dict[str, Any] | None:
    """The YAML metadata block of a README, read without a YAML library: top-level `key: value`, `key: [a, b]` and
    `key:` followed by `- item` lines, which is what model cards put there; nested mappings come back as None.
    Raises ValueError for a block that is opened but never closed."""
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        return None
    end = next((i for i in range(1, len(lines)) if lines[i].strip() == "---"), None)
    if end is None:
        raise ValueError("The metadata block of README.md is not closed by a '---' line")
    data: dict[str, Any] = {}
    key: str | None = None
    nested: set[str] = set()
    for line in lines[1:end]:
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if line[0] in " \t-":  # continuation of the previous key
            if key is None or key in nested:
                continue
            if stripped.startswith("- ") and ": " not in stripped:
                data[key] = (data[key] or []) + [_yaml_scalar(stripped[2:])]
            else:  # a mapping below the key: beyond this reader
                nested.add(key)
                data[key] = None
            continue
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if value.startswith("[") and value.endswith("]"):
            data[key] = [_yaml_scalar(item) for item in value[1:-1].split(",") if item.strip()]
        else:
            data[key] = _yaml_scalar(value)
    return data


def card_tags(card: Mapping[str, Any]) -> list[str]:
    """The tags the hub derives from card metadata (a subset: its own tags, the library, the license)."""
    tags = card.get("tags") or []
    tags = [tags] if isinstance(tags, str) else [str(tag) for tag in tags]
    if card.get("library_name"):
        tags.insert(0, str(card["library_name"]))
    if card.get("license"):
        tags.append(f"license:{card['license']}")
    return tags


# -- HTTP -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str  # as sent, still URL-encoded, without the query
    status: int  # 0: the connection was dropped without an answer


_REPO = r"/api/(?P<kind>models|datasets|spaces)/(?P<namespace>[^/]+)/(?P<name>[^/]+)"
_REV = r"(?P<revision>[^/]+)"
# (methods, raw-path pattern, handler method name); groups are URL-decoded before the call
ROUTES: list[tuple[tuple[str, ...], re.Pattern[str], str]] = [
    (("GET",), re.compile(r"/api/whoami-v2"), "whoami"),
    (("GET",), re.compile(r"/api/agent-harnesses"), "agent_harnesses"),
    (("POST",), re.compile(r"/api/repos/create"), "create_repo"),
    (("DELETE",), re.compile(r"/api/repos/delete"), "delete_repo"),
    (("POST",), re.compile(r"/api/validate-yaml"), "validate_yaml"),
    (("GET",), re.compile(_REPO), "repo_info"),
    (("GET",), re.compile(_REPO + r"/revision/" + _REV), "repo_info"),
    (("GET",), re.compile(_REPO + r"/tree/" + _REV + r"(?:/(?P<path>.*))?"), "tree"),
    (("POST",), re.compile(_REPO + r"/paths-info/" + _REV), "paths_info"),
    (("GET",), re.compile(_REPO + r"/refs"), "refs"),
    (("GET",), re.compile(_REPO + r"/commits/" + _REV), "list_commits"),
    (("POST",), re.compile(_REPO + r"/preupload/" + _REV), "preupload"),
    (("POST",), re.compile(_REPO + r"/commit/" + _REV), "commit"),
    (("POST", "DELETE"), re.compile(_REPO + r"/branch/(?P<branch>[^/]+)"), "branch"),
    (
        ("GET", "HEAD"),
        re.compile(r"/(?:(?P<kind>datasets|spaces)/)?(?P<namespace>[^/]+)/(?P<name>[^/]+)/resolve/" + _REV + r"/(?P<path>.+)"),
        "resolve",
    ),
]


class _HubHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], hub: HubServer):
        self.hub = hub
        super().__init__(address, _HubRequestHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the host name up (socket.getfqdn), which can stall without DNS
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


class _HubRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects
    timeout = 60  # an idle keep-alive connection frees its thread
    server: _HubHTTPServer

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # -- plumbing -----------------------------------------------------------------------------------------------

    @property
    def hub(self) -> HubServer:
        return self.server.hub

    @property
    def store(self) -> HubStore:
        return self.server.hub.store

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        self._raw_path = url.path
        self._query = parse_qs(url.query)
        self._body_bytes: bytes | None = None
        try:
            for methods, pattern, name in ROUTES:
                match = pattern.fullmatch(url.path)
                if match and method in methods:
                    args = {key: unquote(value) for key, value in match.groupdict().items() if value is not None}
                    getattr(self, name)(method, **args)
                    return
            raise HubError(404, f"Sorry, we can't find the page you are looking for: {method} {url.path}")
        except HubError as error:
            self._send_error(error)
        except (BrokenPipeError, ConnectionResetError):  # the client went away mid-answer
            self.close_connection = True
        except Exception as error:  # a bug here: answer it, so the client's test fails with the reason
            traceback.print_exc()
            self._send_error(HubError(500, f"hub_server: {error!r}"))

    def _send_error(self, error: HubError) -> None:
        self._body()  # drain the request so the connection stays usable
        headers = dict(error.headers)
        if error.code:
            headers["X-Error-Code"] = error.code
        headers["X-Error-Message"] = error.message
        self._send_json({"error": error.message}, status=error.status, headers=headers)

    def _body(self) -> bytes:
        if self._body_bytes is None:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                self.rfile.readline()  # the blank line after the last chunk
                self._body_bytes = b"".join(chunks)
            else:
                self._body_bytes = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        return self._body_bytes

    def _json_body(self) -> dict[str, Any]:
        body = self._body()
        try:
            return json.loads(body) if body else {}
        except ValueError:
            raise HubError(400, "The request body is not JSON") from None

    def _flag(self, name: str) -> bool:
        return (self._query.get(name) or ["false"])[-1].lower() in ("1", "true")

    def _send(self, status: int, body: bytes, headers: Mapping[str, str], content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> None:
        self._send(status, json.dumps(data).encode(), headers or {}, "application/json; charset=utf-8")

    def _drop_connection(self) -> None:
        """Closes the socket without an answer: what the client sees when the network fails mid-request."""
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)
        self.hub._record(RequestRecord(self.command, self._raw_path, 0))

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        self.hub._record(RequestRecord(self.command, getattr(self, "_raw_path", self.path), int(code)))

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the request log lives in `HubServer.requests`

    # -- access -------------------------------------------------------------------------------------------------

    def _user(self) -> str | None:
        """The token's user; an unknown token is refused everywhere, reads included, as on the hub."""
        header = self.headers.get("Authorization")
        if header is None:
            return None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or token.strip() not in self.hub.tokens:
            raise HubError(401, "Invalid credentials in Authorization header")
        return self.hub.tokens[token.strip()]

    def _require_user(self) -> str:
        user = self._user()
        if user is None:
            raise HubError(401, "You must be authenticated to access this resource")
        return user

    def _readable_repo(self, kind: str | None, namespace: str, name: str) -> Repo:
        repo_type = API_KINDS[kind] if kind else "model"  # resolve URLs of models carry no kind
        repo = self.store.repo(repo_type, f"{namespace}/{name}")
        user = self._user()
        # a private repo is hidden, not forbidden: 401 without a token, 404 with someone else's
        if repo is None or (repo.private and not (user and self.hub.can_write(user, namespace))):
            status = 401 if repo is not None and user is None else 404
            raise HubError(status, "Repository not found", "RepoNotFound")
        return repo

    def _writable_repo(self, kind: str | None, namespace: str, name: str) -> tuple[Repo, str]:
        user = self._require_user()
        repo = self._readable_repo(kind, namespace, name)
        if not self.hub.can_write(user, namespace):
            raise HubError(403, f"You don't have the rights to write to {repo.repo_id}")
        return repo, user

    def _repo_url(self, repo: Repo) -> str:
        return f"{self.hub.url}/{URL_PREFIXES[repo.repo_type]}{repo.repo_id}"

    # -- account and repos --------------------------------------------------------------------------------------

    def whoami(self, method: str) -> None:
        user = self._require_user()
        orgs = [{"type": "org", "name": org} for org, members in self.hub.orgs.items() if user in members]
        self._send_json(
            {
                "type": "user",
                "name": user,
                "fullname": user,
                "orgs": orgs,
                "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": "write"}},
            }
        )

    def agent_harnesses(self, method: str) -> None:
        # huggingface_hub fetches this registry once a day to tag its user agent; an empty one detects nothing
        self._send_json({"standardEnvVars": [], "harnesses": {}})

    def _repo_from_body(self, body: Mapping[str, Any], user: str) -> tuple[str, str]:
        repo_type = body.get("type") or "model"
        if repo_type not in URL_PREFIXES:
            raise HubError(400, f"Invalid repo type: {repo_type}")
        return repo_type, f"{body.get('organization') or user}/{body['name']}"

    def create_repo(self, method: str) -> None:
        user = self._require_user()
        body = self._json_body()
        repo_type, repo_id = self._repo_from_body(body, user)
        namespace = repo_id.split("/")[0]
        if not self.hub.can_write(user, namespace):
            raise HubError(403, f"You don't have the rights to create a {repo_type} under the namespace {namespace}")
        private = body.get("visibility", "private" if body.get("private") else "public") != "public"
        url = f"{self.hub.url}/{URL_PREFIXES[repo_type]}{repo_id}"
        try:
            self.store.create_repo(repo_type, repo_id, private=private, author=user)
        except HubError as error:  # create_repo(exist_ok=True) reads the 409 and keeps going
            self._send_json({"error": error.message, "url": url}, status=409, headers={"X-Error-Message": error.message})
            return
        self._send_json({"url": url, "name": repo_id, "id": repo_id})

    def delete_repo(self, method: str) -> None:
        user = self._require_user()
        repo_type, repo_id = self._repo_from_body(self._json_body(), user)
        if self.store.repo(repo_type, repo_id) is None:
            raise HubError(404, "Repository not found", "RepoNotFound")
        if not self.hub.can_write(user, repo_id.split("/")[0]):
            raise HubError(403, f"You don't have the rights to delete {repo_id}")
        self.store.delete_repo(repo_type, repo_id)
        self._send_json({})

    def validate_yaml(self, method: str) -> None:
        try:
            front_matter(self._json_body().get("content") or "")
        except ValueError as error:
            self._send_json({"errors": [{"message": str(error)}], "warnings": []}, status=400)
            return
        self._send_json({"errors": [], "warnings": []})

    # -- reads --------------------------------------------------------------------------------------------------

    def repo_info(self, method: str, kind: str, namespace: str, name: str, revision: str = DEFAULT_BRANCH) -> None:
        repo = self._readable_repo(kind, namespace, name)
        commit = repo.commit_at(revision)
        with_blobs = self._flag("blobs")
        siblings = []
        for path, oid in sorted(commit.tree.items()):
            sibling: dict[str, Any] = {"rfilename": path}
            if with_blobs:
                sibling.update(size=self.store.blob_size(oid), blobId=oid)
            siblings.append(sibling)
        card = None
        if "README.md" in commit.tree:
            try:
                card = front_matter(self.store.blob(commit.tree["README.md"]).decode("utf-8", "replace"))
            except ValueError:
                card = None
        info: dict[str, Any] = {
            "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "author": repo.namespace,
            "sha": commit.oid,
            "lastModified": commit.date,
            "createdAt": repo.created_at,
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": card_tags(card or {}),
            "siblings": siblings,
        }
        if repo.repo_type == "model":
            info.update(modelId=repo.repo_id, library_name=(card or {}).get("library_name"))
            info.update(pipeline_tag=(card or {}).get("pipeline_tag"))
        if card is not None:
            info["cardData"] = card
        expand = self._query.get("expand") or self._query.get("expand[]")
        if expand:  # only the asked properties, as the hub does
            info = {key: value for key, value in info.items() if key in ("_id", "id") or key in expand}
        self._send_json(info)

    def _file_entry(self, path: str, oid: str) -> dict[str, Any]:
        return {"type": "file", "path": path, "oid": oid, "size": self.store.blob_size(oid)}

    @staticmethod
    def _folder_entry(tree: Mapping[str, str], folder: str) -> dict[str, Any]:
        inside = sorted((path, oid) for path, oid in tree.items() if path.startswith(folder + "/"))
        return {"type": "directory", "path": folder, "oid": hashlib.sha1(json.dumps(inside).encode()).hexdigest(), "size": 0}

    def tree(self, method: str, kind: str, namespace: str, name: str, revision: str, path: str = "") -> None:
        repo = self._readable_repo(kind, namespace, name)
        commit = repo.commit_at(revision)
        folder = path.strip("/")
        prefix = folder + "/" if folder else ""
        inside = sorted(p for p in commit.tree if p.startswith(prefix))
        if folder and not inside:
            raise HubError(404, f"{folder} does not exist on {revision}", "EntryNotFound", {"X-Repo-Commit": commit.oid})
        recursive = self._flag("recursive")
        entries: list[dict[str, Any]] = []
        seen_folders: set[str] = set()
        for file_path in inside:
            parts = file_path[len(prefix):].split("/")
            for depth in range(1, len(parts) if recursive else min(2, len(parts))):
                sub_folder = prefix + "/".join(parts[:depth])
                if sub_folder not in seen_folders:
                    seen_folders.add(sub_folder)
                    entries.append(self._folder_entry(commit.tree, sub_folder))
            if recursive or len(parts) == 1:
                entries.append(self._file_entry(file_path, commit.tree[file_path]))
        self._send_json(entries)

    def paths_info(self, method: str, kind: str, namespace: str, name: str, revision: str) -> None:
        repo = self._readable_repo(kind, namespace, name)
        commit = repo.commit_at(revision)
        if "json" in self.headers.get("Content-Type", ""):
            paths = self._json_body().get("paths") or []
        else:  # the client sends a form: paths=a&paths=b&expand=False
            paths = parse_qs(self._body().decode()).get("paths", [])
        entries = []
        for path in paths:
            path = path.strip("/")
            if path in commit.tree:
                entries.append(self._file_entry(path, commit.tree[path]))
            elif any(p.startswith(path + "/") for p in commit.tree):
                entries.append(self._folder_entry(commit.tree, path))
        self._send_json(entries)

    def refs(self, method: str, kind: str, namespace: str, name: str) -> None:
        repo = self._readable_repo(kind, namespace, name)
        branches, pulls = [], []
        for branch, oid in sorted(dict(repo.branches).items()):  # a copy: commits may move branches meanwhile
            if branch.startswith("refs/pr/"):
                pulls.append({"name": branch, "ref": branch, "targetCommit": oid})
            else:
                branches.append({"name": branch, "ref": f"refs/heads/{branch}", "targetCommit": oid})
        refs: dict[str, Any] = {"branches": branches, "converts": [], "tags": []}
        if self._flag("include_prs"):
            refs["pullRequests"] = pulls
        self._send_json(refs)

    def list_commits(self, method: str, kind: str, namespace: str, name: str, revision: str) -> None:
        repo = self._readable_repo(kind, namespace, name)
        self._send_json(
            [
                {"id": c.oid, "title": c.title, "message": c.message, "authors": [{"user": c.author}], "date": c.date}
                for c in repo.history(revision)
            ]
        )

    def resolve(self, method: str, namespace: str, name: str, revision: str, path: str, kind: str | None = None) -> None:
        repo = self._readable_repo(kind, namespace, name)
        commit = repo.commit_at(revision)
        oid = commit.tree.get(path)
        if oid is None:  # X-Repo-Commit lets the client cache that the file does not exist at this commit
            raise HubError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": commit.oid})
        content = self.store.blob(oid)
        headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{oid}"', "Accept-Ranges": "bytes"}
        status, body = 200, content
        byte_range = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if byte_range and method == "GET":  # a resumed download asks for the rest of the file
            start = int(byte_range.group(1))
            end = min(int(byte_range.group(2) or len(content) - 1), len(content) - 1)
            if start >= len(content):
                raise HubError(416, "Range not satisfiable", headers={"Content-Range": f"bytes */{len(content)}"})
            status, body = 206, content[start:end + 1]
            headers["Content-Range"] = f"bytes {start}-{end}/{len(content)}"
        self._send(status, body, headers, "application/octet-stream")

    # -- writes -------------------------------------------------------------------------------------------------

    def _target_branch(self, repo: Repo, revision: str) -> str:
        """The branch a preupload/commit goes to; with create_pr that is a new PR ref, opened by the commit itself."""
        branch = revision.removeprefix("refs/heads/")
        if branch not in repo.branches:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return branch

    def preupload(self, method: str, kind: str, namespace: str, name: str, revision: str) -> None:
        repo, _ = self._writable_repo(kind, namespace, name)
        tree = repo.commit_at(revision if self._flag("create_pr") else self._target_branch(repo, revision)).tree
        files = [
            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": tree.get(f["path"])}
            for f in self._json_body().get("files", [])
        ]
        self._send_json({"files": files})

    def commit(self, method: str, kind: str, namespace: str, name: str, revision: str) -> None:
        body = self._body()
        failure = self.hub._take_commit_failure()
        if failure == "disconnect":
            self._drop_connection()
            return
        if failure == "error":
            raise HubError(500, "Internal Error - We're working hard to fix this as soon as possible!")
        repo, user = self._writable_repo(kind, namespace, name)
        header, changes = parse_commit_payload(body)
        pull_request: int | None = None
        if self._flag("create_pr"):
            pull_request, branch = self.store.open_pull_request(repo, revision)
        else:
            branch = self._target_branch(repo, revision)
        try:
            commit = self.store.commit(
                repo,
                branch,
                changes,
                title=header.get("summary") or "",
                message=header.get("description") or "",
                author=user,
                expected_parent=header.get("parentCommit"),
            )
        except HubError:
            if pull_request is not None:  # a refused commit opens no PR
                self.store.delete_branch(repo, branch)
            raise
        if failure == "lost-response":  # the commit happened, the client never hears of it
            self._drop_connection()
            return
        url = self._repo_url(repo)
        self._send_json(
            {
                "success": True,
                "commitOid": commit.oid,
                "commitUrl": f"{url}/commit/{commit.oid}",
                "pullRequestUrl": f"{url}/discussions/{pull_request}" if pull_request else None,
                "hookOutput": "",
            }
        )

    def branch(self, method: str, kind: str, namespace: str, name: str, branch: str) -> None:
        repo, _ = self._writable_repo(kind, namespace, name)
        if method == "DELETE":
            self.store.delete_branch(repo, branch)
            self._send_json({})
            return
        if branch.startswith("refs/") or not branch or branch in ("HEAD",):
            raise HubError(400, f"Invalid reference for a branch: {branch}")
        starting_point = self._json_body().get("startingPoint") or DEFAULT_BRANCH
        self.store.create_branch(repo, branch, starting_point)
        self._send_json({})


def parse_commit_payload(body: bytes) -> tuple[dict[str, Any], list[FileChange]]:
    """The NDJSON that huggingface_hub's `_send_commit` posts: one header line, then one line per operation."""
    header: dict[str, Any] = {}
    changes: list[FileChange] = []
    for line in body.splitlines():
        if not line.strip():
            continue
        item = json.loads(line)
        key, value = item.get("key"), item.get("value") or {}
        if key == "header":
            header = value
        elif key == "file":
            content = value.get("content", "")
            data = base64.b64decode(content) if value.get("encoding") == "base64" else content.encode()
            changes.append(FileChange(value["path"], data))
        elif key in ("deletedFile", "deletedFolder"):
            changes.append(FileChange(value["path"], None, folder=key == "deletedFolder"))
        elif key == "lfsFile":  # never asked for: preupload answers "regular" for every file
            raise HubError(400, f"This test server stores no LFS objects ({value.get('path')})")
        else:
            raise HubError(400, f"Unknown commit operation: {key}")
    if not header.get("summary"):
        raise HubError(400, "A commit needs a summary")
    return header, changes


class HubServer:
    """The server: `start()` binds 127.0.0.1 on a free port and serves from a daemon thread; `url`, `stop()`.

    tokens: token -> user name, or a collection of tokens that all belong to `user`.
    orgs: organization -> member users; members may write (and read private repos) in the organization's namespace.
    folder: keep repos there (and find them there after a restart) instead of in memory.
    fail_next_commits / commit_failure: the next N commit requests fail: "disconnect" closes the connection without
        an answer and commits nothing, "error" answers 500, "lost-response" commits and then closes without answer.
    requests: every request served, as `RequestRecord`s.
    """

    def __init__(
        self,
        tokens: Mapping[str, str] | Iterable[str] = (),
        *,
        user: str = "user",
        orgs: Mapping[str, Iterable[str]] | None = None,
        folder: str | Path | None = None,
    ):
        self.tokens: dict[str, str] = dict(tokens) if isinstance(tokens, Mapping) else {t: user for t in tokens}
        self.orgs: dict[str, set[str]] = {org: set(members) for org, members in (orgs or {}).items()}
        self.store = HubStore(Path(folder) if folder is not None else None)
        self.fail_next_commits = 0
        self.commit_failure = "disconnect"
        self.requests: list[RequestRecord] = []
        self._lock = threading.Lock()
        self._httpd: _HubHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------------------------------

    def start(self) -> HubServer:
        if self._httpd is not None:
            raise RuntimeError("The server is already running")
        self._httpd = _HubHTTPServer(("127.0.0.1", 0), self)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        assert self._thread is not None
        self._thread.join(timeout=5)
        self._httpd = self._thread = None

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("The server is not running")
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    # -- policy -------------------------------------------------------------------------------------------------

    def can_write(self, user: str, namespace: str) -> bool:
        return user == namespace or user in self.orgs.get(namespace, ())

    def _take_commit_failure(self) -> str | None:
        with self._lock:
            if self.fail_next_commits <= 0:
                return None
            if self.commit_failure not in COMMIT_FAILURES:
                raise ValueError(f"commit_failure must be one of {COMMIT_FAILURES}, not {self.commit_failure!r}")
            self.fail_next_commits -= 1
            return self.commit_failure

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self.requests.append(record)

    # -- helpers for tests: seed and inspect repos without going through HTTP --------------------------------------

    def _repo(self, repo_id: str, repo_type: str) -> Repo:
        repo = self.store.repo(repo_type, repo_id)
        if repo is None:
            raise KeyError(f"No {repo_type} repo {repo_id}")
        return repo

    def create_repo(self, repo_id: str, *, repo_type: str = "model", private: bool = False) -> None:
        self.store.create_repo(repo_type, repo_id, private=private, author=repo_id.split("/")[0])

    def commit(
        self,
        repo_id: str,
        files: Mapping[str, bytes],
        *,
        deletions: Iterable[str] = (),
        message: str = "Seed files",
        branch: str = DEFAULT_BRANCH,
        repo_type: str = "model",
    ) -> str:
        """Commits `files` (and deletes `deletions`) on `branch`; returns the new commit id."""
        changes = [FileChange(path, None) for path in deletions] + [FileChange(p, c) for p, c in files.items()]
        repo = self._repo(repo_id, repo_type)
        return self.store.commit(repo, branch, changes, title=message, author=repo.namespace).oid

    def files(self, repo_id: str, revision: str = DEFAULT_BRANCH, *, repo_type: str = "model") -> dict[str, bytes]:
        tree = self._repo(repo_id, repo_type).commit_at(revision).tree
        return {path: self.store.blob(oid) for path, oid in sorted(tree.items())}

    def commits(self, repo_id: str, revision: str = DEFAULT_BRANCH, *, repo_type: str = "model") -> list[Commit]:
        """The history of `revision`, newest first (the repo's initial commit last)."""
        return self._repo(repo_id, repo_type).history(revision)

    def branches(self, repo_id: str, *, repo_type: str = "model") -> dict[str, str]:
        return dict(self._repo(repo_id, repo_type).branches)

    def repo_exists(self, repo_id: str, *, repo_type: str = "model") -> bool:
        return self.store.repo(repo_type, repo_id) is not None

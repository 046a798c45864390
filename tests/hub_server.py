"""A hub-protocol server for the tests, with the endpoints this project's pushes and loads call and no others (no
installable server accepts uploads: olah, the hub-protocol server on PyPI, is read-only).

What huggingface_hub 2.4 and transformers 5.24 call when `cogview-push`, `cogview-train --push_to_hub` and
`CogViewPipeline.push_to_hub` push a model repo and `from_pretrained` / `snapshot_download` read it back, with
`HF_HUB_DISABLE_XET=1`: whoami, create and delete a repo, create a branch, preupload + commit (every file "regular", so
its content travels base64-encoded inside the NDJSON commit), the card's YAML check, repo info, the file tree and file
downloads by branch or commit. Repos hold real commits (snapshots with 40-hex ids) on branches. Stdlib only.

    with HubServer(tokens={"hf_test": "you"}) as server:   # 127.0.0.1, a free port, a daemon thread
        ... run the client with HF_ENDPOINT=server.url HF_HUB_DISABLE_XET=1 HF_TOKEN=hf_test ...
        server.files("you/repo")                            # {"config.json": b"...", ...}

The client reads HF_ENDPOINT when huggingface_hub is imported, so run it in a subprocess pointed at `server.url`.
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
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit


DEFAULT_BRANCH = "main"
COMMIT_FAILURES = ("disconnect", "error")
INITIAL_GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"  # what the hub's first commit holds (shortened)


class HubError(Exception):
    """An error answer: status, message, and the X-Error-Code that huggingface_hub maps to its exception classes."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, dict(headers or {})


def git_blob_oid(data: bytes) -> str:
    """git's blob id: the hub reports it as a file's `oid` and ETag, and the client compares it."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass(frozen=True)
class Commit:
    oid: str
    parent: str | None
    title: str
    date: str
    tree: dict[str, str]  # path -> blob oid: the whole snapshot


@dataclass
class Repo:
    repo_id: str
    private: bool
    branches: dict[str, str] = field(default_factory=dict)  # name -> commit oid
    commits: dict[str, Commit] = field(default_factory=dict)

    def commit_at(self, revision: str) -> Commit:
        """A branch, `refs/heads/<branch>` or a full commit id; else the hub's RevisionNotFound."""
        name = revision.removeprefix("refs/heads/")
        oid = self.branches.get(name, revision)
        if oid not in self.commits:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return self.commits[oid]

    def history(self, revision: str) -> list[Commit]:
        """Commits reachable from `revision`, newest first."""
        commits, commit = [], self.commit_at(revision)
        while commit is not None:
            commits.append(commit)
            commit = self.commits[commit.parent] if commit.parent else None
        return commits


class HubStore:
    """Model repos, their commits and the blobs, in memory."""

    def __init__(self):
        self.lock = threading.RLock()
        self.repos: dict[str, Repo] = {}
        self.blobs: dict[str, bytes] = {}
        self._counter = itertools.count()  # two otherwise identical commits get distinct ids

    def create_repo(self, repo_id: str, private: bool) -> None:
        with self.lock:
            if repo_id in self.repos:
                raise HubError(409, "You already created this model repo")
            repo = self.repos[repo_id] = Repo(repo_id, private)
            repo.branches[DEFAULT_BRANCH] = self._commit(repo, None, {".gitattributes": INITIAL_GITATTRIBUTES}, "initial commit").oid

    def commit(self, repo: Repo, branch: str, files: Mapping[str, bytes], title: str) -> Commit:
        with self.lock:
            if branch not in repo.branches:
                raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            commit = self._commit(repo, repo.branches[branch], files, title)
            repo.branches[branch] = commit.oid
            return commit

    def _commit(self, repo: Repo, parent: str | None, files: Mapping[str, bytes], title: str) -> Commit:
        tree = dict(repo.commits[parent].tree) if parent else {}
        for path, content in files.items():
            tree[path] = git_blob_oid(content)
            self.blobs[tree[path]] = content
        identity = json.dumps([parent, sorted(tree.items()), title, next(self._counter)])
        commit = Commit(hashlib.sha1(identity.encode()).hexdigest(), parent, title, now_iso(), tree)
        repo.commits[commit.oid] = commit
        return commit


def card_metadata_error(text: str) -> str | None:
    """The hub refuses a README whose metadata block (`---` ... `---`) is opened and never closed."""
    lines = text.splitlines()
    if lines and lines[0].strip() == "---" and not any(line.strip() == "---" for line in lines[1:]):
        return "The metadata block of README.md is not closed by a '---' line"
    return None


def parse_commit_payload(body: bytes) -> tuple[str, dict[str, bytes]]:
    """The NDJSON that huggingface_hub's `_send_commit` posts: a header line (the summary), then one line per file."""
    summary, files = "", {}
    for line in filter(bytes.strip, body.splitlines()):
        item = json.loads(line)
        key, value = item.get("key"), item.get("value") or {}
        if key == "header":
            summary = value.get("summary") or ""
        elif key == "file":
            content = value.get("content", "")
            files[value["path"]] = base64.b64decode(content) if value.get("encoding") == "base64" else content.encode()
        else:  # deletions, copies, LFS files: nothing this project sends
            raise HubError(400, f"This test server takes added files only, not {key}")
    if not summary:
        raise HubError(400, "A commit needs a summary")
    return summary, files


_REPO = r"/api/models/(?P<namespace>[^/]+)/(?P<name>[^/]+)"
_REV = r"(?P<revision>[^/]+)"
# (methods, path pattern, handler name); groups are URL-decoded before the call
ROUTES: list[tuple[tuple[str, ...], re.Pattern[str], str]] = [
    (("GET",), re.compile(r"/api/whoami-v2"), "whoami"),
    (("GET",), re.compile(r"/api/agent-harnesses"), "agent_harnesses"),
    (("POST",), re.compile(r"/api/repos/create"), "create_repo"),
    (("DELETE",), re.compile(r"/api/repos/delete"), "delete_repo"),
    (("POST",), re.compile(r"/api/validate-yaml"), "validate_yaml"),
    (("GET",), re.compile(_REPO + r"(?:/revision/" + _REV + ")?"), "repo_info"),
    (("GET",), re.compile(_REPO + r"/tree/" + _REV + r"(?:/(?P<path>.*))?"), "tree"),
    (("POST",), re.compile(_REPO + r"/preupload/" + _REV), "preupload"),
    (("POST",), re.compile(_REPO + r"/commit/" + _REV), "commit"),
    (("POST",), re.compile(_REPO + r"/branch/(?P<branch>[^/]+)"), "create_branch"),
    (("GET", "HEAD"), re.compile(r"/(?P<namespace>[^/]+)/(?P<name>[^/]+)/resolve/" + _REV + r"/(?P<path>.+)"), "resolve"),
]


class _HubHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, hub: HubServer):
        self.hub = hub
        super().__init__(("127.0.0.1", 0), _HubRequestHandler)

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

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # -- plumbing -----------------------------------------------------------------------------------------------

    @property
    def hub(self) -> HubServer:
        return self.server.hub

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        self._query = parse_qs(url.query)
        self._body_bytes: bytes | None = None
        try:
            for methods, pattern, name in ROUTES:
                match = pattern.fullmatch(url.path)
                if match and method in methods:
                    getattr(self, name)(method, **{key: unquote(value) for key, value in match.groupdict().items() if value is not None})
                    return
            raise HubError(404, f"Sorry, we can't find the page you are looking for: {method} {url.path}")
        except HubError as error:
            self._body()  # drain the request so the connection stays usable
            headers = {**error.headers, "X-Error-Message": error.message, **({"X-Error-Code": error.code} if error.code else {})}
            self._send_json({"error": error.message}, status=error.status, headers=headers)
        except (BrokenPipeError, ConnectionResetError):  # the client went away mid-answer
            self.close_connection = True
        except Exception as error:  # a bug here: answer it, so the client's test fails with the reason
            traceback.print_exc()
            self._send_json({"error": f"hub_server: {error!r}"}, status=500)

    def _body(self) -> bytes:
        if self._body_bytes is None:
            self._body_bytes = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        return self._body_bytes

    def _json_body(self) -> dict[str, Any]:
        body = self._body()
        return json.loads(body) if body else {}

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

    # -- access -------------------------------------------------------------------------------------------------

    def _user(self) -> str | None:
        """The token's user; an unknown token is refused everywhere, reads included, as on the hub."""
        header = self.headers.get("Authorization")
        if header is None:
            return None
        token = header.partition(" ")[2].strip()
        if token not in self.hub.tokens:
            raise HubError(401, "Invalid credentials in Authorization header")
        return self.hub.tokens[token]

    def _require_user(self) -> str:
        user = self._user()
        if user is None:
            raise HubError(401, "You must be authenticated to access this resource")
        return user

    def _readable_repo(self, namespace: str, name: str) -> Repo:
        self._user()
        repo = self.hub.store.repos.get(f"{namespace}/{name}")
        if repo is None:
            raise HubError(404, "Repository not found", "RepoNotFound")
        return repo

    def _writable_repo(self, namespace: str, name: str) -> Repo:
        user = self._require_user()
        repo = self._readable_repo(namespace, name)
        if user != namespace:
            raise HubError(403, f"You don't have the rights to write to {repo.repo_id}")
        return repo

    # -- account and repos --------------------------------------------------------------------------------------

    def whoami(self, method: str) -> None:
        user = self._require_user()
        self._send_json({"type": "user", "name": user, "orgs": [], "auth": {"type": "access_token", "accessToken": {"role": "write"}}})

    def agent_harnesses(self, method: str) -> None:
        # huggingface_hub fetches this registry to tag its user agent; an empty one detects nothing
        self._send_json({"standardEnvVars": [], "harnesses": {}})

    def _repo_id(self, body: Mapping[str, Any], user: str) -> str:
        if (body.get("type") or "model") != "model":
            raise HubError(400, "This test server holds model repos only")
        return f"{body.get('organization') or user}/{body['name']}"

    def create_repo(self, method: str) -> None:
        user = self._require_user()
        body = self._json_body()
        repo_id = self._repo_id(body, user)
        if repo_id.split("/")[0] != user:
            raise HubError(403, f"You don't have the rights to create a model under the namespace {repo_id.split('/')[0]}")
        url = f"{self.hub.url}/{repo_id}"
        try:
            self.hub.store.create_repo(repo_id, private=body.get("visibility", "private" if body.get("private") else "public") != "public")
        except HubError as error:  # create_repo(exist_ok=True) reads the 409 and keeps going
            self._send_json({"error": error.message, "url": url}, status=409, headers={"X-Error-Message": error.message})
            return
        self._send_json({"url": url, "name": repo_id, "id": repo_id})

    def delete_repo(self, method: str) -> None:
        user = self._require_user()
        repo_id = self._repo_id(self._json_body(), user)
        self._writable_repo(*repo_id.split("/"))
        with self.hub.store.lock:
            del self.hub.store.repos[repo_id]
        self._send_json({})

    def validate_yaml(self, method: str) -> None:
        error = card_metadata_error(self._json_body().get("content") or "")
        self._send_json({"errors": [{"message": error}] if error else [], "warnings": []}, status=400 if error else 200)

    def create_branch(self, method: str, namespace: str, name: str, branch: str) -> None:
        repo = self._writable_repo(namespace, name)
        start = repo.commit_at(self._json_body().get("startingPoint") or DEFAULT_BRANCH).oid
        with self.hub.store.lock:
            if branch in repo.branches:
                raise HubError(409, f"Reference already exists: refs/heads/{branch}")
            repo.branches[branch] = start
        self._send_json({})

    # -- reads --------------------------------------------------------------------------------------------------

    def repo_info(self, method: str, namespace: str, name: str, revision: str = DEFAULT_BRANCH) -> None:
        repo = self._readable_repo(namespace, name)
        commit = repo.commit_at(revision)
        blobs = self._query.get("blobs", ["false"])[-1].lower() == "true"
        siblings = [
            {"rfilename": path, **({"size": len(self.hub.store.blobs[oid]), "blobId": oid} if blobs else {})}
            for path, oid in sorted(commit.tree.items())
        ]
        info = {"_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24], "id": repo.repo_id, "modelId": repo.repo_id,
                "author": repo.repo_id.split("/")[0], "sha": commit.oid, "lastModified": commit.date, "private": repo.private,
                "gated": False, "disabled": False, "downloads": 0, "likes": 0, "tags": [], "siblings": siblings}  # fmt: skip
        expand = self._query.get("expand") or self._query.get("expand[]")
        if expand:  # only the asked properties, as the hub does
            info = {key: value for key, value in info.items() if key in ("_id", "id") or key in expand}
        self._send_json(info)

    def tree(self, method: str, namespace: str, name: str, revision: str, path: str = "") -> None:
        """Every file under `path` (the client asks recursively), with the folders on the way."""
        commit = self._readable_repo(namespace, name).commit_at(revision)
        prefix = path.strip("/") + "/" if path.strip("/") else ""
        entries, folders = [], set()
        for file_path, oid in sorted(commit.tree.items()):
            if not file_path.startswith(prefix):
                continue
            parts = file_path.split("/")
            for depth in range(1, len(parts)):
                folder = "/".join(parts[:depth])
                if folder.startswith(prefix) and folder not in folders:
                    folders.add(folder)
                    entries.append({"type": "directory", "path": folder, "oid": hashlib.sha1(folder.encode()).hexdigest(), "size": 0})
            entries.append({"type": "file", "path": file_path, "oid": oid, "size": len(self.hub.store.blobs[oid])})
        if prefix and not entries:
            raise HubError(404, f"{path} does not exist on {revision}", "EntryNotFound", {"X-Repo-Commit": commit.oid})
        self._send_json(entries)

    def resolve(self, method: str, namespace: str, name: str, revision: str, path: str) -> None:
        commit = self._readable_repo(namespace, name).commit_at(revision)
        oid = commit.tree.get(path)
        if oid is None:  # X-Repo-Commit lets the client cache that the file does not exist at this commit
            raise HubError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": commit.oid})
        self._send(200, self.hub.store.blobs[oid], {"X-Repo-Commit": commit.oid, "ETag": f'"{oid}"'}, "application/octet-stream")

    # -- writes -------------------------------------------------------------------------------------------------

    def preupload(self, method: str, namespace: str, name: str, revision: str) -> None:
        tree = self._writable_repo(namespace, name).commit_at(revision).tree
        files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": tree.get(f["path"])} for f in self._json_body().get("files", [])]
        self._send_json({"files": files})

    def commit(self, method: str, namespace: str, name: str, revision: str) -> None:
        body = self._body()
        failure = self.hub.take_commit_failure()
        if failure == "disconnect":  # what the client sees when the network fails mid-request: nothing committed
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if failure == "error":
            raise HubError(500, "Internal Error - We're working hard to fix this as soon as possible!")
        repo = self._writable_repo(namespace, name)
        title, files = parse_commit_payload(body)
        commit = self.hub.store.commit(repo, revision.removeprefix("refs/heads/"), files, title)
        url = f"{self.hub.url}/{repo.repo_id}"
        self._send_json({"success": True, "commitOid": commit.oid, "commitUrl": f"{url}/commit/{commit.oid}", "pullRequestUrl": None})


class HubServer:
    """The server: `start()` (or `with`) binds 127.0.0.1 on a free port and serves from a daemon thread.

    tokens: token -> user name; a user writes in its own namespace.
    fail_next_commits / commit_failure: the next N commit requests fail: "disconnect" closes the connection without
        an answer, "error" answers 500; neither commits anything.
    """

    def __init__(self, tokens: Mapping[str, str]):
        self.tokens = dict(tokens)
        self.store = HubStore()
        self.fail_next_commits = 0
        self.commit_failure = "disconnect"
        self._lock = threading.Lock()
        self._httpd: _HubHTTPServer | None = None

    def start(self) -> HubServer:
        self._httpd = _HubHTTPServer(self)
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def take_commit_failure(self) -> str | None:
        with self._lock:
            if self.fail_next_commits <= 0:
                return None
            if self.commit_failure not in COMMIT_FAILURES:
                raise ValueError(f"commit_failure must be one of {COMMIT_FAILURES}, not {self.commit_failure!r}")
            self.fail_next_commits -= 1
            return self.commit_failure

    # -- what the tests read, without HTTP ------------------------------------------------------------------------

    def files(self, repo_id: str, revision: str = DEFAULT_BRANCH) -> dict[str, bytes]:
        return {path: self.store.blobs[oid] for path, oid in sorted(self.store.repos[repo_id].commit_at(revision).tree.items())}

    def commits(self, repo_id: str, revision: str = DEFAULT_BRANCH) -> list[Commit]:
        """The history of `revision`, newest first (the repo's initial commit last)."""
        return self.store.repos[repo_id].history(revision)

    def branches(self, repo_id: str) -> dict[str, str]:
        return dict(self.store.repos[repo_id].branches)

    def repo_exists(self, repo_id: str) -> bool:
        return repo_id in self.store.repos

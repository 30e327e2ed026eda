"""A Hugging Face Hub server on loopback, for tests of the real ``huggingface_hub`` client.

It speaks the subset of the Hub's HTTP API that ``huggingface_hub`` uses to push and pull repositories:

- ``POST /api/repos/create``, ``GET /api/whoami-v2``, ``POST /api/validate-yaml``
- ``POST /api/{type}s/{repo_id}/preupload/{revision}`` (every file is a "regular" file, sent inline in the
  commit: the LFS/Xet transfer protocols are not spoken)
- ``POST /api/{type}s/{repo_id}/commit/{revision}`` (NDJSON: header, file, deletedFile, deletedFolder)
- ``POST /api/{type}s/{repo_id}/branch/{branch}``
- ``GET /api/{type}s/{repo_id}[/revision/{revision}]`` (repo info with siblings and card metadata)
- ``GET /api/{type}s/{repo_id}/tree/{revision}[/{path}]`` (``recursive`` supported)
- ``HEAD``/``GET /[{type}s/]{repo_id}/resolve/{revision}/{path}`` with ``ETag`` and ``X-Repo-Commit``

Repositories live on disk under ``root``: every commit is a full snapshot folder ``commits/<sha>/`` and ``meta.json``
holds the branches, the owner and the visibility. A commit is built in a staging folder and published by renaming it
and then rewriting ``meta.json`` through a rename, so a commit that fails half-way leaves the repository unchanged.

Tokens map to user names (``tokens``); writes need the owner's token, reads of a private repository too.
``fail_next_commit(status, message)`` makes the next commit fail after half of its operations were applied.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

REPO_TYPES = ("model", "dataset", "space")
# A URL prefix for repo pages and file resolution: models have none.
URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}


class HubError(Exception):
    """An HTTP error answered to the client, with the Hub's error headers."""

    def __init__(self, status: int, message: str, code: str | None = None, extra: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra or {}


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob, which the Hub uses as the ETag of regular files."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _safe_path(path: str) -> str:
    """A repo-relative POSIX path without ``..`` or absolute parts; raises ``HubError(400)`` otherwise."""
    parts = path.strip("/").split("/")
    if not path or path.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise HubError(400, f"Invalid path in repo: {path!r}")
    return "/".join(parts)


class HubStore:
    """Repositories on disk: ``root/<type>s/<namespace>/<name>/{meta.json, commits/<sha>/...}``."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.lock = threading.Lock()

    def repo_dir(self, repo_type: str, repo_id: str) -> Path:
        return self.root / f"{repo_type}s" / repo_id

    def meta(self, repo_type: str, repo_id: str) -> dict:
        path = self.repo_dir(repo_type, repo_id) / "meta.json"
        if not path.is_file():
            raise HubError(404, "Repository not found", "RepoNotFound")
        return json.loads(path.read_text())

    def write_meta(self, repo_type: str, repo_id: str, meta: dict) -> None:
        path = self.repo_dir(repo_type, repo_id) / "meta.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(meta, indent=1))
        tmp.replace(path)

    def resolve(self, meta: dict, revision: str) -> str:
        """The commit sha of a branch name or a full commit sha."""
        if revision in meta["branches"]:
            return meta["branches"][revision]
        if revision in meta["commits"]:
            return revision
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def snapshot(self, repo_type: str, repo_id: str, sha: str) -> Path:
        return self.repo_dir(repo_type, repo_id) / "commits" / sha

    def files(self, repo_type: str, repo_id: str, sha: str) -> dict[str, Path]:
        """Every file of a commit: repo path -> file on disk."""
        base = self.snapshot(repo_type, repo_id, sha)
        return {p.relative_to(base).as_posix(): p for p in sorted(base.rglob("*")) if p.is_file()}

    def create(self, repo_type: str, repo_id: str, owner: str, private: bool, url: str) -> None:
        with self.lock:
            repo_dir = self.repo_dir(repo_type, repo_id)
            if (repo_dir / "meta.json").exists():
                raise HubError(409, f"You already created this {repo_type} repo", extra={"url": url})
            meta = {"owner": owner, "private": private, "branches": {}, "commits": {}}
            (repo_dir / "commits").mkdir(parents=True)
            sha = self._publish(repo_type, repo_id, meta, parent=None, operations=[], summary="initial commit")
            meta["branches"]["main"] = sha
            self.write_meta(repo_type, repo_id, meta)

    def create_branch(self, repo_type: str, repo_id: str, branch: str, starting_point: str | None) -> None:
        with self.lock:
            meta = self.meta(repo_type, repo_id)
            if branch in meta["branches"]:
                raise HubError(409, f"Reference already exists: refs/heads/{branch}")
            meta["branches"][branch] = self.resolve(meta, starting_point or "main")
            self.write_meta(repo_type, repo_id, meta)

    def commit(
        self, repo_type: str, repo_id: str, revision: str, operations: list[dict], summary: str, fail: HubError | None
    ) -> str:
        """Applies ``operations`` on top of ``revision`` (a branch) and moves the branch; returns the new sha."""
        with self.lock:
            meta = self.meta(repo_type, repo_id)
            if revision not in meta["branches"]:
                raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
            sha = self._publish(repo_type, repo_id, meta, meta["branches"][revision], operations, summary, fail)
            meta["branches"][revision] = sha
            self.write_meta(repo_type, repo_id, meta)
            return sha

    def _publish(
        self,
        repo_type: str,
        repo_id: str,
        meta: dict,
        parent: str | None,
        operations: list[dict],
        summary: str,
        fail: HubError | None = None,
    ) -> str:
        """Builds the commit in a staging folder, then renames it into ``commits/``; records it in ``meta``."""
        commits = self.repo_dir(repo_type, repo_id) / "commits"
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=commits))
        try:
            if parent is not None:
                shutil.copytree(self.snapshot(repo_type, repo_id, parent), staging, dirs_exist_ok=True)
            for index, op in enumerate(operations):
                if fail is not None and index >= len(operations) // 2:
                    raise fail
                self._apply(staging, op)
            digest = hashlib.sha1(f"{parent}\n{summary}\n{time.time_ns()}".encode())
            for path, file in sorted((p.relative_to(staging).as_posix(), p) for p in staging.rglob("*")):
                if file.is_file():
                    digest.update(path.encode() + b"\0" + file.read_bytes())
            sha = digest.hexdigest()
            staging.rename(commits / sha)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        meta["commits"][sha] = {"parent": parent, "summary": summary}
        return sha

    @staticmethod
    def _apply(snapshot: Path, op: dict) -> None:
        key, value = op["key"], op["value"]
        path = snapshot / _safe_path(value["path"])
        if key == "file":
            if value.get("encoding") != "base64":
                raise HubError(400, f"Unsupported encoding for {value['path']!r}: {value.get('encoding')!r}")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(base64.b64decode(value["content"]))
        elif key == "deletedFile":
            if not path.is_file():
                raise HubError(404, f"A file with this name doesn't exist: {value['path']}", "EntryNotFound")
            path.unlink()
        elif key == "deletedFolder":
            if not path.is_dir():
                raise HubError(404, f"A folder with this name doesn't exist: {value['path']}", "EntryNotFound")
            shutil.rmtree(path)
        else:
            raise HubError(400, f"Unsupported commit operation {key!r} (this test server speaks no LFS)")


class HubServer(ThreadingHTTPServer):
    """The loopback Hub. ``url`` is the endpoint to give the client (``HF_ENDPOINT``)."""

    daemon_threads = True

    def __init__(self, root: str | Path, tokens: dict[str, str] | None = None, host: str = "127.0.0.1"):
        super().__init__((host, 0), _Handler)
        self.store = HubStore(Path(root))
        self.tokens = dict(tokens or {})
        self.url = f"http://{host}:{self.server_address[1]}"
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request, for tests
        self._fail: HubError | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> HubServer:
        self._thread = threading.Thread(target=self.serve_forever, name="hub-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    def fail_next_commit(self, status: int = 500, message: str = "Internal Error: storage backend failed") -> None:
        """The next commit fails with ``status`` after half of its operations were applied."""
        self._fail = HubError(status, message)

    def take_failure(self) -> HubError | None:
        fail, self._fail = self._fail, None
        return fail


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: HubServer

    def log_message(self, format, *args):  # noqa: A002 - silence the per-request log on stderr
        pass

    # --- plumbing -------------------------------------------------------------------------------------------------
    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        self.query = parse_qs(url.query)
        self.server.requests.append((method, url.path))
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) if method == "POST" else b""
        segments = [unquote(s) for s in url.path.split("/")[1:]]
        try:
            self._route(method, segments, body)
        except HubError as err:
            headers = {"X-Error-Message": err.message}
            if err.code:
                headers["X-Error-Code"] = err.code
            self._send(
                err.status,
                json.dumps({"error": err.message, **err.extra}).encode(),
                headers,
                head_only=method == "HEAD",
            )

    def _send(self, status: int, body: bytes, headers: dict | None = None, head_only: bool = False) -> None:
        self.send_response(status)
        headers = {"Content-Type": "application/json", **(headers or {})}
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head_only:
            self.wfile.write(body)

    def _json(self, payload, status: int = 200) -> None:
        self._send(status, json.dumps(payload).encode())

    def _user(self, required: bool) -> str | None:
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            if required:
                raise HubError(401, "You must be authenticated to access this resource")
            return None
        user = self.server.tokens.get(auth[len("Bearer ") :])
        if user is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        return user

    def _readable_meta(self, repo_type: str, repo_id: str) -> dict:
        meta = self.server.store.meta(repo_type, repo_id)
        if meta["private"] and self._user(required=False) != meta["owner"]:
            raise HubError(404, "Repository not found", "RepoNotFound")  # the Hub hides private repos
        return meta

    def _writable_meta(self, repo_type: str, repo_id: str) -> dict:
        user = self._user(required=True)
        meta = self.server.store.meta(repo_type, repo_id)
        if user != meta["owner"]:
            raise HubError(403, f"You don't have the rights to write to {repo_id}")
        return meta

    # --- routes ---------------------------------------------------------------------------------------------------
    def _route(self, method: str, seg: list[str], body: bytes) -> None:
        if seg[0] == "api":
            if seg[1:] == ["repos", "create"] and method == "POST":
                return self._create_repo(json.loads(body))
            if seg[1:] == ["whoami-v2"]:
                return self._json({"type": "user", "name": self._user(required=True), "orgs": []})
            if seg[1:] == ["validate-yaml"] and method == "POST":
                return self._validate_yaml(json.loads(body))
            if len(seg) >= 4 and seg[1].endswith("s") and seg[1][:-1] in REPO_TYPES:
                return self._repo_api(method, seg[1][:-1], f"{seg[2]}/{seg[3]}", seg[4:], body)
        else:
            repo_type = next((t for t, p in URL_PREFIXES.items() if p and seg[0] == p.rstrip("/")), "model")
            seg = seg[1:] if repo_type != "model" else seg
            if len(seg) >= 5 and seg[2] == "resolve" and method in ("GET", "HEAD"):
                return self._resolve(method, repo_type, f"{seg[0]}/{seg[1]}", seg[3], "/".join(seg[4:]))
        raise HubError(404, f"Not found: {method} {self.path}")

    def _repo_api(self, method: str, repo_type: str, repo_id: str, rest: list[str], body: bytes) -> None:
        store = self.server.store
        if method == "GET" and rest in ([], [""]):
            return self._info(repo_type, repo_id, "main")
        action, args = rest[0], rest[1:]
        if method == "GET" and action == "revision" and args:
            return self._info(repo_type, repo_id, "/".join(args))
        if method == "GET" and action == "tree" and args:
            return self._tree(repo_type, repo_id, args[0], "/".join(args[1:]))
        if method == "POST" and action == "preupload" and args:
            return self._preupload(repo_type, repo_id, "/".join(args), json.loads(body))
        if method == "POST" and action == "commit" and args:
            return self._commit(repo_type, repo_id, "/".join(args), body)
        if method == "POST" and action == "branch" and args:
            self._writable_meta(repo_type, repo_id)
            payload = json.loads(body or b"{}")
            store.create_branch(repo_type, repo_id, "/".join(args), payload.get("startingPoint"))
            return self._json({})
        raise HubError(404, f"Not found: {method} {self.path}")

    def _create_repo(self, payload: dict) -> None:
        user = self._user(required=True)
        repo_type = payload.get("type") or "model"
        namespace = payload.get("organization") or user
        if namespace != user:
            raise HubError(403, f"You don't have the rights to create a repo under the namespace {namespace!r}")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}", payload.get("name") or ""):
            raise HubError(400, f"Invalid repo name: {payload.get('name')!r}")
        repo_id = f"{namespace}/{payload['name']}"
        private = payload.get("visibility", "public") == "private"
        url = f"{self.server.url}/{URL_PREFIXES[repo_type]}{repo_id}"
        self.server.store.create(repo_type, repo_id, owner=user, private=private, url=url)
        self._json({"url": url, "name": repo_id})

    def _validate_yaml(self, payload: dict) -> None:
        match = re.match(r"^---\n(.*?)\n---\n", payload.get("content", ""), re.S)
        try:
            metadata = yaml.safe_load(match.group(1)) if match else {}
        except yaml.YAMLError as err:
            return self._json({"errors": [{"message": f"Invalid YAML: {err}"}]}, status=400)
        if not isinstance(metadata, dict):
            return self._json({"errors": [{"message": "The metadata must be a mapping"}]}, status=400)
        self._json({"errors": [], "warnings": []})

    def _info(self, repo_type: str, repo_id: str, revision: str) -> None:
        meta = self._readable_meta(repo_type, repo_id)
        sha = self.server.store.resolve(meta, revision)
        files = self.server.store.files(repo_type, repo_id, sha)
        card = {}
        if "README.md" in files:
            match = re.match(r"^---\n(.*?)\n---\n", files["README.md"].read_text(), re.S)
            card = (yaml.safe_load(match.group(1)) or {}) if match else {}
        self._json(
            {
                "id": repo_id,
                "modelId": repo_id,
                "author": meta["owner"],
                "sha": sha,
                "private": meta["private"],
                "disabled": False,
                "gated": False,
                "tags": list(card.get("tags") or []),
                "library_name": card.get("library_name"),
                "pipeline_tag": card.get("pipeline_tag"),
                "cardData": card,
                "siblings": [{"rfilename": path, "size": file.stat().st_size} for path, file in files.items()],
            }
        )

    def _tree(self, repo_type: str, repo_id: str, revision: str, folder: str) -> None:
        meta = self._readable_meta(repo_type, repo_id)
        sha = self.server.store.resolve(meta, revision)
        base = self.server.store.snapshot(repo_type, repo_id, sha)
        root = base / _safe_path(folder) if folder else base
        if not root.is_dir():
            raise HubError(404, f"Folder not found: {folder}", "EntryNotFound")
        recursive = self.query.get("recursive", ["false"])[0].lower() in ("1", "true")
        entries = sorted(root.rglob("*") if recursive else root.iterdir())
        listing = []
        for entry in entries:
            path = entry.relative_to(base).as_posix()
            if entry.is_dir():
                listing.append(
                    {"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "size": 0, "path": path}
                )
            else:
                data = entry.read_bytes()
                listing.append({"type": "file", "oid": git_blob_sha1(data), "size": len(data), "path": path})
        self._json(listing)

    def _preupload(self, repo_type: str, repo_id: str, revision: str, payload: dict) -> None:
        meta = self._writable_meta(repo_type, repo_id)
        existing = self.server.store.files(repo_type, repo_id, self.server.store.resolve(meta, revision))
        files = []
        for file in payload.get("files", []):
            path = _safe_path(file["path"])
            oid = git_blob_sha1(existing[path].read_bytes()) if path in existing else None
            files.append({"path": file["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": oid})
        self._json({"files": files, "commitOid": meta["branches"].get(revision)})

    def _commit(self, repo_type: str, repo_id: str, revision: str, body: bytes) -> None:
        self._writable_meta(repo_type, repo_id)
        if self.query.get("create_pr"):
            raise HubError(400, "This test server does not support pull requests (create_pr)")
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "The first line of a commit must be its header")
        summary = lines[0]["value"].get("summary") or ""
        sha = self.server.store.commit(repo_type, repo_id, revision, lines[1:], summary, self.server.take_failure())
        prefix = URL_PREFIXES[repo_type]
        self._json(
            {"success": True, "commitOid": sha, "commitUrl": f"{self.server.url}/{prefix}{repo_id}/commit/{sha}"}
        )

    def _resolve(self, method: str, repo_type: str, repo_id: str, revision: str, path: str) -> None:
        meta = self._readable_meta(repo_type, repo_id)
        sha = self.server.store.resolve(meta, revision)
        file = self.server.store.snapshot(repo_type, repo_id, sha) / _safe_path(path)
        if not file.is_file():
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
        data = file.read_bytes()
        headers = {"Content-Type": "application/octet-stream", "ETag": f'"{git_blob_sha1(data)}"', "X-Repo-Commit": sha}
        self._send(200, data, headers, head_only=method == "HEAD")

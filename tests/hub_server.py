"""A fake Hugging Face Hub for tests: the part of the HTTP API that huggingface_hub 2.4 uses to create a
repo and a branch, commit a folder (small files inline, large ones through git-LFS "basic" transfer),
list a tree and download files. All state is in memory, behind one lock.

    with FakeHub() as hub:                     # 127.0.0.1, free port
        api = HfApi(endpoint=hub.url, token="hf_fake")
        hub.repos["me/m"]["branches"]["v1"]    # {path: bytes}
        hub.repos["me/m"]["commits"]           # [{"branch", "message", "files", "lfs", "oid"}]
        hub.lfs_uploads                        # sha256 oids whose bytes came through an LFS PUT

Xet: with `hf_xet` installed the client uploads every LFS-mode file through Xet *without asking the
server* (and upload_folder switches to its multi-commit pipeline), so clients must set
HF_HUB_DISABLE_XET=1 (before importing huggingface_hub) or patch `huggingface_hub.constants.
HF_HUB_DISABLE_XET = True`. `client_env()` gives the variables for a subprocess. A forgotten switch
fails fast on the xet-write-token route. Like the real Hub, a new repo starts with one commit on
"main" holding `.gitattributes`.
"""

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from urllib.parse import parse_qs, unquote, urlsplit

LFS_THRESHOLD = 1 << 20  # bytes; the real Hub uses 10 MB plus the .gitattributes patterns
LFS_NAMES = re.compile(r"\.(safetensors|gguf|onnx)")  # also model.onnx_data, model.onnx.data
GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.gguf filter=lfs diff=lfs merge=lfs -text\n"


def is_lfs(path: str, size: int) -> bool:
    return size > 0 and (size > LFS_THRESHOLD or bool(LFS_NAMES.search(path.rsplit("/", 1)[-1])))


def git_oid(data: bytes) -> str:  # git blob sha1: the client's oid for regular files (sha256 for LFS)
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def blob_oid(path: str, data: bytes) -> str:
    return hashlib.sha256(data).hexdigest() if is_lfs(path, len(data)) else git_oid(data)


class HubError(Exception):  # -> status, {"error": message, **extra}, X-Error-Code (the client maps it)
    def __init__(self, status: int, message: str, code: str | None = None, **extra):
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra


REPO = r"/api/(?:models|datasets|spaces)/(?P<repo>[^/]+/[^/]+)"
GIT_REPO = r"/(?:(?:datasets|spaces)/)?(?P<repo>[^/]+/[^/]+)"  # outside /api, models have no prefix
REV = r"(?P<rev>[^/]+)"  # revisions arrive url-quoted as one segment (refs%2Fpr%2F1)
ROUTES = [(methods.split(), re.compile(pattern + "$"), name) for methods, pattern, name in [
    ("POST", r"/api/repos/create", "create_repo"),
    ("POST", r"/api/validate-yaml", "validate_yaml"),  # README.md front matter, checked before committing
    ("POST", rf"{REPO}/branch/{REV}", "create_branch"),
    ("POST", rf"{REPO}/preupload/{REV}", "preupload"),
    ("POST", rf"{REPO}/commit/{REV}", "commit"),
    ("GET", rf"{REPO}/tree/{REV}(?:/(?P<path>.+))?", "tree"),
    ("GET", rf"{REPO}/xet-(?:read|write)-token(?:/.*)?", "xet_token"),
    ("GET", rf"{REPO}(?:/revision/{REV})?", "repo_info"),
    ("POST", rf"{GIT_REPO}\.git/info/lfs/objects/batch", "lfs_batch"),
    ("PUT", r"/_lfs/(?P<oid>[0-9a-f]{64})", "lfs_put"),  # the "href" that lfs_batch hands out
    ("HEAD GET", rf"{GIT_REPO}/resolve/{REV}/(?P<path>.+)", "resolve"),
]]


class FakeHub:
    def __init__(self):
        self.repos: dict[str, dict] = {}  # + "heads": {branch: commit oid}
        self.lfs_uploads: list[str] = []
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request, for debugging
        self.url = ""
        self._lfs: dict[str, bytes] = {}  # sha256 -> bytes, shared by all repos
        self._snapshots: dict[str, dict] = {}  # commit oid -> {path: bytes}, so revision=<sha> works
        self._lock = threading.Lock()

    def start(self) -> str:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), type("Handler", (_Handler,), {"hub": self}))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        return self.url

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def client_env(self) -> dict[str, str]:
        return {"HF_ENDPOINT": self.url, "HF_TOKEN": "hf_fake", "HF_HUB_DISABLE_XET": "1",
                "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_OFFLINE": "0"}

    # -- helpers ----------------------------------------------------------------------------------
    def _repo(self, req, write=False) -> dict:
        if write and not req.authed:
            raise HubError(401, "Invalid credentials in Authorization header")
        repo = self.repos.get(req.repo)
        if repo is None or (repo["private"] and not req.authed):
            raise HubError(404, f"Repository Not Found for url: {req.path}", "RepoNotFound")
        return repo

    def _files(self, repo: dict, rev: str) -> tuple[dict, str]:  # -> ({path: bytes}, commit oid)
        if rev in repo["branches"]:
            return repo["branches"][rev], repo["heads"][rev]
        if rev in self._snapshots:
            return self._snapshots[rev], rev
        raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")

    def _record(self, repo_id, branch, files, message, changed, lfs) -> str:
        repo = self.repos[repo_id]
        oid = hashlib.sha1(f"{repo_id}@{branch}#{len(self._snapshots)}:{message}".encode()).hexdigest()
        repo["branches"][branch], repo["heads"][branch], self._snapshots[oid] = files, oid, dict(files)
        repo["commits"].append({"branch": branch, "message": message, "files": changed, "lfs": lfs, "oid": oid})
        return oid

    # -- routes: each returns (status, JSON-able or bytes, extra headers) --------------------------
    def create_repo(self, req):
        if not req.authed:
            raise HubError(401, "Invalid credentials in Authorization header")
        if not req.json.get("organization"):
            raise HubError(400, "FakeHub needs 'namespace/name' repo ids")
        repo_id = f"{req.json['organization']}/{req.json['name']}"
        url = f"{self.url}/" + {"dataset": "datasets/", "space": "spaces/"}.get(req.json.get("type"), "") + repo_id
        if repo_id in self.repos:  # exist_ok=True still reads "url" from this 409 body
            raise HubError(409, "You already created this model repo", url=url)
        self.repos[repo_id] = {"private": req.json.get("visibility") == "private", "branches": {}, "heads": {},
                               "commits": []}
        self._record(repo_id, "main", {".gitattributes": GITATTRIBUTES}, "initial commit", [".gitattributes"], [])
        return 200, {"url": url}, {}

    def validate_yaml(self, req):
        return 200, {"errors": [], "warnings": []}, {}

    def create_branch(self, req):  # body: {"startingPoint": rev} or {}; 409 if it exists (exist_ok)
        repo = self._repo(req, write=True)
        if req.rev in repo["branches"]:
            raise HubError(409, f"Reference already exists: refs/heads/{req.rev}")
        files, head = self._files(repo, req.json.get("startingPoint") or "main")
        repo["branches"][req.rev], repo["heads"][req.rev] = dict(files), head
        return 200, {}, {}

    def preupload(self, req):
        # Per file (path, size, base64 of its first 512 bytes): "regular" (inlined in the commit) or
        # "lfs"; "oid" is the current remote one, so the client leaves unchanged files out of the commit.
        files, _ = self._files(self._repo(req, write=True), req.rev)
        return 200, {"files": [
            {"path": f["path"], "uploadMode": "lfs" if is_lfs(f["path"], f["size"]) else "regular",
             "shouldIgnore": False, "oid": blob_oid(f["path"], files[f["path"]]) if f["path"] in files else None}
            for f in req.json["files"]]}, {}

    def lfs_batch(self, req):
        # git-LFS batch API. The client offers ["basic", "multipart"] (never "xet" in 2.4); we always pick
        # "basic" = one PUT of the whole object to "href". An object already stored gets no "actions".
        self._repo(req, write=True)
        objects = [{"oid": o["oid"], "size": o["size"], "authenticated": True} for o in req.json["objects"]]
        for o in objects:
            if o["oid"] not in self._lfs:
                o["actions"] = {"upload": {"href": f"{self.url}/_lfs/{o['oid']}"}}
        return 200, {"transfer": "basic", "objects": objects}, {}

    def lfs_put(self, req):  # sent without Authorization: on the Hub, href is a pre-signed storage URL
        if hashlib.sha256(req.body).hexdigest() != req.oid:
            raise HubError(400, f"sha256 mismatch for LFS object {req.oid}")
        self._lfs[req.oid] = req.body
        self.lfs_uploads.append(req.oid)
        return 200, b"", {}

    def commit(self, req):
        # NDJSON body: {"key": "header", "value": {"summary", "description", "parentCommit"?}}, then one
        # line per operation: "file" (base64 content), "lfsFile" (sha256 oid + size of an object PUT
        # before), "deletedFile" or "deletedFolder".
        repo = self._repo(req, write=True)
        old, head = self._files(repo, req.rev)
        if req.rev not in repo["branches"] or req.query.get("create_pr"):
            raise HubError(400, f"FakeHub commits to branches only (no pull requests), not {req.rev}")
        files, changed, lfs, message = dict(old), [], [], ""
        for line in req.body.splitlines():
            item = json.loads(line)
            key, v = item["key"], item["value"]
            if key == "header":
                message = v["summary"]
                if v.get("parentCommit") not in (None, head):
                    raise HubError(412, "A commit has happened since. Please refresh and try again.")
            elif key == "file":
                files[v["path"]] = base64.b64decode(v["content"])
                changed.append(v["path"])
            elif key == "lfsFile":
                data = self._lfs.get(v["oid"])
                if data is None or len(data) != v.get("size", len(data)):
                    raise HubError(422, f"LFS object {v['oid']} of {v['path']} was not uploaded (or wrong size)")
                files[v["path"]] = data
                changed.append(v["path"])
                lfs.append(v["path"])
            elif key in ("deletedFile", "deletedFolder"):
                gone = [p for p in files if p == v["path"] or p.startswith(v["path"].rstrip("/") + "/")]
                if not gone:
                    raise HubError(404, "A file with this name doesn't exist", "EntryNotFound")
                for p in gone:
                    del files[p]
            else:
                raise HubError(400, f"FakeHub does not know commit operation {key!r}")
        oid = self._record(req.repo, req.rev, files, message, changed, lfs)
        return 200, {"success": True, "commitOid": oid, "commitUrl": f"{self.url}/{req.repo}/commit/{oid}",
                     "pullRequestUrl": None}, {}

    def tree(self, req):  # a single page (no Link header); ?recursive=True lists the whole subtree
        files, _ = self._files(self._repo(req), req.rev)
        recursive = req.query.get("recursive", "").lower() in ("1", "true")
        prefix = req.path_in_repo.strip("/") + "/" if req.path_in_repo else ""
        entries = {}
        for path, data in sorted(files.items()):
            if not path.startswith(prefix):
                continue
            parts = path[len(prefix):].split("/")
            for i in range(1, len(parts) if recursive else min(2, len(parts))):
                folder = prefix + "/".join(parts[:i])
                entries[folder] = {"type": "directory", "path": folder, "oid": git_oid(folder.encode())}
            if recursive or len(parts) == 1:
                entries[path] = {"type": "file", "path": path, "size": len(data), "oid": git_oid(data)}
                if is_lfs(path, len(data)):
                    entries[path]["lfs"] = {"oid": blob_oid(path, data), "size": len(data), "pointerSize": 134}
        return 200, list(entries.values()), {}

    def repo_info(self, req):  # also called by the client after an upload where nothing changed
        repo = self._repo(req)
        files, head = self._files(repo, req.rev or "main")
        return 200, {"id": req.repo, "sha": head, "private": repo["private"],
                     "siblings": [{"rfilename": p} for p in sorted(files)]}, {}

    def resolve(self, req):
        # HEAD: the metadata hf_hub_download needs (X-Repo-Commit, ETag, Content-Length); GET: the bytes.
        # No X-Xet-Hash header, so the client downloads over plain HTTP even with hf_xet installed.
        files, head = self._files(self._repo(req), req.rev)
        if req.path_in_repo not in files:
            raise HubError(404, "Entry not found", "EntryNotFound")
        data = files[req.path_in_repo]
        return 200, data, {"X-Repo-Commit": head, "ETag": f'"{blob_oid(req.path_in_repo, data)}"',
                           "Content-Type": "application/octet-stream"}

    def xet_token(self, req):
        raise HubError(501, "FakeHub does not speak Xet: set HF_HUB_DISABLE_XET=1 in the client")


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects

    def log_message(self, *args):
        pass

    def _handle(self):
        url = urlsplit(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))  # the client never chunks
        status, payload, headers = 404, {"error": f"FakeHub: no route for {self.command} {url.path}"}, {}
        for methods, pattern, name in ROUTES:
            m = pattern.match(url.path)
            if m and self.command in methods:
                g = {k: unquote(v) if v else v for k, v in m.groupdict().items()}
                ctype = self.headers.get("Content-Type", "").split(";")[0]  # the commit's x-ndjson stays raw
                req = SimpleNamespace(
                    path=url.path, body=body, repo=g.get("repo"), rev=g.get("rev"), oid=g.get("oid"),
                    path_in_repo=g.get("path"), query={k: v[-1] for k, v in parse_qs(url.query).items()},
                    json=json.loads(body) if ctype in ("application/json", "application/vnd.git-lfs+json") else {},
                    authed=self.headers.get("Authorization", "").startswith("Bearer "))
                try:
                    with self.hub._lock:
                        status, payload, headers = getattr(self.hub, name)(req)
                except HubError as e:
                    status, payload = e.status, {"error": e.message, **e.extra}
                    headers = {"X-Error-Message": e.message, **({"X-Error-Code": e.code} if e.code else {})}
                break
        with self.hub._lock:
            self.hub.requests.append((self.command, url.path))
        if not isinstance(payload, bytes):
            payload, headers = json.dumps(payload).encode(), {"Content-Type": "application/json", **headers}
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _handle

"""Model resolution: registered names, local folders, and the real huggingface_hub client
against a stand-in Hub on 127.0.0.1 (download, pinned revisions, cache, offline, errors)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import pytest

from mammofuse.errors import MammofuseError
from mammofuse.hub import resolve_model
from mammofuse.model import MammoFuse

COMMIT_V1 = "1" * 40
COMMIT_MAIN = "a" * 40


def _clinical_model(folder: Path, threshold: float = 0.5) -> Path:
    """A tiny real model (clinical fusion: no image encoder), saved the project's way."""
    import torch

    from mammofuse.model import MammoFuse, ModelConfig, save_model

    torch.manual_seed(0)
    return save_model(MammoFuse(ModelConfig(fusion="clinical", threshold=threshold)), folder)


class StandInHub:
    """The two endpoints ``hf_hub_download`` uses: HEAD and GET ``/{repo}/resolve/{revision}/{file}``.

    Answers like the Hub: ``X-Repo-Commit``, ``ETag`` and ``Content-Length`` on success;
    404 with ``X-Error-Code`` RepoNotFound / RevisionNotFound / EntryNotFound otherwise.
    """

    def __init__(self) -> None:
        self.commits: dict[str, dict[str, dict[str, bytes]]] = {}  # repo -> commit -> file -> bytes
        self.refs: dict[str, dict[str, str]] = {}  # repo -> branch/tag -> commit
        self.requests: list[tuple[str, str]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_HEAD(self) -> None:
                hub.answer(self, body=False)

            def do_GET(self) -> None:
                hub.answer(self, body=True)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def publish(self, repo: str, commit: str, folder: Path, refs: tuple[str, ...] = ("main",), skip: tuple[str, ...] = ()) -> None:
        files = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name not in skip}
        self.commits.setdefault(repo, {})[commit] = files
        for ref in refs:
            self.refs.setdefault(repo, {})[ref] = commit

    def answer(self, handler: BaseHTTPRequestHandler, body: bool) -> None:
        path = handler.path.split("?")[0]
        self.requests.append((handler.command, path))
        owner, name, verb, revision, *rest = (path.lstrip("/").split("/", 4) + [""] * 5)[:5]
        repo, revision, filename = f"{owner}/{name}", unquote(revision), unquote(rest[0]) if rest else ""
        if verb != "resolve" or repo not in self.commits:
            return self._error(handler, "RepoNotFound", {})
        commit = revision if revision in self.commits[repo] else self.refs[repo].get(revision)
        if commit is None:
            return self._error(handler, "RevisionNotFound", {})
        data = self.commits[repo][commit].get(filename)
        if data is None:
            return self._error(handler, "EntryNotFound", {"X-Repo-Commit": commit})
        handler.send_response(200)
        handler.send_header("X-Repo-Commit", commit)
        handler.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        handler.send_header("Content-Length", str(len(data)))
        handler.send_header("Content-Type", "application/octet-stream")
        handler.end_headers()
        if body:
            handler.wfile.write(data)

    @staticmethod
    def _error(handler: BaseHTTPRequestHandler, code: str, headers: dict[str, str]) -> None:
        handler.send_response(404)
        handler.send_header("X-Error-Code", code)
        for k, v in headers.items():
            handler.send_header(k, v)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    def gets(self) -> list[str]:
        return [p for m, p in self.requests if m == "GET"]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {"v1": _clinical_model(root / "v1", 0.4), "main": _clinical_model(root / "main", 0.6)}


@pytest.fixture
def hub(models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A stand-in Hub with ``owner/tiny`` (tag v1 -> commit 111.., main -> aaa..), online, with a private cache."""
    server = StandInHub()
    server.publish("owner/tiny", COMMIT_V1, models["v1"], refs=("v1",))
    server.publish("owner/tiny", COMMIT_MAIN, models["main"], refs=("main",))
    server.publish("owner/no-weights", COMMIT_MAIN, models["main"], skip=("model.safetensors",))
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    _set_offline(monkeypatch, False)
    yield server
    server.close()


def _set_offline(monkeypatch: pytest.MonkeyPatch, offline: bool) -> None:
    """HF_HUB_OFFLINE as a user sets it: the environment, and huggingface_hub's copy read at import."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1" if offline else "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)


def test_default_resolves_to_the_bundled_folder() -> None:
    resolved = resolve_model(None)
    assert resolved == resolve_model("default")
    assert resolved.folder.name == "default" and resolved.folder.parent.name == "weights"
    assert (resolved.name, resolved.source, resolved.revision) == ("default", "bundled", None)


def test_local_folder_and_file_inside_it(models: dict[str, Path]) -> None:
    assert resolve_model(str(models["v1"])).folder == models["v1"]
    assert resolve_model(models["v1"] / "model.safetensors").folder == models["v1"]
    resolved = resolve_model(str(models["v1"] / "config.json"))
    assert (resolved.folder, resolved.name, resolved.source) == (models["v1"], str(models["v1"]), "local")


def test_pickle_files_and_folders_without_config_are_refused(tmp_path: Path) -> None:
    (tmp_path / "model.pt").write_bytes(b"not loaded")
    with pytest.raises(MammofuseError, match="not a model folder"):
        resolve_model(str(tmp_path / "model.pt"))
    with pytest.raises(MammofuseError, match="not a model folder"):
        resolve_model(str(tmp_path))


def test_unknown_name_lists_what_is_accepted() -> None:
    with pytest.raises(MammofuseError, match=r"unknown model 'resnet'.*default.*owner/name"):
        resolve_model("resnet")


@pytest.mark.parametrize("spec", ["", "   "])
def test_an_empty_model_name_is_refused_not_the_bundled_model(spec: str) -> None:
    """--model "$MODEL" with MODEL unset scored with the bundled model without a word."""
    with pytest.raises(MammofuseError, match="the model name is empty"):
        resolve_model(spec)


@pytest.mark.parametrize("spec", ["{long}", "./{long}", "{long}/config.json", "{tmp}/{long}"])
def test_a_model_path_the_os_refuses_is_one_line_naming_it(spec: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A name over 255 bytes raised OSError "File name too long", which the CLI took for an unwritable output (exit 3)."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MammofuseError, match=r"a{300}.*: cannot read \(File name too long\)"):
        resolve_model(spec.format(long="a" * 300, tmp=tmp_path))


def test_a_config_format_given_as_text_is_shown_as_text(models: dict[str, Path], tmp_path: Path) -> None:
    """The error said 'config format 1 is not supported by this mammofuse (needs 1)' for "format": "1"."""
    import shutil

    folder = tmp_path / "text-format"
    shutil.copytree(models["v1"], folder)
    (folder / "config.json").write_text(json.dumps(json.loads((folder / "config.json").read_text()) | {"format": "1"}))
    with pytest.raises(MammofuseError, match="config format '1' is not supported by this mammofuse .needs 1."):
        MammoFuse.from_pretrained(str(folder))


def test_weights_holding_nan_are_refused_when_loaded(models: dict[str, Path], tmp_path: Path) -> None:
    """Such a model failed every file with a bare 'not scored'."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "nan"
    shutil.copytree(models["v1"], folder)
    weights = load_file(str(folder / "model.safetensors"))
    name = next(k for k, v in weights.items() if v.is_floating_point())
    weights[name] = torch.full_like(weights[name], float("nan"))
    save_file(weights, str(folder / "model.safetensors"))
    with pytest.raises(MammofuseError, match=f"model.safetensors: 1 weight tensor.s. hold NaN or infinite values .e.g. {name}."):
        MammoFuse.from_pretrained(str(folder))


def test_incompatible_config_is_a_one_line_error(models: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    for change, message in (({"field_sizes": [4, 8, 5, 14, 6]}, "vocabulary"), ({"format": 99}, "format 99"), ({"colour": 1}, "unknown keys")):
        folder = tmp_path / message.replace(" ", "_")
        shutil.copytree(models["v1"], folder)
        config = json.loads((folder / "config.json").read_text()) | change
        (folder / "config.json").write_text(json.dumps(config))
        with pytest.raises(MammofuseError, match=message):
            MammoFuse.from_pretrained(str(folder))


def test_hub_download_pins_both_files_to_one_commit(hub: StandInHub) -> None:
    resolved = resolve_model("owner/tiny")
    folder = resolved.folder
    assert folder.name == COMMIT_MAIN and folder.parent.name == "snapshots"
    assert {p.name for p in folder.iterdir()} == {"config.json", "model.safetensors"}
    # config.json by branch, then the weights by the commit that config.json came from
    assert f"/owner/tiny/resolve/{COMMIT_MAIN}/model.safetensors" in hub.gets()
    model = MammoFuse.from_pretrained("owner/tiny")
    assert model.config.threshold == pytest.approx(0.6)
    assert model.name == resolved.name == f"owner/tiny@{COMMIT_MAIN}"
    assert (resolved.source, resolved.revision) == ("hub", COMMIT_MAIN)


def test_hub_tag_revision(hub: StandInHub) -> None:
    model = MammoFuse.from_pretrained("owner/tiny@v1")
    assert model.config.threshold == pytest.approx(0.4)
    assert resolve_model("owner/tiny@v1").revision == COMMIT_V1


def test_cache_hit_downloads_nothing_again(hub: StandInHub) -> None:
    first = resolve_model(f"owner/tiny@{COMMIT_V1}")
    downloads = len(hub.gets())
    hub.requests.clear()
    assert resolve_model(f"owner/tiny@{COMMIT_V1}") == first
    assert hub.requests == []  # a commit already in the cache needs no request at all
    resolve_model("owner/tiny@v1")  # a tag is re-checked (HEAD) but not downloaded again
    assert hub.gets() == [] and downloads == 2


def test_offline_with_the_model_cached_works_without_requests(hub: StandInHub, monkeypatch: pytest.MonkeyPatch) -> None:
    online = resolve_model("owner/tiny")
    hub.requests.clear()
    _set_offline(monkeypatch, True)
    assert resolve_model("owner/tiny") == online
    assert MammoFuse.from_pretrained("owner/tiny").config.threshold == pytest.approx(0.6)
    assert hub.requests == []


def test_offline_and_not_cached_says_so(hub: StandInHub, monkeypatch: pytest.MonkeyPatch) -> None:
    _set_offline(monkeypatch, True)
    with pytest.raises(MammofuseError, match="not in the Hugging Face cache and HF_HUB_OFFLINE is set"):
        resolve_model("owner/tiny")
    assert hub.requests == []


def test_unreachable_hub_falls_back_to_the_cache(hub: StandInHub) -> None:
    online = resolve_model("owner/tiny@v1")
    hub.close()  # the Hub goes away without HF_HUB_OFFLINE being set
    assert resolve_model("owner/tiny@v1") == online


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nobody/missing", "repository nobody/missing not found"),
        ("owner/tiny@v9", "revision 'v9' not found"),
        ("owner/no-weights", "has no model.safetensors"),
    ],
)
def test_hub_not_found_errors(hub: StandInHub, spec: str, message: str) -> None:
    with pytest.raises(MammofuseError, match=message):
        resolve_model(spec)


def test_unreachable_hub_answers_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    _set_offline(monkeypatch, False)
    start = time.perf_counter()
    with pytest.raises(MammofuseError, match=r"cannot reach .*; nor is owner/tiny a local model folder"):
        resolve_model("owner/tiny")  # runs/cross before it was trained reads like a Hub id
    assert time.perf_counter() - start < 10  # no 25-second retry loop


def _closed_port() -> int:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_dead_proxy_answers_fast_and_is_named_without_its_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy variable used to skip the quick check: 25 seconds of silent retries through a proxy that is not there."""
    import time

    proxy = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("HTTP_PROXY", proxy.replace("//", "//alice:s3cret@"))
    monkeypatch.setenv("HF_ENDPOINT", "http://hub.invalid")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    for variable in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "HTTPS_PROXY", "https_proxy", "http_proxy"):
        monkeypatch.delenv(variable, raising=False)
    _set_offline(monkeypatch, False)
    start = time.perf_counter()
    with pytest.raises(MammofuseError, match=re.escape(f"cannot reach http://hub.invalid through the proxy {proxy} and config.json is not cached; "
                                                       "check the network, the proxy variables (HTTPS_PROXY...) or HF_ENDPOINT")):
        resolve_model("owner/tiny")
    assert time.perf_counter() - start < 10


@pytest.mark.parametrize("exempt", ["127.0.0.1,localhost", "127.0.0.1:{port}"], ids=["host", "host-and-port"])
def test_a_hub_that_no_proxy_exempts_is_reached_directly(exempt: str, hub: StandInHub, monkeypatch: pytest.MonkeyPatch) -> None:
    """The client's rules for NO_PROXY decide (urllib's, which the quick check used, know no port: it probed the proxy)."""
    monkeypatch.setenv("NO_PROXY", exempt.format(port=hub.url.rsplit(":", 1)[1]))
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{_closed_port()}")
    assert resolve_model("owner/tiny@v1").revision == COMMIT_V1


def test_a_hub_id_with_a_revision_is_looked_up_though_its_owner_is_a_local_folder(hub: StandInHub, tmp_path: Path,
                                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "work" / "owner").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "work")
    assert resolve_model("owner/tiny@v1").revision == COMMIT_V1
    with pytest.raises(MammofuseError, match=re.escape("owner/tiny: no such model folder (in owner) and not a registered name (default); "
                                                       "for a Hub repository whose owner is also a local folder name, give its revision (owner/tiny@main)")):
        resolve_model("owner/tiny")


def test_a_local_model_is_named_by_its_absolute_path(models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """By the path as typed, ./default was named default, the bundled model's name, and one folder had many names."""
    import shutil

    shutil.copytree(models["v1"], tmp_path / "default")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    names = {resolve_model(spec).name for spec in ("./default", "default/config.json", str(tmp_path / "sub" / ".." / "default"))}
    monkeypatch.chdir(tmp_path / "sub")
    names.add(resolve_model("../default").name)
    assert names == {str(tmp_path / "default")}


def test_a_backbone_given_as_a_model_says_what_it_is() -> None:
    with pytest.raises(MammofuseError, match="cbis-texture-cnn4 is a pretrained backbone, which train --pretrained starts from, not a model"):
        resolve_model("cbis-texture-cnn4")


BAD_ENDPOINTS = [("http://localhost:99999", r"not a valid URL \(Port out of range"), ("http://[::1", r"not a valid URL \(Invalid IPv6 URL\)"),
                 ("http://localhost:abc", "not a valid URL .Port could not be cast"), ("localhost:8080", "not an http.s. URL")]


@pytest.mark.parametrize("offline", [False, True])
@pytest.mark.parametrize(("endpoint", "problem"), BAD_ENDPOINTS)
def test_a_malformed_hf_endpoint_is_named(endpoint: str, problem: str, offline: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """huggingface_hub and the reachability probe raised ValueError parsing it (exit 4)."""
    import re

    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    _set_offline(monkeypatch, offline)
    with pytest.raises(MammofuseError, match=f"^HF_ENDPOINT {re.escape(repr(endpoint))} is {problem}.*; unset it, or give one such as https://huggingface.co"):
        resolve_model("owner/tiny")


def test_a_malformed_hf_endpoint_is_named_before_huggingface_hub_reads_it(tmp_path: Path) -> None:
    """huggingface_hub parses HF_ENDPOINT when imported: a fresh process must still get the one-line error."""
    env = {**os.environ, "HF_ENDPOINT": "http://[::1", "HF_HUB_CACHE": str(tmp_path), "HF_HUB_OFFLINE": "0"}
    result = subprocess.run([sys.executable, "-m", "mammofuse", "predict", "x.png", "--model", "owner/tiny"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.startswith("error: HF_ENDPOINT 'http://[::1' is not a valid URL"), result.stderr


def test_cli_predict_from_the_stand_in_hub(hub: StandInHub, real_dicoms: dict[str, Path], tmp_path: Path) -> None:
    """The whole path in a fresh process: HF_ENDPOINT as a user sets it, read by huggingface_hub at import."""
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_CACHE": str(tmp_path / "cli-cache"), "HF_HOME": str(tmp_path / "hf-home"),
           "HF_HUB_OFFLINE": "0", "NO_PROXY": "127.0.0.1,localhost", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "mammofuse", "predict", str(real_dicoms["P_00173_lcc"]), "--model", "owner/tiny",
               "--density", "2", "--margin", "circumscribed", "--format", "json"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)[0]
    assert record["model"] == f"owner/tiny@{COMMIT_MAIN}" and record["threshold"] == 0.6 and record["error"] is None
    assert 0.0 <= record["probability"] <= 1.0
    # and again with the Hub gone: the cache answers
    hub.close()
    offline = subprocess.run(command, env={**env, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=120)
    assert offline.returncode == 0, offline.stderr
    assert json.loads(offline.stdout)[0]["probability"] == record["probability"]


def test_save_pretrained_folder_is_hub_ready_and_loads_back(tmp_path: Path) -> None:
    import torch

    from mammofuse.model import ModelConfig

    torch.manual_seed(0)
    model = MammoFuse(ModelConfig(fusion="clinical", threshold=0.3))
    folder = model.save_pretrained(tmp_path / "my-model")
    assert {p.name for p in folder.iterdir()} == {"config.json", "model.safetensors", "README.md"}
    card = (folder / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: mammofuse\n") and "Research use only" in card
    loaded = MammoFuse.from_pretrained(folder)
    assert loaded.name == str(folder) and loaded.config.threshold == pytest.approx(0.3)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    (folder / "README.md").write_text("my own card")
    model.save_pretrained(folder)  # a card already there is the owner's: kept
    assert (folder / "README.md").read_text() == "my own card"


def test_bundled_card_carries_hub_metadata() -> None:
    card = (resolve_model("default").folder / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: mammofuse\n")

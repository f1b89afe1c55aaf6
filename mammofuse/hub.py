"""Model registry and resolution: a registered name, a local folder, or a Hugging Face Hub repository.

``--model`` (and every Python entry point) goes through :func:`resolve_model`:

1. ``None`` or a registered name (``default``): a folder shipped inside the package.
2. An existing local path: a model folder (``config.json`` + ``model.safetensors``), or a file
   inside such a folder.
3. ``owner/name[@revision]``: ``config.json`` and ``model.safetensors`` through
   ``huggingface_hub.hf_hub_download`` (its cache, ``HF_ENDPOINT``, ``HF_HUB_OFFLINE``), both
   pinned to the same commit.

Only safetensors and JSON are ever read (never pickle), and every failure a user can act on
is a one-line :class:`~mammofuse.errors.MammofuseError`.

This module only finds the files (torch-free); :meth:`mammofuse.MammoFuse.from_pretrained` loads them.

Example:
    >>> resolve_model("default").source
    'bundled'
"""

from __future__ import annotations

import json
import logging
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterator, Literal

from mammofuse.backbones import REGISTERED_BACKBONES
from mammofuse.errors import MammofuseError, reading

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
CARD_NAME = "README.md"
# The Hub reads a model card's YAML front matter: it files the repository under the library and tags.
CARD_METADATA = """---
library_name: mammofuse
license: other
pipeline_tag: image-classification
tags:
- mammography
- breast-cancer
- multimodal
- medical-imaging
- research-only
---
"""
DEFAULT_MODEL = "default"
_HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<revision>[\w./-]+))?$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_TRUE = {"1", "ON", "YES", "TRUE"}


@dataclass(frozen=True)
class RegisteredModel:
    """A model that ships with the package (``mammofuse models`` lists them).

    Attributes:
        name: what ``--model`` accepts.
        folder: the folder under ``mammofuse/weights/`` holding config.json, model.safetensors, README.md.
        description: one line for the listing.
    """

    name: str
    folder: str
    description: str


_DEFAULT_PORTS = {"http": 80, "https": 443, "socks5": 1080, "socks5h": 1080, "socks4": 1080}  # the Hub's or a proxy's scheme

REGISTRY: dict[str, RegisteredModel] = {
    DEFAULT_MODEL: RegisteredModel(
        name=DEFAULT_MODEL,
        folder="default",
        description="CBIS-DDSM masses: lesion crop (give --roi) + findings, late fusion; see its card. Not diagnostic.",
    ),
}


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model spec points, resolved once so that nothing parses the spec again.

    Attributes:
        folder: local folder holding ``config.json`` and ``model.safetensors``.
        name: how outputs name the model: the registered name, ``owner/name@commit``, or the folder's absolute path.
        source: ``bundled`` (shipped in the package), ``local`` (a folder) or ``hub``.
        revision: the Hub commit the files come from (``hub`` only).
    """

    folder: Path
    name: str
    source: Literal["bundled", "local", "hub"]
    revision: str | None = None


def registered_models() -> list[dict[str, Any]]:
    """Registered models with the facts of their ``config.json`` (read as JSON: no torch needed)."""
    out = []
    for entry in REGISTRY.values():
        folder = _package_folder(entry)
        record: dict[str, Any] = {"name": entry.name, "kind": "model", "description": entry.description, "path": str(folder)}
        try:
            config = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
            recipe = config.get("preprocessing", {})
            record |= {
                "fusion": config.get("fusion"),
                "backbone": config.get("backbone") if config.get("fusion") != "clinical" else None,
                "input": recipe.get("input"),
                "image_size": recipe.get("image_size"),
                "vocabulary": config.get("vocabulary"),
                "threshold": config.get("threshold"),
                "size_mb": round((folder / WEIGHTS_NAME).stat().st_size / 2**20, 1),
                "available": True,
            }
        except (OSError, ValueError):
            record["available"] = False
        out.append(record)
    return out


def _package_folder(entry: RegisteredModel) -> Path:
    ref = resources.files("mammofuse").joinpath("weights", entry.folder)
    if not isinstance(ref, Path):  # a zipped install: weights must be real files for safetensors' mmap
        raise MammofuseError("mammofuse is installed as a zip archive; install it as files to use bundled models")
    return ref


def staged_model_folder(spec: str | None) -> Path | None:
    """The trained model whose image branch ``--pretrained spec`` starts from (staged training):
    a registered model's folder (``default``) or a local folder holding ``config.json``; None for
    anything else (keywords, registered backbones, ``.safetensors`` files)."""
    if not spec or spec in REGISTERED_BACKBONES:
        return None
    if spec in REGISTRY:
        return _package_folder(REGISTRY[spec])
    folder = Path(spec).expanduser()
    with reading(folder):
        return folder if (folder / CONFIG_NAME).is_file() else None


def resolve_model(spec: str | Path | None) -> ResolvedModel:
    """Where the ``config.json`` and ``model.safetensors`` of ``spec`` are, and how to name the model.

    Args:
        spec: ``None``/``"default"``, another registered name, a local folder (or a file in one),
            or a Hub id ``owner/name`` with an optional ``@revision`` (branch, tag or commit).

    Raises:
        MammofuseError: unknown name, missing files, a local path that cannot be read, offline and not
            cached, repository, revision or file not found on the Hub.

    Example:
        >>> resolve_model("default").name
        'default'
    """
    spec = DEFAULT_MODEL if spec is None else str(spec).strip()
    if not spec:  # an unset shell variable (--model "$MODEL") must not quietly mean the bundled model
        raise MammofuseError(f"the model name is empty: give a registered name ({', '.join(REGISTRY)}), a model folder or a Hub id owner/name")
    if spec in REGISTRY:
        folder = _package_folder(REGISTRY[spec])
        if not (folder / CONFIG_NAME).is_file() or not (folder / WEIGHTS_NAME).is_file():
            raise MammofuseError(f"bundled model {spec!r} is missing from this installation ({folder}); reinstall mammofuse")
        return ResolvedModel(folder, spec, "bundled")
    local = Path(spec).expanduser()
    with reading(local):  # a name too long, a folder that cannot be searched
        if local.exists():
            folder = _local_folder(local)
            # Named by its absolute path: ./default is not the bundled default, nor runs/x from two folders one model.
            return ResolvedModel(folder, os.path.abspath(folder), "local")
        if local.parts and Path(local.parts[0]).is_dir() and "@" not in spec:
            # runs/clinicl: a mistyped folder under an existing one, not a Hub id to look up
            raise MammofuseError(
                f"{spec}: no such model folder (in {local.parent}) and not a registered name ({', '.join(REGISTRY)}); "
                f"for a Hub repository whose owner is also a local folder name, give its revision ({spec}@main)"
            )
    match = _HUB_ID.match(spec)
    if match and not spec.startswith((".", "/", "~")) and not spec.endswith((".json", ".safetensors")):
        try:
            folder = _hub_folder(match["repo"], match["revision"])
        except MammofuseError as exc:  # runs/cross before it was trained: say it is no folder either
            raise MammofuseError(f"{exc}; nor is {spec} a local model folder (from {Path.cwd()})") from None
        return ResolvedModel(folder, f"{match['repo']}@{folder.name}", "hub", revision=folder.name)
    names = ", ".join(REGISTRY)
    if spec in REGISTERED_BACKBONES:
        raise MammofuseError(f"{spec} is a pretrained backbone, which train --pretrained starts from, not a model: give a registered model ({names}), "
                             "a model folder or a Hub id owner/name")
    raise MammofuseError(
        f"unknown model {spec!r}: not a registered name ({names}), an existing model folder, "
        f"or a Hugging Face Hub id owner/name (optionally @revision)"
    )


def _local_folder(path: Path) -> Path:
    folder = path if path.is_dir() else path.parent
    if not (folder / CONFIG_NAME).is_file():
        raise MammofuseError(f"{path}: not a model folder (expected {CONFIG_NAME} and {WEIGHTS_NAME} in {folder})")
    if path.is_file() and path.name not in (CONFIG_NAME, WEIGHTS_NAME):
        raise MammofuseError(f"{path}: a model is read from the {WEIGHTS_NAME} and {CONFIG_NAME} of its folder, not from {path.name}")
    if not (folder / WEIGHTS_NAME).is_file():
        raise MammofuseError(f"{folder}: {WEIGHTS_NAME} not found beside {CONFIG_NAME}")
    return folder


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` as set now (huggingface_hub itself reads it once, at import)."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")
    if value is not None:
        return value.strip().upper() in _TRUE
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)  # what constants.is_offline_mode() returns; that function is 1.3+


def _hub_folder(repo: str, revision: str | None) -> Path:
    """Download (or find in the cache) both files of ``repo``, pinned to one commit."""
    from mammofuse import __version__

    where = f"{repo}@{revision}" if revision else repo
    endpoint = _hub_endpoint()
    # huggingface_hub retries an unreachable host for about 25 s before using the cache; a quick
    # connection probe answers at once, and an unreachable Hub is treated like offline mode.
    offline = hub_offline() or not _reachable(endpoint)
    kwargs: dict[str, Any] = {
        "local_files_only": offline,
        "library_name": "mammofuse",
        "library_version": __version__,
        # Read at call time so a changed environment is honoured even after huggingface_hub was imported.
        "endpoint": endpoint,
        "cache_dir": os.environ.get("HF_HUB_CACHE") or None,
    }
    config_path = Path(_download(repo, CONFIG_NAME, revision, where, kwargs))
    commit = config_path.parent.name
    if not _COMMIT.match(commit):
        raise MammofuseError(f"{where}: the Hugging Face cache entry for {repo} is corrupt (snapshot {commit[:50]!r} is not a commit); delete it from the cache and download again")
    # The snapshot folder is named by commit: fetch the weights from exactly that commit, so a
    # branch that moves between the two downloads cannot pair one commit's config with another's weights.
    pinned = commit
    weights_path = Path(_download(repo, WEIGHTS_NAME, pinned, where, kwargs))
    if weights_path.parent != config_path.parent:
        raise MammofuseError(f"{where}: {CONFIG_NAME} and {WEIGHTS_NAME} resolved to different snapshots; retry")
    return config_path.parent


def _hub_endpoint() -> str | None:
    """``HF_ENDPOINT`` (None when unset), checked before huggingface_hub parses it (at import, offline too).

    Raises:
        MammofuseError: it is not an http(s) URL with a host and a valid port.
    """
    from urllib.parse import urlsplit

    endpoint = os.environ.get("HF_ENDPOINT") or None
    if endpoint is None:
        return None
    try:
        url = urlsplit(endpoint)
        url.port  # noqa: B018 (read to check it)
        problem = "" if url.scheme in ("http", "https") and url.hostname else "is not an http(s) URL"
    except ValueError as exc:  # a port out of range or not a number, an unclosed [IPv6 address
        problem = f"is not a valid URL ({exc})"
    if problem:
        raise MammofuseError(f"HF_ENDPOINT {endpoint[:100]!r} {problem}; unset it, or give one such as https://huggingface.co")
    return endpoint


def _reachable(endpoint: str | None, timeout: float = 3.0) -> bool:
    """Whether a TCP connection opens to the Hub endpoint, or to the proxy the environment sets for it (one that answers
    is left to decide: the client asks it). With ``NO_PROXY`` set too, the route is the client's to choose by its own
    rules for it (not urllib's): assumed reachable."""
    import socket
    from urllib.parse import urlsplit
    from urllib.request import getproxies

    proxies = getproxies()
    if "no" in proxies and set(proxies) - {"no"}:
        return True
    proxy = _proxy_for(endpoint)
    url = urlsplit(proxy or _endpoint_url(endpoint))
    try:
        port = url.port or _DEFAULT_PORTS.get(url.scheme, 80)
    except ValueError:  # a proxy's port that is no number: the client reports it
        return True
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def _endpoint_url(endpoint: str | None) -> str:
    from huggingface_hub import constants

    return endpoint or constants.ENDPOINT


def _proxy_for(endpoint: str | None) -> str | None:
    """The proxy that ``HTTPS_PROXY``, ``HTTP_PROXY`` or ``ALL_PROXY`` sets for the Hub endpoint (``host:port`` as
    ``http://host:port``, as clients take it); None where none is set, or ``NO_PROXY`` is (see :func:`_reachable`)."""
    from urllib.parse import urlsplit
    from urllib.request import getproxies

    proxies = getproxies()
    proxy = None if "no" in proxies else proxies.get(urlsplit(_endpoint_url(endpoint)).scheme) or proxies.get("all")
    return proxy if not proxy or "://" in proxy else f"http://{proxy}"


def _without_credentials(url: str) -> str:
    """``url`` with no user name or password (a proxy's, for a message)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


def _download(repo: str, filename: str, revision: str | None, where: str, kwargs: dict[str, Any]) -> str:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        with _quiet_hub_logs():
            return hf_hub_download(repo, filename, revision=revision, **kwargs)
    except GatedRepoError:
        raise MammofuseError(f"Hub repository {repo} is gated: accept its terms on the Hub and log in (hf auth login)") from None
    except RepositoryNotFoundError:
        raise MammofuseError(f"Hub repository {repo} not found (or private: log in with hf auth login)") from None
    except RevisionNotFoundError:
        raise MammofuseError(f"revision {revision!r} not found in Hub repository {repo}") from None
    except (LocalEntryNotFoundError, OfflineModeIsEnabled):
        if hub_offline():
            raise MammofuseError(
                f"{where}: {filename} is not in the Hugging Face cache and HF_HUB_OFFLINE is set; "
                f"download it once online, or use a local model folder"
            ) from None
        proxy = _proxy_for(kwargs.get("endpoint"))
        through = f" through the proxy {_without_credentials(proxy)}" if proxy else ""
        endpoint = kwargs.get("endpoint") or "the Hugging Face Hub"
        raise MammofuseError(f"{where}: cannot reach {endpoint}{through} and {filename} is not cached; "
                             f"check the network{', the proxy variables (HTTPS_PROXY...)' if proxy else ''} or HF_ENDPOINT") from None
    except EntryNotFoundError:
        raise MammofuseError(f"{where}: the repository has no {filename}; not a mammofuse model (needs {CONFIG_NAME} + {WEIGHTS_NAME})") from None
    except HFValidationError as exc:
        raise MammofuseError(f"{where}: not a valid Hugging Face Hub id ({exc})") from None
    except ValueError:  # huggingface_hub refuses a cached ref that points outside its snapshots
        raise MammofuseError(f"{where}: the Hugging Face cache entry for {repo} is corrupt (a ref names no snapshot); delete it from the cache and download again") from None
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", "?")
        raise MammofuseError(f"{where}: the Hub answered HTTP {status} for {filename}") from None
    except OSError as exc:  # network errors and unwritable caches
        raise MammofuseError(f"{where}: cannot download {filename} ({type(exc).__name__}: {exc})") from None


@contextmanager
def _quiet_hub_logs() -> Iterator[None]:
    """Hide huggingface_hub's retry chatter: a failure ends in one MammofuseError line instead."""
    logger = logging.getLogger("huggingface_hub")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)

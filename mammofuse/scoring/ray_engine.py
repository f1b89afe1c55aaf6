"""The Ray engine: the local engine's reading, preprocessing and model as a Ray Data pipeline.

The list of cases is split into blocks that stream through two stages: decoding (the
:class:`~mammofuse.inference.LesionDataset` of the local engine, in CPU tasks) and scoring (the
model, in a pool of actors, on GPUs with ``gpus_per_worker``). Scores stream back to the caller
as they are done. Ray fuses the two stages into the actors when both run on CPUs, so that decoded
images never cross the object store. A file that fails is a score with its error, as locally.

Ray puts the driver's working folder first on its workers' import path, so Ray is started (or
joined) from an empty private folder: a ``pydicom.py`` in a scanned folder must never run. The
workers get absolute file paths; errors name the files as the caller gave them.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import pickle
import shutil
import socket
import sys
import tempfile
from contextlib import chdir, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from mammofuse.atomic import check_writable_folder
from mammofuse.data.sample import Sample
from mammofuse.errors import MammofuseError, OutputError

if TYPE_CHECKING:
    from mammofuse.inference import ScoredBatch

RAY_MISSING = 'the Ray engine needs Ray: pip install "mammofuse[ray]"'
_INPUTS = ("image", "image_present", "radiomics", "clinical", "clinical_mask")
_PATHS = ("image_path", "roi_path", "roi_mask_path")
CONNECT_TIMEOUT_S = 5.0
# The room a local Ray is refused under, at once: its session (logs, sockets) takes about 300 KB a run, its workers' logs
# more; started in a folder with no room, Ray waits 30 s for its processes and then blames the connection
LOCAL_RAY_MIN_FREE_MB = 50
UNIX_SOCKET_PATH_MAX = 103 if sys.platform == "darwin" else 107
"""The longest path a Unix socket takes (``sun_path`` with its closing NUL: 108 bytes on Linux, 104 on macOS)."""


def import_ray() -> Any:
    """The ``ray`` module, or a MammofuseError saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401  (the extra installs ray[data])
    except ImportError:
        raise MammofuseError(RAY_MISSING) from None
    return ray


@dataclass(frozen=True)
class RayEngine:
    """Score with Ray Data on the cluster at ``address`` (default: ``RAY_ADDRESS``, else a local Ray started for the run).

    Attributes:
        address: an existing cluster (``auto``, ``ray://host:10001``, ``host:6379``); None: a local
            one, shut down when the run ends (refused here when :func:`local_ray_folder` has no room or cannot be
            written). A Ray already initialised in this process is used as it is.
        workers: scoring actors (default: one per GPU with ``gpus_per_worker``, else one per CPU of the cluster).
        gpus_per_worker: GPUs each actor holds (fractions share a GPU); 0 scores on CPUs.
        batch_size: images per decoding task and per forward pass.
    """

    address: str | None = None
    workers: int | None = None
    gpus_per_worker: float = 0.0
    batch_size: int = 16

    def __post_init__(self) -> None:
        ray = import_ray()  # fail before any work when Ray is missing, or when a local Ray cannot start
        if not ray.is_initialized() and (self.address or os.environ.get("RAY_ADDRESS")) in (None, "", "local"):
            check_local_ray_folder(local_ray_folder())

    def run(self, model: Any, samples: Sequence[Sample]) -> Iterator[ScoredBatch]:
        """Scores as batches finish, in any order."""
        ray = import_ray()
        with _cluster(ray, self.address), _quiet(ray):
            try:
                yield from self._pipeline(ray, model, samples)
            except ray.exceptions.RayError as exc:
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                raise MammofuseError(f"the Ray pipeline failed ({type(exc).__name__}: {reason}); the records already written are kept") from None

    def _pipeline(self, ray: Any, model: Any, samples: Sequence[Sample]) -> Iterator[ScoredBatch]:
        from ray.data import ActorPoolStrategy

        from mammofuse.inference import ScoredBatch

        workers = self._workers(ray)
        weights = ray.put(_on_cpu(model))
        rows = [{"index": i, "sample": pickle.dumps(_absolute(s))} for i, s in enumerate(samples)]
        # a few blocks per actor at least, so that they all get work; at most 16 batches per block
        per_block = max(self.batch_size, min(16 * self.batch_size, len(rows) // (4 * workers)))
        data = ray.data.from_items(rows, override_num_blocks=math.ceil(len(rows) / per_block))
        data = data.map_batches(_decode, fn_kwargs={"config": model.config}, batch_size=self.batch_size, batch_format="numpy", num_cpus=1)
        data = data.map_batches(
            _Scorer, fn_constructor_kwargs={"weights": [weights], "device": "cuda" if self.gpus_per_worker else "cpu"},
            batch_size=self.batch_size, batch_format="numpy", compute=ActorPoolStrategy(size=workers),
            num_cpus=1, **({"num_gpus": self.gpus_per_worker} if self.gpus_per_worker else {}),
        )
        for batch in data.iter_batches(batch_size=None, batch_format="numpy"):
            indices = batch["index"].tolist()
            errors = [_as_given(str(e), samples[i]) for i, e in zip(indices, batch["error"])]
            yield ScoredBatch(indices, batch["probability"], errors, [str(n) for n in batch["note"]])

    def _workers(self, ray: Any) -> int:
        resources = ray.cluster_resources()
        if self.gpus_per_worker:
            gpus = resources.get("GPU", 0)
            if gpus < self.gpus_per_worker:
                raise MammofuseError(f"--gpus-per-worker {self.gpus_per_worker:g}: the Ray cluster has {gpus:g} GPUs")
            return self.workers or max(1, int(gpus // self.gpus_per_worker))
        return self.workers or max(1, int(resources.get("CPU", 1)))


def _absolute(sample: Sample) -> Sample:
    """``sample`` with absolute file paths (Ray's workers do not run in the caller's working folder)."""
    return replace(sample, **{name: os.path.abspath(path) for name in _PATHS if (path := getattr(sample, name))})


def _as_given(error: str, sample: Sample) -> str:
    """A worker's ``error`` naming ``sample``'s files as the caller gave them."""
    for name in _PATHS:
        if path := getattr(sample, name):
            error = error.replace(os.path.abspath(path), path)
    return error


@contextmanager
def _cluster(ray: Any, address: str | None) -> Iterator[None]:
    """Connect to ``address`` or start a local Ray, and shut it down afterwards; a Ray already initialised is kept.

    ``ray.init`` runs in an empty private folder, the one Ray then adds to the workers' import path (and where a
    local Ray's processes run until shut down) in place of the caller's working folder.
    """
    if ray.is_initialized():
        yield
        return
    check_reachable(address, "--ray-address") if address else check_reachable(os.environ.get("RAY_ADDRESS"), "RAY_ADDRESS")
    with tempfile.TemporaryDirectory(prefix="mammofuse-ray-", ignore_cleanup_errors=True) as empty:
        try:
            with chdir(empty):
                ray.init(address=address, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise MammofuseError(f"--ray-address {address or 'auto'}: cannot connect to Ray ({exc})") from None
        try:
            yield
        finally:
            ray.shutdown()


def check_reachable(address: str | None, source: str = "--ray-address", timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Fail within ``timeout`` seconds when nothing listens at ``address`` (``HOST:PORT`` or ``ray://HOST:PORT``,
    given by ``source``): Ray itself retries an unreachable cluster for minutes. ``auto``, ``local`` and None are Ray's to resolve."""
    if not address or address in ("auto", "local"):
        return
    host, sep, port = address.split("://", 1)[-1].rpartition(":")
    if not sep or not port.isdigit():
        return  # not HOST:PORT: Ray says what is wrong with it
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else exc.strerror or str(exc)
        raise MammofuseError(f"{source} {address}: cannot reach {host}:{port} ({reason.lower()})") from None


def local_ray_folder() -> str:
    """The folder a local Ray keeps its sessions in, by Ray's rule: ``$RAY_TMPDIR/ray``, else on Linux ``$TMPDIR/ray``,
    else ``/tmp/ray`` (on Linux and macOS) or the system's temporary folder's ``ray``."""
    if "RAY_TMPDIR" in os.environ:
        return os.path.join(os.environ["RAY_TMPDIR"], "ray")
    if sys.platform.startswith("linux") and "TMPDIR" in os.environ:
        return os.path.join(os.environ["TMPDIR"], "ray")
    if sys.platform.startswith(("linux", "darwin")):
        return "/tmp/ray"
    return os.path.join(tempfile.gettempdir(), "ray")


def check_local_ray_folder(folder: str) -> None:
    """Fail at once when a local Ray cannot start in ``folder``: it has under :data:`LOCAL_RAY_MIN_FREE_MB` free, cannot
    be written, or is too long a path for the Unix sockets Ray makes in it (:data:`UNIX_SOCKET_PATH_MAX`)."""
    existing = next(p for p in (folder, *(str(p) for p in Path(folder).parents)) if os.path.isdir(p))
    try:
        free_mb = shutil.disk_usage(existing).free / 2**20
    except OSError as exc:
        raise _no_local_ray(folder, f"{(exc.strerror or str(exc)).lower()}; set RAY_TMPDIR to a folder you can write") from None
    if free_mb < LOCAL_RAY_MIN_FREE_MB:
        raise _no_local_ray(folder, f"no space left on device ({free_mb:.0f} MB free); free some there, or set RAY_TMPDIR to a folder with room")
    try:
        check_writable_folder(folder)
    except OutputError as exc:
        raise _no_local_ray(folder, f"{exc.problem.lower()}; set RAY_TMPDIR to a folder you can write") from None
    session = f"session_2000-01-01_00-00-00_000000_{os.getpid()}"  # Ray's: date, time, microseconds, the driver's pid
    length = len(os.fsencode(os.path.join(folder, session, "sockets", "plasma_store")))  # its longest socket path
    if length > UNIX_SOCKET_PATH_MAX:
        raise _no_local_ray(folder, f"its socket paths would be {length} bytes, over the {UNIX_SOCKET_PATH_MAX} a Unix socket "
                                    "takes; set RAY_TMPDIR to a shorter folder (such as /tmp)")


def _no_local_ray(folder: str, problem: str) -> OutputError:
    return OutputError(folder, problem, f"cannot start a local Ray in {folder}: {problem}")


@contextmanager
def _quiet(ray: Any) -> Iterator[None]:
    """No Ray Data progress bars or log lines on stderr while scoring (the caller reports progress); restored afterwards."""
    context = ray.data.DataContext.get_current()
    logger = logging.getLogger("ray.data")
    saved = context.enable_progress_bars, logger.level
    context.enable_progress_bars = False
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        context.enable_progress_bars = saved[0]
        logger.setLevel(saved[1])


def _on_cpu(model: Any) -> Any:
    """The model with its weights on the CPU (the actors move it to their device)."""
    return model if all(p.device.type == "cpu" for p in model.parameters()) else copy.deepcopy(model).cpu()


def _decode(batch: dict[str, np.ndarray], config: Any) -> dict[str, np.ndarray]:
    """Model inputs of a batch of cases: the local engine's dataset items, collated as its DataLoader does."""
    from torch.utils.data import default_collate

    from mammofuse.inference import LesionDataset

    samples = [pickle.loads(raw) for raw in batch["sample"]]
    dataset = LesionDataset(samples, config.recipe, config.vocabulary, use_images=config.uses_image, radiomics=config.radiomics)
    items = default_collate([dataset[k] for k in range(len(samples))])
    inputs = {name: items[name].numpy() for name in _INPUTS if items[name].shape[-1]}  # radiomics only when the model uses them
    return {"index": batch["index"], **inputs, "error": np.array(items["error"], dtype=object), "note": np.array(items["note"], dtype=object)}


class _Scorer:
    """A scoring actor: the model on its device, logits to scores by the local engine's rule."""

    def __init__(self, weights: list[Any], device: str) -> None:
        import ray

        self.model = ray.get(weights[0]).to(device).eval()
        self.device = device

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        from mammofuse.inference import batch_scores, had_input, model_inputs

        count = len(batch["index"])
        tensors = {name: torch.from_numpy(np.ascontiguousarray(batch[name])) if name in batch else torch.zeros((count, 0)) for name in _INPUTS}
        with torch.inference_mode():
            logits = self.model(**model_inputs(tensors, self.device)).logits.float().cpu().numpy()
        used = had_input(self.model, tensors["image_present"], tensors["clinical_mask"])
        scored = batch_scores(batch["index"].tolist(), logits, [str(e) for e in batch["error"]], [str(n) for n in batch["note"]], used)
        return {"index": batch["index"], "probability": scored.probabilities, "error": np.array(scored.errors, dtype=object), "note": batch["note"]}

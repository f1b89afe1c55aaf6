"""The ``last/`` checkpoint: everything an exact ``--resume`` needs, without pickle.

Tensors (model, optimiser moments, RNG states) go to ``last/epoch-NNNN.safetensors``;
scalars (epoch, best score, history, optimiser hyper-parameters, scheduler, Python and
NumPy RNG, the working folder relative paths in the settings start from) to ``last/checkpoint.json``, which names its tensor file. Both are
staged first and moved in together, the JSON last, with the rest of the epoch's files
(:func:`~mammofuse.atomic.write_together`), so a failed write or a crash at any moment leaves the previous
checkpoint whole; older tensor files are deleted only after the new JSON is in place. Tensors are
serialised in memory and written through :mod:`mammofuse.atomic` (safetensors' own file
writer keeps a temporary of its own and makes files mode 0600); temporaries that a killed
run left behind are removed by :func:`remove_temporaries` when the next run holds the folder.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mammofuse.atomic import remove_stale_temporaries
from mammofuse.errors import MammofuseError, ResumeMismatch, check_openable, reading, unreadable

LAST_DIR = "last"
STATE_NAME = "checkpoint.json"
FORMAT = 2  # 2: the data digest covers each case's data, not only its id; the working folder is recorded


def rng_state(device: torch.device) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, scalars) capturing the torch (CPU, and the run's GPU where ``device`` is one), NumPy and Python RNGs.

    Under torchrun every rank seeds alike and draws alike (its shard is padded to the same batches), so the state rank 0
    saves is every rank's, each on its own GPU.
    """
    tensors = {"rng.torch": torch.get_rng_state()}
    if device.type == "cuda":
        tensors["rng.cuda"] = torch.cuda.get_rng_state(device)
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    tensors["rng.numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    py_version, py_state, py_gauss = random.getstate()
    scalars = {"numpy": [kind, int(pos), int(has_gauss), float(gauss)], "python": [py_version, list(py_state), py_gauss]}
    return tensors, scalars


def _state(out: Path) -> dict[str, Any]:
    """The JSON state of ``out/last``, checked to be a checkpoint of this format naming its tensor file."""
    folder = Path(out) / LAST_DIR
    path = folder / STATE_NAME
    try:
        scalars = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MammofuseError(f"{out}: nothing to resume (no {LAST_DIR}/{STATE_NAME}); run without --resume") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MammofuseError(f"{path}: not valid JSON ({exc})") from None
    except OSError as exc:  # no permission
        raise unreadable(path, exc) from None
    if not isinstance(scalars, dict):
        raise MammofuseError(f"{path}: a checkpoint is a JSON object, not {type(scalars).__name__}; delete {folder} and train again")
    version = scalars.get("format")
    if isinstance(version, int) and not isinstance(version, bool) and 0 < version < FORMAT:
        raise ResumeMismatch(f"{path}: a checkpoint of an older mammofuse (format {version}, now {FORMAT}), which this one cannot resume: "
                             f"train again (delete {folder}, or choose another --out)", "an older mammofuse version")
    if version != FORMAT:
        raise MammofuseError(f"{path}: checkpoint format {version!r} is not supported by this mammofuse (needs {FORMAT}); delete {folder} and train again")
    if not isinstance(scalars.get("tensors"), str):
        raise MammofuseError(f"{path}: names no tensor file (\"tensors\"); delete {folder} and train again")
    return scalars


def set_rng_state(tensors: dict[str, torch.Tensor], scalars: dict[str, Any], device: torch.device) -> None:
    """Restore the torch (CPU, and on ``device`` where it is a GPU), NumPy and Python RNGs from what :func:`rng_state` captured.

    A GPU state goes to this run's GPU, whatever GPUs the machine has (checkpoints before 0.2 hold one per visible GPU,
    ``rng.cuda.<index>``: that of this run's index is taken).
    """
    torch.set_rng_state(tensors["rng.torch"])
    if device.type == "cuda" and (state := tensors.get("rng.cuda", tensors.get(f"rng.cuda.{device.index or 0}"))) is not None:
        torch.cuda.set_rng_state(state, device)
    kind, pos, has_gauss, gauss = scalars["numpy"]
    np.random.set_state((kind, tensors["rng.numpy"].numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, state, py_gauss = scalars["python"]
    random.setstate((version, tuple(state), py_gauss))


def optimizer_state(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimiser's state dict into tensors and JSON scalars."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, entry in state["state"].items():
        for name, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{pid}.{name}"] = value
            else:
                scalars.setdefault(str(pid), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def load_optimizer_state(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], scalars: dict[str, Any]) -> None:
    """Load into ``optimizer`` the state that :func:`optimizer_state` split into tensors and scalars."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    for pid, entry in scalars["scalars"].items():
        state.setdefault(int(pid), {}).update(entry)
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in scalars["param_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def checkpoint_files(out: Path, epoch: int, model_state: dict[str, torch.Tensor], extra_tensors: dict[str, torch.Tensor],
                     scalars: dict[str, Any]) -> dict[Path, bytes]:
    """The files of ``out/last`` for ``epoch``, the tensor file first and the JSON that names it last, to be written
    together (:func:`~mammofuse.atomic.write_together`), then :func:`remove_older_tensors`."""
    from safetensors.torch import save

    folder = Path(out) / LAST_DIR
    name = _tensor_name(epoch)
    tensors = {f"model.{k}": v for k, v in model_state.items()}
    tensors.update(extra_tensors)
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    state = json.dumps({"format": FORMAT, "epoch": epoch, "tensors": name, **scalars}, indent=1) + "\n"
    return {folder / name: save(tensors, metadata={"format": "mammofuse-checkpoint"}), folder / STATE_NAME: state.encode()}


def remove_older_tensors(out: Path, epoch: int) -> None:
    """Delete the tensor files of ``out/last`` other than that of ``epoch``, once its JSON names it."""
    for old in (Path(out) / LAST_DIR).glob("epoch-*.safetensors"):
        if old.name != _tensor_name(epoch):
            old.unlink(missing_ok=True)


def _tensor_name(epoch: int) -> str:
    return f"epoch-{epoch:04d}.safetensors"


def has_checkpoint(out: Path) -> bool:
    """Whether ``out`` holds a ``last/`` checkpoint to resume from."""
    path = Path(out) / LAST_DIR / STATE_NAME
    with reading(path):  # a last/ that cannot be searched
        return path.is_file()


def remove_temporaries(out: Path) -> None:
    """Delete the temporaries a killed run left in ``out`` and its ``last/``: only by the process holding ``out``
    (:func:`~mammofuse.atomic.folder_lock`), as another's would be files it is writing."""
    for folder in (Path(out), Path(out) / LAST_DIR):
        remove_stale_temporaries(folder)


def saved_settings(out: Path) -> dict[str, Any]:
    """The training settings of the run in ``out`` (its ``last/`` checkpoint), which ``--resume`` continues; relative
    paths in them (``pretrained``, ``threshold_from``) name the same files from the current folder."""
    from mammofuse.training.settings import rebase_paths

    state = _state(out)
    settings, workdir = state.get("settings"), state.get("workdir")
    if not isinstance(settings, dict):
        raise MammofuseError(f"{Path(out) / LAST_DIR / STATE_NAME}: records no settings; delete {Path(out) / LAST_DIR} and train again")
    return rebase_paths(settings, workdir) if isinstance(workdir, str) else settings  # without one, resuming finds it damaged


def load_checkpoint(out: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, scalars) of ``out/last``; model weights are the ``model.*`` tensors."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(out) / LAST_DIR
    scalars = _state(out)
    try:
        check_openable(folder / scalars["tensors"])
        tensors = load_file(str(folder / scalars["tensors"]))
    except (FileNotFoundError, SafetensorError, OSError) as exc:
        raise MammofuseError(f"{folder / scalars['tensors']}: cannot read the checkpoint tensors ({exc})") from None
    return tensors, scalars

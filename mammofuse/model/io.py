"""Save and load models as ``model.safetensors`` + ``config.json`` (never pickle)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from mammofuse import RESEARCH_NOTICE
from mammofuse.atomic import write_together
from mammofuse.clinical import load_schema
from mammofuse.errors import MammofuseError, check_openable
from mammofuse.hub import (  # the file names live with model resolution (torch-free)
    CARD_METADATA,
    CARD_NAME,
    CONFIG_NAME,
    WEIGHTS_NAME,
)
from mammofuse.model.config import ModelConfig
from mammofuse.model.mammofuse import MammoFuse
from mammofuse.provenance import unfinished_remark


def save_model(model: MammoFuse, folder: str | Path) -> Path:
    """Write weights, config and, where needed, a minimal model card (:func:`model_files`) into ``folder``, atomically
    and together (:func:`~mammofuse.atomic.write_together`); returns it."""
    folder = Path(folder)
    write_together(model_files(model, folder))
    return folder


def model_files(model: MammoFuse, folder: Path) -> dict[Path, bytes]:
    """The files :func:`save_model` writes into ``folder``: weights, config and a minimal model card where needed.

    A card that is there already is kept while it can still describe the model: a user's own card, or
    a card mammofuse wrote for this same config. A minimal card, and a training card of another config
    (an earlier model's fusion, threshold, metrics), are replaced by a minimal card of this model.
    Training then writes its full card.
    """
    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    # together: a run stopped between them would pair these weights with another save's threshold and provenance
    return {folder / WEIGHTS_NAME: save(state, metadata={"format": "pt"}), **config_files(model.config, folder)}


def config_files(config: ModelConfig, folder: Path) -> dict[Path, bytes]:
    """``config.json`` of ``config`` and, where the card there cannot describe it (:func:`model_files`), a minimal card."""
    text = config_text(config)
    card = folder / CARD_NAME
    stale = not card.exists() or _is_minimal_card(card) or (_is_mammofuse_card(card) and _text(folder / CONFIG_NAME) != text)
    files = {folder / CONFIG_NAME: text.encode()}
    if stale:
        files[card] = _minimal_card(config).encode()
    return files


def config_text(config: ModelConfig) -> str:
    """The text of ``config.json`` for ``config``."""
    return json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n"


_LOAD_LINE = "- Load with `mammofuse.MammoFuse.from_pretrained(...)` or `mammofuse predict --model ...`\n"
# What _minimal_card writes, whatever the model: a training card (same title, then " on DATASET") does not match.
_MINIMAL_CARD = re.compile(
    re.escape(f"{CARD_METADATA}\n# mammofuse model: ") + r"\w+ fusion\n\n"
    + re.escape(f"**{RESEARCH_NOTICE}** Not validated for clinical use.\n\n") + r"(- [^\n]*\n){1,2}" + re.escape(_LOAD_LINE)
)


def _is_minimal_card(path: Path) -> bool:
    """Whether ``path`` is a card :func:`_minimal_card` wrote (of an earlier model, so stale), not a user's or training's."""
    try:
        with path.open(encoding="utf-8") as fh:
            return _MINIMAL_CARD.fullmatch(fh.read(4096)) is not None
    except (OSError, UnicodeDecodeError):
        return False


def _is_mammofuse_card(path: Path) -> bool:
    """Whether ``path`` is a card mammofuse wrote (minimal or training), not a user's own."""
    return (_text(path) or "").startswith(f"{CARD_METADATA}\n# mammofuse model: ")


def _text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _minimal_card(config: ModelConfig) -> str:
    image = f"{config.backbone} image encoder, " if config.uses_image else ""
    unfinished = f"- Unfinished: {remark}\n" if (remark := unfinished_remark(config.provenance)) else ""
    return (
        f"{CARD_METADATA}\n# mammofuse model: {config.fusion} fusion\n\n**{RESEARCH_NOTICE}** Not validated for clinical use.\n\n"
        f"- {image}clinical vocabulary `{config.vocabulary}`, decision threshold {config.threshold:.3f}\n{unfinished}{_LOAD_LINE}"
    )


def state_digest(module: torch.nn.Module) -> str:
    """SHA-256 of a module's parameters and buffers (names, shapes, dtypes, bytes): which weights these are."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def read_config(folder: str | Path) -> ModelConfig:
    """The model config of a folder, validated against the installed vocabulary."""
    path = Path(folder) / CONFIG_NAME
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MammofuseError(f"{path}: not found (a model folder holds {WEIGHTS_NAME} and {CONFIG_NAME})") from None
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, an integer of over 4,300 digits
        raise MammofuseError(f"{path}: not valid JSON ({type(exc).__name__}: {str(exc)[:100]})") from None
    except OSError as exc:
        raise MammofuseError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        config = ModelConfig.from_dict(data)
        schema = load_schema(config.vocabulary)
    except MammofuseError as exc:
        raise MammofuseError(f"{path}: {exc}") from None
    if list(config.field_sizes) != list(schema.field_sizes):
        raise MammofuseError(f"{path}: clinical vocabulary {config.vocabulary} does not match this mammofuse's copy")
    return config


def load_model(folder: str | Path, device: str | torch.device = "cpu") -> MammoFuse:
    """Rebuild a model from ``folder`` with strict key checking, in eval mode."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    config = read_config(folder)
    model = MammoFuse(config)
    try:
        check_openable(folder / WEIGHTS_NAME)
        state = load_file(str(folder / WEIGHTS_NAME), device="cpu")
    except FileNotFoundError:
        raise MammofuseError(f"{folder / WEIGHTS_NAME}: not found") from None
    except (SafetensorError, OSError) as exc:
        raise MammofuseError(f"{folder / WEIGHTS_NAME}: not a valid safetensors file ({exc})") from None
    check_weights(state, model, folder / WEIGHTS_NAME)
    mismatch = f"{folder / WEIGHTS_NAME}: weights do not match config.json"
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # same keys, other shapes
        raise MammofuseError(f"{mismatch} ({str(exc).splitlines()[-1].strip()})") from None
    if result.missing_keys or result.unexpected_keys:
        raise MammofuseError(f"{mismatch} (missing {result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]})")
    return model.to(device).eval()


def check_weights(state: dict[str, torch.Tensor], module: torch.nn.Module, path: object) -> None:
    """Raise MammofuseError naming ``path`` when the weights ``state`` about to be loaded into ``module`` are unusable.

    A tensor of another kind than the module's (integer, bool or complex where it holds floating point, or
    floating point for an integer buffer such as BatchNorm's ``num_batches_tracked``) would be cast by
    ``load_state_dict`` (scores then constant); NaN or infinite values, once cast to the module's type, make
    every output NaN. Floating types may differ (float16 weights load into a float32 model). Tensors of
    another name or shape are left to ``load_state_dict`` to report.
    """
    expected = module.state_dict()
    pairs = {name: (tensor, expected[name]) for name, tensor in state.items() if name in expected and tensor.shape == expected[name].shape}
    cast = [name for name, (tensor, own) in pairs.items() if _kind(tensor) != _kind(own)]
    if cast:
        tensor, own = pairs[cast[0]]
        raise MammofuseError(f"{path}: {len(cast)} weight tensor(s) of the wrong type (e.g. {cast[0]} is {str(tensor.dtype)[6:]}, "
                             f"the model's is {str(own.dtype)[6:]}): not weights of this model")
    bad = [name for name, (tensor, own) in pairs.items() if own.is_floating_point() and not bool(torch.isfinite(tensor.to(own.dtype)).all())]
    if bad:
        raise MammofuseError(f"{path}: {len(bad)} weight tensor(s) hold NaN or infinite values (e.g. {bad[0]}): a diverged or damaged model")


def _kind(tensor: torch.Tensor) -> str:
    """floating, complex, bool or integer: what a tensor's dtype holds."""
    if tensor.is_floating_point():
        return "floating"
    if tensor.is_complex():
        return "complex"
    return "bool" if tensor.dtype == torch.bool else "integer"

"""Training settings: one dataclass, read from YAML, saved as ``train_config.yaml``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from mammofuse.errors import MammofuseError
from mammofuse.validation import Rule, check_all

FEATURE_CACHES = ("memory", "disk", "off")
DEVICES = ("auto", "cpu", "cuda")
INPUTS = ("roi", "full")

# One rule per setting: a new setting gets a row here.
RULES: dict[str, Rule] = {
    "fusion": Rule(str),  # and one of model.config.FUSIONS
    "backbone": Rule(str),
    "image_size": Rule(int, 32, 4096),
    "input": Rule(str, choices=INPUTS),
    "epochs": Rule(int, 1, 100_000),
    "freeze_epochs": Rule(int, 0, 100_000),
    "batch_size": Rule(int, 1, 65_536),
    "lr": Rule(float, 1e-12, 10),
    "finetune_lr": Rule(float, 1e-12, 10),
    "weight_decay": Rule(float, 0, 10),
    "modality_dropout": Rule(float, 0, 1, high_open=True),
    "proj_dim": Rule(int, 4, 4096),
    "seed": Rule(int, 0, 2**32 - 1),
    "device": Rule(str, choices=DEVICES),
    "pretrained": Rule(str, choices=("imagenet",), optional=True),
    "patience": Rule(int, 1, 100_000),
    "val_fraction": Rule(float, 0.01, 0.99),
    "workers": Rule(int, 0, 256),
    "feature_cache": Rule(str, choices=FEATURE_CACHES),
    "dataset": Rule(str),
    "amp": Rule(bool),
}

# Settings that may change between a run and its ``--resume`` without changing the result's meaning.
RESUMABLE_CHANGES = frozenset({"epochs", "patience", "device", "workers", "feature_cache", "amp"})


@dataclass
class TrainSettings:
    """Everything that decides a training run (JSON/YAML friendly).

    Attributes:
        fusion: image, clinical, concat, cross or co.
        backbone: resnet18, resnet34 or resnet50 (ignored by ``clinical``).
        image_size: side of the square model input.
        input: ``roi`` (lesion crop when known) or ``full`` (breast crop).
        epochs: total epochs (the last one, also when resuming).
        freeze_epochs: first epochs with the backbone frozen (heads only, features cached).
        batch_size: samples per optimiser step (per process under torchrun).
        lr: learning rate of the heads while the backbone is frozen.
        finetune_lr: learning rate of the whole model once the backbone is unfrozen.
        weight_decay: AdamW weight decay.
        modality_dropout: probability of dropping a whole modality per training case.
        proj_dim: shared token dimension d.
        seed: seeds weights, shuffling, dropout and the validation split.
        device: auto (CUDA when available), cpu or cuda.
        pretrained: ``imagenet`` for torchvision's weights (must be in the local cache), or None.
        patience: stop after this many epochs without a better validation AUC.
        val_fraction: share of training patients held out for validation (CLI split).
        workers: DataLoader worker processes for image reading.
        feature_cache: where frozen backbone features live: memory, disk or off.
        dataset: dataset name recorded in provenance.
        amp: mixed precision on CUDA (never used on CPU).
    """

    fusion: str = "cross"
    backbone: str = "resnet50"
    image_size: int = 224
    input: str = "roi"
    epochs: int = 10
    freeze_epochs: int = 2
    batch_size: int = 16
    lr: float = 1e-3
    finetune_lr: float = 1e-4
    weight_decay: float = 1e-4
    modality_dropout: float = 0.3
    proj_dim: int = 100
    seed: int = 0
    device: str = "auto"
    pretrained: str | None = None
    patience: int = 5
    val_fraction: float = 0.2
    workers: int = 0
    feature_cache: str = "memory"
    dataset: str = ""
    amp: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check (and normalise) every setting against :data:`RULES`; raise MammofuseError naming the first bad one."""
        from mammofuse.model.config import BACKBONES, FUSIONS

        for name, value in check_all(asdict(self), RULES).items():
            setattr(self, name, value)
        _choice("fusion", self.fusion, FUSIONS)
        if self.fusion != "clinical":
            _choice("backbone", self.backbone, BACKBONES)

    @property
    def uses_image(self) -> bool:
        return self.fusion != "clinical"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "settings") -> "TrainSettings":
        """Settings from a mapping; unknown keys are an error naming the valid ones."""
        if not isinstance(data, dict):
            raise MammofuseError(f"{source}: expected a mapping of settings, got {type(data).__name__}")
        data = {str(k).replace("-", "_"): v for k, v in data.items()}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise MammofuseError(f"{source}: unknown setting(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
        try:
            return cls(**data)
        except (TypeError, MammofuseError) as exc:
            raise MammofuseError(f"{source}: {exc}") from None

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.as_dict(), sort_keys=False)


def read_settings_yaml(path: str | Path) -> dict[str, Any]:
    """The raw settings mapping of a YAML file (validated when turned into TrainSettings)."""
    import yaml

    path = Path(path)
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_loader())  # noqa: S506 (a SafeLoader)
    except FileNotFoundError:
        raise MammofuseError(f"{path}: config file not found") from None
    except (UnicodeDecodeError, IsADirectoryError) as exc:
        raise MammofuseError(f"{path}: not a UTF-8 text file ({type(exc).__name__})") from None
    except yaml.YAMLError as exc:
        raise MammofuseError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise MammofuseError(f"{path}: expected a mapping of settings at the top level")
    return data


def load_settings(path: str | Path, **overrides: Any) -> TrainSettings:
    """Settings from a YAML file, with ``overrides`` (those not None) taking precedence."""
    data = read_settings_yaml(path)
    data = {str(k).replace("-", "_"): v for k, v in data.items()}
    data.update({k: v for k, v in overrides.items() if v is not None})
    return TrainSettings.from_dict(data, source=str(path))


def _loader() -> type:
    """PyYAML's SafeLoader without aliases: a settings file needs none, and nested aliases
    (a "billion laughs" file of a few hundred bytes) expand to gigabytes."""
    import yaml

    class NoAliasSafeLoader(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in settings", self.peek_event().start_mark)
            return super().compose_node(parent, index)

    return NoAliasSafeLoader


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise MammofuseError(f"{name} must be one of {', '.join(choices)}, not {value!r}")

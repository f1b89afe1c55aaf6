"""Training settings: one dataclass, read from YAML, saved as ``train_config.yaml``."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mammofuse.backbones import REGISTERED_BACKBONES, default_backbone
from mammofuse.errors import MammofuseError, reading
from mammofuse.hub import REGISTRY
from mammofuse.validation import MAX_SEED, MIN_IMAGE_SIZE, Rule, check_all

if TYPE_CHECKING:
    from mammofuse.imaging.preprocess import PreprocessRecipe

FEATURE_CACHES = ("memory", "disk", "off")
INPUTS = ("roi", "full")
SCHEDULES = ("cosine", "onecycle", "step")
SELECTIONS = ("last", "best")
WITHOUT_REGION = ("breast", "skip")

# One rule per setting: a new setting gets a row here.
RULES: dict[str, Rule] = {
    "fusion": Rule(str),  # and one of fusion.FUSIONS
    "backbone": Rule(str),
    "image_size": Rule(int, MIN_IMAGE_SIZE, 4096),
    "input": Rule(str, choices=INPUTS),
    "epochs": Rule(int, 1, 100_000),
    "freeze_epochs": Rule(int, 0, 100_000),
    "batch_size": Rule(int, 1, 65_536),
    "lr": Rule(float, 1e-12, 10),
    "finetune_lr": Rule(float, 1e-12, 10),
    "weight_decay": Rule(float, 0, 10),
    "modality_dropout": Rule(float, 0, 1, high_open=True),
    "proj_dim": Rule(int, 4, 4096),
    "seed": Rule(int, 0, MAX_SEED),
    "device": Rule(str),  # and one that mammofuse.device.resolve_device accepts here
    "pretrained": Rule(str, optional=True),  # auto, none, imagenet, a registered backbone or a file: checked when loaded
    "patience": Rule(int, 1, 100_000),
    "val_fraction": Rule(float, 0, 0.99),  # and 0 or at least 0.01
    "workers": Rule(int, 0, 256),
    "feature_cache": Rule(str, choices=FEATURE_CACHES),
    "dataset": Rule(str),
    "amp": Rule(bool),
    "roi_context": Rule(float, 0.5, 10),
    "without_region": Rule(str, choices=WITHOUT_REGION),
    "schedule": Rule(str, choices=SCHEDULES),
    "warmup_epochs": Rule(int, 0, 100_000),
    "augment": Rule(bool),
    "selection": Rule(str, choices=SELECTIONS),
    "radiomics": Rule(bool),
    "aux_findings": Rule(float, 0, 100),
    "threshold_from": Rule(str, optional=True),  # an ablate run: checked when training starts
    "patient_digests": Rule(bool),
}

RESNET_STRIDE = 32  # a ResNet's last map is image_size / 32 a side, rounded up

# Settings that may name a file or folder, relative to the working folder the run started in.
PATH_SETTINGS = ("pretrained", "threshold_from")

# Settings that may change between a run and its ``--resume`` without changing the result's meaning.
RESUMABLE_CHANGES = frozenset({"epochs", "patience", "device", "workers", "feature_cache", "amp", "patient_digests"})


def setting_path(value: str | None, workdir: str | Path) -> str | None:
    """What a :data:`PATH_SETTINGS` value names when given in ``workdir``: an absolute path, or a registered name
    (backbone or model), ``imagenet`` or None as it is."""
    if value is None or value == "imagenet" or value in REGISTERED_BACKBONES or value in REGISTRY:
        return value
    return os.path.abspath(os.path.join(workdir, os.path.expanduser(value)))


def rebase_paths(values: dict[str, Any], workdir: str | Path) -> dict[str, Any]:
    """Settings given in ``workdir``, their relative paths made absolute when the current folder is another one
    (kept as given otherwise: a model's provenance records what its trainer wrote)."""
    if os.path.abspath(workdir) == os.getcwd():
        return values
    return {**values, **{k: setting_path(values[k], workdir) for k in PATH_SETTINGS if k in values}}


def resumable_changes(settings: "TrainSettings") -> frozenset[str]:
    """What may change on ``--resume``: not the epoch count when the schedule spans the whole run."""
    return RESUMABLE_CHANGES if settings.schedule == "step" else RESUMABLE_CHANGES - {"epochs"}


@dataclass
class TrainSettings:
    """Everything that decides a training run (JSON/YAML friendly).

    The defaults are the recipe measured best on CBIS-DDSM masses without downloaded weights
    (docs/benchmarks.md): a small CNN on lesion crops, starting from the shipped self-supervised
    backbone, trained end to end for a fixed number of epochs under a cosine schedule with
    augmentation, keeping the last epoch.

    Attributes:
        fusion: one of :class:`mammofuse.fusion.Fusion` (image, clinical, concat, cross, co, late).
        backbone: cnn4, resnet18, resnet34 or resnet50 (ignored by ``clinical``).
        image_size: side of the square model input.
        input: ``roi`` (lesion crop when known) or ``full`` (breast crop).
        roi_context: lesion crop side as a multiple of the lesion's diameter.
        without_region: ``roi`` cases without a lesion region: ``breast`` (crop the breast) or
            ``skip`` (leave the image out).
        canvas: [height, width] images are min-max scaled and stretched to before cropping, so
            that other files (e.g. full-resolution DICOMs) are brought into the training images'
            geometry (also given as ``"800x800"``); ``auto``: the training images' size when they all
            share one, else None; None (``none``): the files' own pixels.
        epochs: total epochs (the last one, also when resuming).
        freeze_epochs: first epochs with the backbone frozen (heads only, features cached); only
            with pretrained weights: a randomly initialised backbone is never frozen.
        batch_size: samples per optimiser step (per process under torchrun).
        lr: peak learning rate (of the heads only, while a pretrained backbone is frozen).
        finetune_lr: peak learning rate of the whole model after a frozen phase: it scales the run's
            schedule as ``lr`` does, so fine-tuning starts where the schedule then stands (20 epochs,
            10 frozen: 0.505 x finetune_lr at epoch 11); the model card gives the rates used.
        schedule: ``cosine`` (linear warm-up, then cosine to 1% over the run), ``onecycle``
            (30% rise, then cosine) or ``step`` (x0.9 per epoch within each phase).
        warmup_epochs: warm-up epochs of the cosine schedule.
        augment: random flips, 90-degree and small rotations, scale and intensity jitter of
            training images (never of validation or test images).
        selection: ``last`` keeps the last epoch (a fixed epoch count, for small data) or ``best``
            the epoch of best validation AUC (with early stopping after ``patience``).
        radiomics: add a texture-statistics and lesion-size token to the image branch.
        aux_findings: weight of an auxiliary training loss in which the image branch alone predicts
            the lesion's findings (shape, margin, calcification type and distribution; not the
            breast's density) of the training cases; 0 turns it off. Inference never uses it; on
            CBIS-DDSM masses it lifted the image arm by +0.010, +0.009 and +0.003 AUC in three fold seeds.
        weight_decay: AdamW weight decay.
        modality_dropout: probability of dropping a whole modality per training case.
        proj_dim: shared token dimension d.
        seed: seeds weights, shuffling, dropout and the validation split.
        device: auto (CUDA when available), cpu, cuda, cuda:N or mps; it must exist on this machine
            (under torchrun, ``cuda`` and ``auto`` mean each process's own GPU).
        pretrained: ``auto`` (the default) for the backbone mammofuse ships for this architecture
            (:data:`mammofuse.backbones.DEFAULT_FOR_ARCHITECTURE`; random weights where none ships),
            ``imagenet`` for torchvision's weights (must be in the local cache), a backbone from
            ``mammofuse pretrain`` (a registered name or a .safetensors path), a trained model (a folder
            or a registered model such as ``default``: its image branch), or ``none``/None for random
            weights. ``auto`` is resolved to the name when the settings are made, so saved settings
            say what the run started from.
        patience: with ``selection: best``, stop after this many epochs without a better validation AUC.
        val_fraction: share of training patients held out for validation (CLI split); 0 holds out
            none, so every training patient trains (``selection: last`` only; the stored threshold
            is then 0.5, not tuned, unless ``threshold_from`` gives one).
        threshold_from: a ``mammofuse ablate`` run (its folder, or one arm's) that cross-validated
            this recipe on exactly these training cases: the stored decision threshold is Youden's J
            on its pooled out-of-fold predictions instead of on the validation part
            (:mod:`mammofuse.evaluation.oof`).
        workers: DataLoader worker processes for image reading.
        feature_cache: where frozen backbone features live: memory, disk or off.
        dataset: dataset name recorded in provenance.
        amp: mixed precision on CUDA (never used on CPU).
        patient_digests: record digests of the training and validation patients (and of those the
            ``pretrained`` model learnt from) in the model's provenance, for ``evaluate``'s overlap
            check. They are pseudonymous, not anonymous: anyone holding a patient id can test whether
            it trained the model. Off for a model to publish: its overlap cannot be checked then.
    """

    fusion: str = "cross"
    backbone: str = "cnn4"
    image_size: int = 64
    input: str = "roi"
    roi_context: float = 1.5
    without_region: str = "skip"
    canvas: list[int] | str | None = "auto"
    epochs: int = 20
    freeze_epochs: int = 0
    batch_size: int = 32
    lr: float = 1e-3
    finetune_lr: float = 1e-4
    schedule: str = "cosine"
    warmup_epochs: int = 1
    augment: bool = True
    selection: str = "last"
    radiomics: bool = False
    aux_findings: float = 1.0
    threshold_from: str | None = None
    weight_decay: float = 1e-4
    modality_dropout: float = 0.3
    proj_dim: int = 100
    seed: int = 0
    device: str = "auto"
    pretrained: str | None = "auto"
    patience: int = 5
    val_fraction: float = 0.2
    workers: int = 0
    feature_cache: str = "memory"
    dataset: str = ""
    amp: bool = True
    patient_digests: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check (and normalise) every setting against :data:`RULES`; raise MammofuseError naming the first bad one."""
        from mammofuse.device import resolve_device
        from mammofuse.fusion import FUSIONS
        from mammofuse.model.config import ARCHITECTURES

        for name, value in check_all(asdict(self), RULES, text_numbers=True).items():  # from YAML
            setattr(self, name, value)
        self.canvas = _canvas(self.canvas)
        for name in ("pretrained", "threshold_from"):  # an unset shell variable must not quietly mean none or the current folder
            if getattr(self, name) is not None and not getattr(self, name).strip():
                raise MammofuseError(f"{name} is empty (an unset shell variable?): name it, or leave it out")
        if self.pretrained in ("auto", "none"):
            self.pretrained = default_backbone(self.backbone) if self.pretrained == "auto" else None
        _choice("fusion", self.fusion, FUSIONS)
        resolve_device(self.device)
        if self.uses_image:
            _choice("backbone", self.backbone, ARCHITECTURES)
        if self.uses_image and self.batch_size == 1 and self.backbone.startswith("resnet") and self.image_size <= RESNET_STRIDE:
            raise MammofuseError(f"batch_size 1 cannot train {self.backbone} at image_size {self.image_size}: its last map is 1x1, one value per "
                                 f"channel for BatchNorm; use batch_size 2 or more, or image_size {RESNET_STRIDE + 1} or more")
        if self.freeze_epochs and not self.pretrained and self.uses_image:
            raise MammofuseError("freeze_epochs needs pretrained weights: a randomly initialised backbone is never frozen")
        if 0 < self.val_fraction < 0.01:
            raise MammofuseError(f"val_fraction must be 0 (no validation part) or in [0.01, 0.99], not {self.val_fraction:g}")
        if not self.val_fraction and self.selection == "best":
            raise MammofuseError("selection best needs a validation part: val_fraction 0 trains on every patient, with selection last")
        if self.canvas not in (None, "auto") and (
            not isinstance(self.canvas, (list, tuple)) or len(self.canvas) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and 32 <= v <= 8192 for v in self.canvas)
        ):
            raise MammofuseError(f"canvas must be auto, none, HEIGHTxWIDTH or [height, width] in pixels (32 to 8192), not {self.canvas!r}")

    @property
    def uses_image(self) -> bool:
        from mammofuse.fusion import Fusion

        return Fusion(self.fusion).uses_image

    def recipe(self, auto_canvas: tuple[int, int] | None = None) -> "PreprocessRecipe":
        """The preprocessing these settings train with (saved with the model); ``auto_canvas`` resolves ``auto``."""
        from mammofuse.imaging.preprocess import PreprocessRecipe

        canvas = auto_canvas if self.canvas == "auto" else self.canvas
        return PreprocessRecipe(
            image_size=self.image_size, input=self.input, roi_context=float(self.roi_context),  # type: ignore[arg-type]
            canvas=tuple(canvas) if canvas else None, without_region=self.without_region,  # type: ignore[arg-type]
        )

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
    with reading(path):  # any other OSError: a file where a folder should be, a name too long
        try:
            data = yaml.load(path.read_text(encoding="utf-8"), Loader=_loader())  # noqa: S506 (a SafeLoader)
        except FileNotFoundError:
            raise MammofuseError(f"{path}: config file not found") from None
        except IsADirectoryError:
            raise MammofuseError(f"{path}: is a folder, not a YAML file") from None
        except UnicodeDecodeError as exc:
            raise MammofuseError(f"{path}: not a UTF-8 text file ({type(exc).__name__})") from None
        except yaml.YAMLError as exc:
            raise MammofuseError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        except RecursionError:
            raise MammofuseError(f"{path}: not valid YAML (nested too deeply)") from None
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
    """PyYAML's SafeLoader without aliases or repeated keys: a settings file needs no aliases, and nested
    ones (a "billion laughs" file of a few hundred bytes) expand to gigabytes."""
    import yaml

    class NoAliasSafeLoader(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in settings", self.peek_event().start_mark)
            return super().compose_node(parent, index)

        def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
            """A mapping whose keys (``-`` read as ``_``) are unique: of a setting given twice, which counts would be a guess."""
            seen: set[str] = set()
            for key_node, _ in node.value:
                key = str(self.construct_object(key_node, deep=True)).replace("-", "_")
                if key in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"{key} is given twice", key_node.start_mark)
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    return NoAliasSafeLoader


def _canvas(value: Any) -> Any:
    """``canvas`` as the flag, YAML and the library may spell it (``auto``, ``none``, ``800x800``, ``800,800``, a tuple)
    as "auto", None or [height, width]; anything else as it is, for :meth:`TrainSettings.validate` to refuse."""
    if isinstance(value, tuple):
        return list(value)
    if not isinstance(value, str):
        return value
    text = value.strip().lower()
    if text in ("auto", "none"):
        return None if text == "none" else "auto"
    parts = text.replace(",", "x").split("x")
    return [int(p) for p in parts] if len(parts) == 2 and all(p.strip().isdigit() for p in parts) else value


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise MammofuseError(f"{name} must be one of {', '.join(choices)}, not {value!r}")

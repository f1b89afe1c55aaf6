"""Everything needed to rebuild a model and feed it exactly as in training (``config.json``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from mammofuse.clinical.schema import DEFAULT_VOCABULARY, load_schema
from mammofuse.errors import MammofuseError
from mammofuse.fusion import FUSIONS, Fusion
from mammofuse.imaging.preprocess import PreprocessRecipe
from mammofuse.imaging.reader import MAX_PIXELS
from mammofuse.validation import MIN_IMAGE_SIZE, Rule, check_all, checked

ARCHITECTURES = ("cnn4", "resnet18", "resnet34", "resnet50")
CONFIG_FORMAT = 1

# What a config.json may hold: it can come from anyone's Hub repository.
RULES: dict[str, Rule] = {
    "fusion": Rule(str, choices=FUSIONS),
    "backbone": Rule(str),
    "proj_dim": Rule(int, 1, 4096),
    "num_heads": Rule(int, 1, 64),
    "dropout": Rule(float, 0, 1, high_open=True),
    "modality_dropout": Rule(float, 0, 1, high_open=True),
    "radiomics": Rule(bool),
    "aux_findings": Rule(bool),
    "vocabulary": Rule(str),
    "field_sizes": Rule(list),
    "preprocessing": Rule(dict),
    "threshold": Rule(float, 0, 1),
    "calibration": Rule(dict, optional=True),
    "provenance": Rule(dict),
}
RECIPE_RULES: dict[str, Rule] = {
    "image_size": Rule(int, MIN_IMAGE_SIZE, 4096),  # as training: a smaller input leaves cnn4 no pixel to pool
    "input": Rule(str, choices=("roi", "full")),
    "roi_context": Rule(float, 0.1, 100),
    "roi_min_size": Rule(int, 1, 4096),
    "mean": Rule(float, -1e3, 1e3),
    "std": Rule(float, 1e-6, 1e3),
    "canvas": Rule(list, optional=True),
    "without_region": Rule(str, choices=("breast", "skip")),
}
# The provenance fields mammofuse reads back (remarks, evaluate's report and leakage check); the rest is only recorded.
PROVENANCE_RULES: dict[str, Rule] = {
    "dataset": Rule(str, optional=True),
    "n_val": Rule(int, 0, optional=True),
    "threshold_from": Rule(dict, optional=True),
    "init_patients_unknown": Rule(bool, optional=True),
    "unfinished": Rule(dict, optional=True),
}
# Keys every config.json mammofuse wrote has held, which decide the scores: a default for a missing one (threshold 0.5,
# the resnet50 backbone, the library's recipe) would score otherwise than training did. Keys added later
# (radiomics, aux_findings, preprocessing.canvas and .without_region) default to what older models did.
REQUIRED = ("fusion", "backbone", "proj_dim", "num_heads", "vocabulary", "field_sizes", "preprocessing", "threshold")
REQUIRED_RECIPE = ("image_size", "input", "roi_context", "roi_min_size", "mean", "std")
PROVENANCE_STRING_LISTS = ("abnormality", "train_patients", "val_patients", "init_patients")
OOF_RULES: dict[str, Rule] = {"arm_folder": Rule(str), "folds": Rule(int, 0), "cases": Rule(int, 0)}
UNFINISHED_RULES: dict[str, Rule] = {"epochs_run": Rule(int, 0), "epochs": Rule(int, 1)}


@dataclass
class ModelConfig:
    """Architecture, preprocessing recipe, vocabulary, threshold, calibration and provenance.

    Kept to JSON-friendly values so ``config.json`` round-trips exactly. ``calibration``: the Platt map
    (``slope``, ``intercept``) the model applies to the logits of cases that have every modality it uses, in eval
    mode (:mod:`mammofuse.evaluation.calibration`); None: scores as trained.
    """

    fusion: str = "cross"
    backbone: str = "resnet50"
    proj_dim: int = 100
    num_heads: int = 4
    dropout: float = 0.1
    modality_dropout: float = 0.3
    radiomics: bool = False
    aux_findings: bool = False
    vocabulary: str = DEFAULT_VOCABULARY
    field_sizes: list[int] = field(default_factory=lambda: list(load_schema(DEFAULT_VOCABULARY).field_sizes))
    preprocessing: dict[str, Any] = field(default_factory=lambda: PreprocessRecipe().as_dict())
    threshold: float = 0.5
    calibration: dict[str, float] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, value in check_all(vars(self), RULES).items():
            setattr(self, name, value)
        unknown = set(self.preprocessing) - set(RECIPE_RULES)
        if unknown:  # a newer mammofuse's preprocessing step, which this one would silently skip
            raise MammofuseError(f"preprocessing has unknown keys {sorted(map(str, unknown))[:5]}: made by a newer mammofuse?")
        given = {k: checked(f"preprocessing.{k}", v, RECIPE_RULES[k]) for k, v in self.preprocessing.items()}
        self.preprocessing = {**PreprocessRecipe().as_dict(), **given}  # every key spelled out: a saved config.json loads
        canvas = self.preprocessing.get("canvas")
        if canvas is not None and not (len(canvas) == 2 and all(isinstance(v, int) and not isinstance(v, bool) and 8 <= v <= 16384 for v in canvas)
                                       and canvas[0] * canvas[1] <= MAX_PIXELS):  # no larger an image than the reader reads
            raise MammofuseError(f"preprocessing.canvas must be [height, width] in pixels, {MAX_PIXELS / 1e6:.0f} MP at most, not {canvas!r}"[:160])
        check_provenance(self.provenance)
        if self.calibration is not None:
            from mammofuse.evaluation.calibration import Calibration

            self.calibration = Calibration.from_dict(self.calibration).as_dict()
        if not all(isinstance(n, int) and not isinstance(n, bool) and 0 < n <= 1000 for n in self.field_sizes):
            raise MammofuseError(f"field_sizes must be positive integers, not {self.field_sizes!r}"[:160])
        if self.uses_image and self.backbone not in ARCHITECTURES:
            raise MammofuseError(f"unknown backbone {self.backbone!r}; choose from {', '.join(ARCHITECTURES)}")
        if self.proj_dim % self.num_heads:
            raise MammofuseError(f"proj_dim {self.proj_dim} must be divisible by num_heads {self.num_heads}")

    @property
    def kind(self) -> Fusion:
        """The fusion as an enum, which knows what it uses."""
        return Fusion(self.fusion)

    @property
    def uses_image(self) -> bool:
        return self.kind.uses_image

    @property
    def uses_clinical(self) -> bool:
        return self.kind.uses_clinical

    @property
    def recipe(self) -> PreprocessRecipe:
        return PreprocessRecipe.from_dict(self.preprocessing)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if data["calibration"] is None:  # left out, so that an uncalibrated model's config.json reads as before
            del data["calibration"]
        return {"format": CONFIG_FORMAT, **data}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        if not isinstance(data, dict):
            raise MammofuseError(f"expected a JSON object, got {type(data).__name__}")
        if data.get("format", CONFIG_FORMAT) != CONFIG_FORMAT:
            raise MammofuseError(f"config format {data.get('format')!r} is not supported by this mammofuse (needs {CONFIG_FORMAT})")
        unknown = set(data) - set(cls.__dataclass_fields__) - {"format"}
        if "fusion" not in data:  # every mammofuse config names its fusion: this one is another tool's
            raise MammofuseError(f"not a mammofuse model config (no 'fusion' key; it has {sorted(map(str, data))[:5]}): made by another tool?")
        if unknown:
            raise MammofuseError(f"config has unknown keys {sorted(map(str, unknown))[:5]}: made by a newer mammofuse?")
        recipe = data.get("preprocessing")
        missing = [k for k in REQUIRED if k not in data] + [f"preprocessing.{k}" for k in REQUIRED_RECIPE if isinstance(recipe, dict) and k not in recipe]
        if missing:
            raise MammofuseError(f"missing key {missing[0]!r}, which every mammofuse model's config has (a default would not score "
                                 "as the model was trained): damaged or edited?")
        return cls(**{k: v for k, v in data.items() if k != "format"})


def check_provenance(provenance: Any) -> None:
    """Refuse a provenance whose fields that mammofuse reads back have the wrong type (a hostile or damaged config).

    Raises:
        MammofuseError: one line naming the field.
    """
    checked("provenance", provenance, RULES["provenance"])
    for key, rule in PROVENANCE_RULES.items():
        if key in provenance:
            checked(f"provenance.{key}", provenance[key], rule)
    for key in PROVENANCE_STRING_LISTS:
        value = provenance.get(key)
        if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise MammofuseError(f"provenance.{key} must be a list of strings, not {value!r}"[:160])
    for name, rules in (("threshold_from", OOF_RULES), ("unfinished", UNFINISHED_RULES)):
        if (part := provenance.get(name)) is not None:
            for key, rule in rules.items():
                checked(f"provenance.{name}.{key}", part.get(key), rule)

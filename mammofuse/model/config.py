"""Everything needed to rebuild a model and feed it exactly as in training (``config.json``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from mammofuse.errors import MammofuseError
from mammofuse.imaging.preprocess import PreprocessRecipe

FUSIONS = ("image", "clinical", "concat", "cross", "co")
BACKBONES = ("cnn4", "resnet18", "resnet34", "resnet50")
CONFIG_FORMAT = 1


@dataclass
class ModelConfig:
    """Architecture, preprocessing recipe, vocabulary, threshold and provenance.

    Kept to JSON-friendly values so ``config.json`` round-trips exactly.
    """

    fusion: str = "cross"
    backbone: str = "resnet50"
    proj_dim: int = 100
    num_heads: int = 4
    dropout: float = 0.1
    modality_dropout: float = 0.3
    radiomics: bool = False
    vocabulary: str = "cbis-ddsm-v1"
    field_sizes: list[int] = field(default_factory=lambda: [4, 8, 5, 14, 5])
    preprocessing: dict[str, Any] = field(default_factory=lambda: PreprocessRecipe().as_dict())
    threshold: float = 0.5
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.fusion not in FUSIONS:
            raise MammofuseError(f"unknown fusion {self.fusion!r}; choose from {', '.join(FUSIONS)}")
        if self.uses_image and self.backbone not in BACKBONES:
            raise MammofuseError(f"unknown backbone {self.backbone!r}; choose from {', '.join(BACKBONES)}")
        if self.proj_dim % self.num_heads:
            raise MammofuseError(f"proj_dim {self.proj_dim} must be divisible by num_heads {self.num_heads}")

    @property
    def uses_image(self) -> bool:
        return self.fusion != "clinical"

    @property
    def uses_clinical(self) -> bool:
        return self.fusion != "image"

    @property
    def recipe(self) -> PreprocessRecipe:
        return PreprocessRecipe.from_dict(self.preprocessing)

    def to_dict(self) -> dict[str, Any]:
        return {"format": CONFIG_FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        if data.get("format", CONFIG_FORMAT) != CONFIG_FORMAT:
            raise MammofuseError(f"config format {data.get('format')} is not supported by this mammofuse (needs {CONFIG_FORMAT})")
        unknown = set(data) - set(cls.__dataclass_fields__) - {"format"}
        if unknown:
            raise MammofuseError(f"config has unknown keys {sorted(unknown)}: made by a newer mammofuse?")
        return cls(**{k: v for k, v in data.items() if k != "format"})

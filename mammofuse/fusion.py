"""The fusion variants and what each one uses: the one place that knows (torch-free)."""

from __future__ import annotations

from enum import StrEnum


class Fusion(StrEnum):
    """How the image and the clinical findings are combined (arXiv 2508.16000, plus late fusion).

    A ``StrEnum``: ``Fusion.CROSS == "cross"``, so configs keep plain strings in JSON.
    """

    IMAGE = "image"
    CLINICAL = "clinical"
    CONCAT = "concat"
    CROSS = "cross"
    CO = "co"
    LATE = "late"

    @property
    def uses_image(self) -> bool:
        return self is not Fusion.CLINICAL

    @property
    def uses_clinical(self) -> bool:
        return self is not Fusion.IMAGE

    @property
    def is_multimodal(self) -> bool:
        """Uses both the image and the findings (the arms an ablation compares with the single ones)."""
        return self.uses_image and self.uses_clinical

    @property
    def uses_attention(self) -> bool:
        """Has attention weights between image and clinical tokens (explainable as such)."""
        return self in (Fusion.CROSS, Fusion.CO)

    @property
    def joint_head(self) -> bool:
        """One head sees both modalities, so modality dropout applies while training."""
        return self in (Fusion.CONCAT, Fusion.CROSS, Fusion.CO)

    @property
    def description(self) -> str:
        return _DESCRIPTIONS[self]

    @classmethod
    def help(cls) -> str:
        """One line per variant, for ``--help``."""
        return "; ".join(f"{f.value}: {f.description}" for f in cls)


_DESCRIPTIONS = {
    Fusion.IMAGE: "image only",
    Fusion.CLINICAL: "clinical findings only",
    Fusion.CONCAT: "pooled image and clinical features concatenated",
    Fusion.CROSS: "image tokens attend to clinical tokens",
    Fusion.CO: "attention both ways (co-attention)",
    Fusion.LATE: "an image head and a clinical head, logits averaged",
}

FUSIONS: tuple[str, ...] = tuple(f.value for f in Fusion)

"""MammoFuse: image tokens and clinical-field tokens, projected to d and fused.

Fusion variants (``ModelConfig.fusion``):
    image     pooled image tokens only
    clinical  masked mean of the clinical-field tokens only (no image encoder is built)
    concat    [pooled image, pooled clinical]
    cross     image tokens (queries) attend to clinical-field tokens (keys/values)
    co        cross, plus clinical-field tokens attending to image tokens
    late      an image head and a clinical head, each supervised on its own (``branch_logits``);
              the case's logit is their mean, or the one branch whose modality is present

A model whose config has a ``calibration`` (fitted on out-of-fold predictions, ``train --threshold-from``)
maps the logit of each case that has every modality it uses through it, in eval mode.

Absent clinical fields are masked out of attention and pooling; a case with no field
present falls back to the image path (attention contributes zero, never NaN). A missing
image is replaced by a learned token, so clinical-only cases still get a prediction.

With ``config.radiomics`` the image branch has one more token: texture statistics and lesion
size of the crop (:mod:`mammofuse.imaging.radiomics`), standardised with the training set's
mean and standard deviation (buffers saved with the weights) and projected to d. With
``config.aux_findings`` a findings head reads the pooled image tokens and predicts the clinical
vector, in training only (``FusionOutput.findings_logits``, the trainer's auxiliary loss).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence, overload

import torch
from torch import nn

from mammofuse.fusion import Fusion
from mammofuse.imaging.radiomics import N_RADIOMICS, RADIOMICS_MIN_STD
from mammofuse.model.config import ModelConfig
from mammofuse.model.encoders import ClinicalTokens, image_backbone

if TYPE_CHECKING:
    from mammofuse.explainers import Explanation
    from mammofuse.results import Prediction


@dataclass
class FusionOutput:
    """Logits (B,) and, for attention fusions, the weights (B, heads-averaged queries, keys)."""

    logits: torch.Tensor
    image_to_clinical: torch.Tensor | None = None
    clinical_to_image: torch.Tensor | None = None
    branch_logits: torch.Tensor | None = None  # late fusion: (B, 2) image and clinical logits
    findings_logits: torch.Tensor | None = None  # aux_findings, training only: (B, clinical dims) from the image alone
    findings_rows: torch.Tensor | None = None  # (B,) bool: the cases whose image the findings were predicted from


class MaskedAttention(nn.Module):
    """``nn.MultiheadAttention`` whose rows with no valid key output zeros instead of NaN."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(dim)

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, key_valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        any_valid = key_valid.any(dim=1)
        # Rows with no valid key attend to everything (finite) and are zeroed below.
        padding = ~key_valid & any_valid[:, None]
        out, weights = self.attn(queries, keys, keys, key_padding_mask=padding, need_weights=True)
        keep = any_valid[:, None, None].to(out.dtype)
        return self.norm(queries + out * keep), weights * keep


def masked_mean(tokens: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean over valid tokens (zeros where none is valid)."""
    weights = valid.to(tokens.dtype).unsqueeze(-1)
    return (tokens * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


class MammoFuse(nn.Module):
    """The multimodal classifier. ``forward`` returns one logit per case (malignant).

    Load and save with huggingface_hub's method names; score and explain files directly:

        >>> model = MammoFuse.from_pretrained("default")  # doctest: +SKIP
        >>> model.predict("scan.dcm", density=3, margin="spiculated").probability  # doctest: +SKIP
    """

    def __init__(self, config: ModelConfig, pretrained: str | None = None) -> None:
        super().__init__()
        self.config = config
        self.name = "model"  # how outputs name it; from_pretrained sets the registered name, Hub id or folder
        d = config.proj_dim
        self.backbone: nn.Module | None = None
        self._feature_shapes: dict[tuple[int, ...], tuple[int, ...]] = {}  # backbone output shape by input shape
        if config.uses_image:
            self.backbone, channels = image_backbone(config.backbone, pretrained)
            self.image_proj = nn.Conv2d(channels, d, kernel_size=1)
            self.missing_image = nn.Parameter(torch.zeros(1, 1, d))
            if config.radiomics:
                self.register_buffer("radiomics_mean", torch.zeros(N_RADIOMICS))
                self.register_buffer("radiomics_std", torch.ones(N_RADIOMICS))
                self.radiomics_proj = nn.Sequential(nn.Linear(N_RADIOMICS, d), nn.GELU(), nn.Linear(d, d))
            if config.aux_findings:  # the image branch also learns to name the findings (training only)
                self.findings_head = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, sum(config.field_sizes)))
        if config.uses_clinical:
            self.clinical_tokens = ClinicalTokens(config.field_sizes, d)
        if config.kind.uses_attention:
            self.image_to_clinical = MaskedAttention(d, config.num_heads, config.dropout)
        if config.kind is Fusion.CO:
            self.clinical_to_image = MaskedAttention(d, config.num_heads, config.dropout)
        width = d * (2 if config.kind in (Fusion.CONCAT, Fusion.CO) else 1)
        self.head = nn.Sequential(nn.LayerNorm(width), nn.Dropout(config.dropout), nn.Linear(width, d), nn.GELU(), nn.Linear(d, 1))
        if config.kind is Fusion.LATE:  # self.head scores the image; this one the clinical findings
            self.clinical_head = nn.Sequential(nn.LayerNorm(d), nn.Dropout(config.dropout), nn.Linear(d, d), nn.GELU(), nn.Linear(d, 1))

    @property
    def device(self) -> torch.device:
        """Where the weights are, so where inputs go (every variant has parameters)."""
        return next(self.parameters()).device

    @classmethod
    def from_pretrained(cls, spec: str | Path | None = None, *, device: str | torch.device = "cpu") -> "MammoFuse":
        """Load a model in eval mode: a registered name (None: ``default``), a local folder, or a Hub id ``owner/name[@revision]``.

        Only ``config.json`` and ``model.safetensors`` are read (never pickle); keys are checked strictly.

        Raises:
            MammofuseError: unknown name, missing or invalid files, an incompatible config or vocabulary,
                Hub repository or revision not found, offline and not cached, an unavailable device.
        """
        from mammofuse.device import resolve_device
        from mammofuse.hub import resolve_model
        from mammofuse.model.io import load_model

        resolved = resolve_model(spec)
        model = load_model(resolved.folder, device=resolve_device(device))
        model.name = resolved.name
        return model

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write ``config.json``, ``model.safetensors`` and a model card into ``folder`` (atomically); a card already there
        is kept (a training run's, a user's) unless it is an earlier save's minimal card, which described another model.

        The folder is Hub-ready as it is: ``hf upload owner/name folder`` publishes it.
        """
        from mammofuse.model.io import save_model

        return save_model(self, folder)

    def weights_digest(self) -> str:
        """16 hex digits of the SHA-256 of the weights, as records name them (``weights_digest``): which weights these are."""
        from mammofuse.model.io import state_digest

        return state_digest(self)[:16]

    @overload
    def predict(self, image: str | Path, **kwargs: Any) -> "Prediction": ...
    @overload
    def predict(self, image: Sequence[str | Path], **kwargs: Any) -> "list[Prediction]": ...

    def predict(self, image: str | Path | Sequence[str | Path], **kwargs: Any) -> "Prediction | list[Prediction]":
        """:func:`mammofuse.predict` with this model (findings as keywords, ``roi=``, ``threshold=``): one file gives
        one :class:`Prediction`; a list of files or a folder, a list."""
        from mammofuse.api import predict

        return predict(image, self, **kwargs)

    def explain(self, image: str | Path, out: str | Path, **kwargs: Any) -> "Explanation":
        """Explain one file's score into ``out``: :func:`mammofuse.explain` with this model."""
        from mammofuse.api import explain

        return explain(image, out, self, **kwargs)

    def image_features(self, image: torch.Tensor) -> torch.Tensor:
        """Backbone feature map (B, C, h, w): what the frozen-feature cache stores."""
        assert self.backbone is not None, "this fusion has no image branch"
        return self.backbone(image)

    def forward(
        self,
        image: torch.Tensor | None,
        clinical: torch.Tensor,
        clinical_mask: torch.Tensor,
        image_present: torch.Tensor | None = None,
        features: torch.Tensor | None = None,
        radiomics: torch.Tensor | None = None,
    ) -> FusionOutput:
        """Score a batch.

        Args:
            image: (B, 1, H, W) normalised images, or None when ``features`` is given or unused.
            clinical: (B, 36) multi-hot clinical vectors.
            clinical_mask: (B, n_fields) bool, True where the field is present.
            image_present: (B,) bool, False where the case has no image (defaults to all True).
            features: precomputed ``image_features`` (B, C, h, w), e.g. from the cache.
            radiomics: (B, N_RADIOMICS) texture statistics of the crops, for ``config.radiomics`` models.
        """
        batch = clinical.shape[0]
        clinical_mask = clinical_mask.bool()
        present = torch.ones(batch, dtype=torch.bool, device=clinical.device) if image_present is None else image_present.bool()
        if self.training and self.config.modality_dropout > 0 and self.config.kind.joint_head:
            present, clinical_mask = self._modality_dropout(present, clinical_mask)
        image_tokens = self._image_tokens(image, features, present, radiomics) if self.config.uses_image else None
        clinical_tokens = self.clinical_tokens(clinical) if self.config.uses_clinical else None
        out = FusionOutput(logits=torch.empty(0))
        if self.training and self.config.aux_findings and image_tokens is not None:
            out.findings_logits, out.findings_rows = self.findings_head(image_tokens.mean(dim=1)), present
        fusion = self.config.kind
        if fusion is Fusion.IMAGE:
            pooled = image_tokens.mean(dim=1)
        elif fusion is Fusion.CLINICAL:
            pooled = masked_mean(clinical_tokens, clinical_mask)
        elif fusion is Fusion.LATE:
            late = self._late(image_tokens, clinical_tokens, clinical_mask, present)
            late.findings_logits, late.findings_rows = out.findings_logits, out.findings_rows
            late.logits = self._calibrated(late.logits, present, clinical_mask)
            return late
        elif fusion is Fusion.CONCAT:
            pooled = torch.cat([image_tokens.mean(dim=1), masked_mean(clinical_tokens, clinical_mask)], dim=1)
        else:
            fused, out.image_to_clinical = self.image_to_clinical(image_tokens, clinical_tokens, clinical_mask)
            pooled = fused.mean(dim=1)
            if fusion is Fusion.CO:
                all_valid = torch.ones(image_tokens.shape[:2], dtype=torch.bool, device=image_tokens.device)
                back, out.clinical_to_image = self.clinical_to_image(clinical_tokens, image_tokens, all_valid)
                out.clinical_to_image = out.clinical_to_image * clinical_mask[:, :, None]
                pooled = torch.cat([pooled, masked_mean(back, clinical_mask)], dim=1)
        out.logits = self._calibrated(self.head(pooled).squeeze(-1), present, clinical_mask)
        return out

    def _calibrated(self, logits: torch.Tensor, present: torch.Tensor, clinical_mask: torch.Tensor) -> torch.Tensor:
        """``logits`` through ``config.calibration`` where the case has every modality the model uses (its image, any
        finding), in eval mode only: the map was fitted on such cases' scores (:func:`mammofuse.cases.uses_every_modality`),
        and training sees the network's own logits."""
        calibration = self.config.calibration
        if calibration is None or self.training:
            return logits
        complete = torch.ones_like(present)
        if self.config.uses_image:
            complete = complete & present
        if self.config.uses_clinical:
            complete = complete & clinical_mask.any(dim=1)
        return torch.where(complete, logits * calibration["slope"] + calibration["intercept"], logits)

    def _late(self, image_tokens: torch.Tensor, clinical_tokens: torch.Tensor, mask: torch.Tensor, present: torch.Tensor) -> FusionOutput:
        image_logit = self.head(image_tokens.mean(dim=1)).squeeze(-1)
        clinical_logit = self.clinical_head(masked_mean(clinical_tokens, mask)).squeeze(-1)
        has_image, has_clinical = present.to(image_logit.dtype), mask.any(dim=1).to(image_logit.dtype)
        weights = torch.stack([has_image, has_clinical], dim=1)
        weights = torch.where(weights.sum(dim=1, keepdim=True) > 0, weights, torch.ones_like(weights))
        branches = torch.stack([image_logit, clinical_logit], dim=1)
        logits = (branches * weights).sum(dim=1) / weights.sum(dim=1)
        return FusionOutput(logits=logits, branch_logits=branches)

    def _image_tokens(self, image: torch.Tensor | None, features: torch.Tensor | None, present: torch.Tensor, radiomics: torch.Tensor | None) -> torch.Tensor:
        if features is None:
            # In eval mode only the rows with an image go through the backbone. In training every row does: DDP expects
            # every parameter to take part in each step, and the trainer keeps image-less rows out itself where it can.
            features = self.image_features(image) if self.training or bool(present.all()) else self.present_features(image, present)
        tokens = self.image_proj(features).flatten(2).transpose(1, 2)  # (B, h*w, d)
        if self.config.radiomics:
            if radiomics is None:
                raise ValueError("this model has a radiomics token: pass radiomics= (see mammofuse.imaging.radiomics)")
            std = torch.where(self.radiomics_std < RADIOMICS_MIN_STD, torch.ones_like(self.radiomics_std), self.radiomics_std)
            standard = (radiomics.to(tokens.dtype) - self.radiomics_mean) / std  # models trained before the floor have 1e-6
            tokens = torch.cat([tokens, self.radiomics_proj(standard)[:, None]], dim=1)
        return torch.where(present[:, None, None], tokens, self.missing_image.expand_as(tokens))

    def present_features(self, image: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """:meth:`image_features` of the rows of ``image`` that have an image (``present``, (B,) bool); zeros for the
        others, which never reach the backbone (their tokens become the missing-image token)."""
        if not bool(present.any()):
            return image.new_zeros((len(present), *self.feature_shape(image.shape[1:])))
        computed = self.image_features(image[present])
        return computed.new_zeros((len(present), *computed.shape[1:])).index_put((present,), computed)

    @torch.no_grad()
    def feature_shape(self, image_shape: Sequence[int]) -> tuple[int, ...]:
        """(C, h, w) of the backbone's output for images shaped ``image_shape`` (1, H, W), from one zero image once per
        shape, the backbone in eval mode meanwhile (no BatchNorm statistic moves)."""
        key = tuple(image_shape)
        if key not in self._feature_shapes:
            assert self.backbone is not None, "this fusion has no image branch"
            weight = next(self.backbone.parameters())
            was_training = self.backbone.training
            self.backbone.eval()
            try:
                self._feature_shapes[key] = tuple(self.backbone(weight.new_zeros((1, *key))).shape[1:])
            finally:
                self.backbone.train(was_training)
        return self._feature_shapes[key]

    def _modality_dropout(self, present: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """With probability p drop one whole modality per case (image or clinical, evenly)."""
        p = self.config.modality_dropout
        drop = torch.rand(present.shape, device=present.device) < p
        drop_image = drop & (torch.rand(present.shape, device=present.device) < 0.5) & mask.any(dim=1)
        drop_clinical = drop & ~drop_image & present
        return present & ~drop_image, mask & ~drop_clinical[:, None]

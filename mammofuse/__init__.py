"""mammofuse: multimodal breast-lesion classification (mammogram + clinical findings).

Research use only, not a medical device. Heavy modules (torch and friends) are imported
lazily so that ``mammofuse --help`` stays fast.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mammofuse")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

RESEARCH_NOTICE = "Research use only, not a medical device."

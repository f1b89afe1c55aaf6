"""Figures a reader would put in a paper: ROC, precision-recall, reliability, confusion matrix, ablation bars.

Drawn with matplotlib's object-oriented API (``Figure`` and ``savefig``): no pyplot, no display,
and the global backend is left alone, so notebooks keep theirs. Every figure is a 300 dpi PNG, written
atomically (the ablation chart's bytes are returned, for ``ablate`` to write with its other results), with
the research-use notice below it and in its text. Curves come from scikit-learn, the same definitions as ``metrics``.
"""

from __future__ import annotations

import io
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from mammofuse.atomic import write_bytes
from mammofuse.errors import OutputError
from mammofuse.figure_notice import PNG_METADATA, add_notice

DPI = 300
_STYLE = {
    "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8,
    "xtick.labelsize": 8, "ytick.labelsize": 8, "axes.spines.top": False, "axes.spines.right": False,
    "savefig.bbox": "tight", "figure.dpi": 100,
}


@contextmanager
def _figure(**kwargs: Any) -> Iterator[Any]:
    """A new ``Figure`` in the house style; the style applies to everything drawn inside the block."""
    from matplotlib import rc_context
    from matplotlib.figure import Figure

    with rc_context(_STYLE):
        yield Figure(**kwargs)


def _save(fig: Any, path: Path) -> Path:
    """``fig`` written atomically at ``path`` (:func:`_png`)."""
    write_bytes(path, _png(fig))
    return path


def _png(fig: Any) -> bytes:
    """``fig`` as PNG bytes, with the research-use notice below it and in the PNG's text."""
    add_notice(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=DPI, format="png", bbox_inches="tight", pad_inches=0.05, metadata=PNG_METADATA)
    return buffer.getvalue()


def _fmt_ci(ci: Sequence[float] | None) -> str:
    return f" (95% CI {ci[0]:.2f}-{ci[1]:.2f})" if ci else ""


def roc_figure(labels: np.ndarray, probs: np.ndarray, result: dict[str, Any], path: Path, title: str) -> Path:
    """The ROC curve with its AUC (and CI) and the operating point at the threshold, as a PNG at ``path``."""
    from sklearn.metrics import roc_curve

    with _figure(figsize=(3.6, 3.6)) as fig:
        ax = fig.subplots()
        fpr, tpr, _ = roc_curve(labels, probs)
        ax.plot(fpr, tpr, color="#1f4e79", lw=1.8, label=f"AUC {result['auc']:.3f}{_fmt_ci(result.get('auc_ci'))}")
        ax.plot([0, 1], [0, 1], ls="--", lw=0.8, color="0.6", label="chance")
        if result.get("specificity") is not None and result.get("recall") is not None:
            ax.plot(1 - result["specificity"], result["recall"], "o", color="#c00000", ms=5,
                    label=f"threshold {result['threshold']:.3f}")
        ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="1 - specificity (false-positive rate)",
               ylabel="Sensitivity (true-positive rate)", title=title)
        ax.set_aspect("equal")
        ax.legend(loc="lower right", frameon=False)
    return _save(fig, path)


def pr_figure(labels: np.ndarray, probs: np.ndarray, result: dict[str, Any], path: Path, title: str) -> Path:
    """The precision-recall curve with its average precision and the prevalence line, as a PNG at ``path``."""
    from sklearn.metrics import precision_recall_curve

    with _figure(figsize=(3.6, 3.6)) as fig:
        ax = fig.subplots()
        precision, recall, _ = precision_recall_curve(labels, probs)
        ax.step(recall, precision, where="post", color="#1f4e79", lw=1.8, label=f"AP {result['pr_auc']:.3f}")
        prevalence = float(np.mean(labels))
        ax.axhline(prevalence, ls="--", lw=0.8, color="0.6", label=f"prevalence {prevalence:.2f}")
        ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="Recall (sensitivity)", ylabel="Precision (PPV)", title=title)
        ax.set_aspect("equal")
        ax.legend(loc="lower left", frameon=False)
    return _save(fig, path)


def calibration_figure(labels: np.ndarray, probs: np.ndarray, result: dict[str, Any], path: Path, title: str, n_bins: int = 10) -> Path:
    """The reliability diagram (``n_bins`` uniform bins) over a histogram of the probabilities, as a PNG at ``path``."""
    from sklearn.calibration import calibration_curve

    with _figure(figsize=(3.6, 4.6)) as fig:
        ax, hist = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
        observed, predicted = calibration_curve(labels, probs, n_bins=n_bins, strategy="uniform")
        ax.plot([0, 1], [0, 1], ls="--", lw=0.8, color="0.6", label="perfect calibration")
        ax.plot(predicted, observed, "o-", color="#1f4e79", lw=1.5, ms=4,
                label=f"model (Brier {result['brier']:.3f}, ECE {result['ece']:.3f})")
        ax.set(xlim=(0, 1), ylim=(0, 1.01), ylabel="Observed fraction malignant", title=title)
        ax.legend(loc="upper left", frameon=False)
        hist.hist(probs, bins=np.linspace(0, 1, n_bins + 1), color="#1f4e79", alpha=0.7, edgecolor="white")
        hist.set(xlabel="Predicted probability of malignancy", ylabel="Cases")
        hist.yaxis.get_major_locator().set_params(integer=True)
    return _save(fig, path)


def confusion_figure(result: dict[str, Any], path: Path, title: str) -> Path:
    """The confusion matrix at the threshold, counts and row shares, as a PNG at ``path``."""
    c = result["confusion"]
    matrix = np.array([[c["tn"], c["fp"]], [c["fn"], c["tp"]]])
    with _figure(figsize=(3.2, 3.0)) as fig:
        ax = fig.subplots()
        ax.imshow(matrix, cmap="Blues", vmin=0)
        rows = matrix.sum(axis=1, keepdims=True).clip(min=1)
        for (i, j), count in np.ndenumerate(matrix):
            dark = count > matrix.max() / 2
            ax.text(j, i, f"{count}\n({count / rows[i, 0]:.0%} of row)", ha="center", va="center",
                    color="white" if dark else "black", fontsize=8)
        ax.set_xticks([0, 1], ["benign", "malignant"])
        ax.set_yticks([0, 1], ["benign", "malignant"])
        ax.set(xlabel=f"Predicted (threshold {result['threshold']:.3f})", ylabel="True", title=title)
        for side in ("top", "right"):
            ax.spines[side].set_visible(True)
    return _save(fig, path)


ROC, PR, CALIBRATION, CONFUSION = EVALUATION_FIGURES = ("roc.png", "pr.png", "calibration.png", "confusion.png")


def evaluation_figures(labels: Sequence[int], probs: Sequence[float], result: dict[str, Any], folder: str | Path, title: str = "") -> list[Path]:
    """ROC, PR, reliability and confusion-matrix PNGs in ``folder``; curves that are undefined (one class) are skipped."""
    folder = Path(folder)
    y, p = np.asarray(labels, dtype=int), np.asarray(probs, dtype=float)
    written = []
    if result.get("auc") is not None:
        written.append(roc_figure(y, p, result, folder / ROC, title or "ROC curve"))
        written.append(pr_figure(y, p, result, folder / PR, title or "Precision-recall curve"))
    if len(y):
        written.append(calibration_figure(y, p, result, folder / CALIBRATION, title or "Reliability diagram"))
        written.append(confusion_figure(result, folder / CONFUSION, title or "Confusion matrix"))
    return written


def remove_evaluation_figures(folder: str | Path, subsets: Sequence[str] = ("mass", "calc")) -> None:
    """Delete the figures of an earlier evaluation from ``folder`` and its ``subsets`` folders (other files are left alone).

    Raises:
        OutputError: one cannot be removed (a folder by its name, no permission).
    """
    for sub in ("", *subsets):
        for name in EVALUATION_FIGURES:
            path = Path(folder) / sub / name
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                raise OutputError(path, f"an earlier figure cannot be removed: {exc.strerror or exc}") from exc


def ablation_png(arms: dict[str, dict[str, Any]], title: str = "Ablation") -> bytes:
    """Bar chart of mean fold AUC per arm with error bars (fold SD) and each fold's AUC as a dot; chance at 0.5, as PNG
    bytes (``ablate`` writes them together with its other results)."""
    names = [n for n, a in arms.items() if a.get("auc") is not None]
    means = [arms[n]["auc"] for n in names]
    errors = [arms[n].get("auc_sd") or 0.0 for n in names]
    with _figure(figsize=(max(3.6, 0.7 * len(names) + 1.5), 3.2)) as fig:
        ax = fig.subplots()
        ax.bar(range(len(names)), means, yerr=errors, capsize=4, color="#1f4e79", alpha=0.85, ecolor="black")
        for i, name in enumerate(names):  # every fold, so a reader sees the spread itself
            folds = [v for v in arms[name].get("auc_folds") or [] if v is not None]
            ax.scatter(np.full(len(folds), i) + np.linspace(-0.15, 0.15, len(folds)), folds, s=9, color="#c00000", zorder=3,
                       label="folds" if i == 0 and folds else None)
        ax.axhline(0.5, ls="--", lw=0.8, color="0.5", label="chance")
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
        ax.set(ylim=(0, 1), ylabel="ROC-AUC (mean ± SD over folds)", title=title)
        ax.legend(loc="upper right", frameon=False)
    return _png(fig)

"""The README's Python API example runs as written (real DICOMs, real mini-MIAS and CBIS-DDSM CSVs)."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
from conftest import SHARED_DATA

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_api_example(real_dicoms, mini_mias, cbis_csv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mammofuse import Explanation, MammofuseWarning, Metrics, Prediction

    section = README.read_text(encoding="utf-8").split("## Python API", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1).replace("../shared/data", str(SHARED_DATA))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exec(compile(code, str(README), "exec"), namespace)
    prediction, explanation, metrics = namespace["prediction"], namespace["explanation"], namespace["metrics"]
    assert isinstance(prediction, Prediction) and prediction.error is None and 0 <= prediction.probability <= 1
    assert prediction.decision == ("malignant" if prediction.probability >= prediction.threshold else "benign")
    assert prediction.note and any(issubclass(w.category, MammofuseWarning) for w in caught)  # no region: said so
    assert isinstance(explanation, Explanation) and (tmp_path / "explanations" / "report.html").is_file()
    assert {"gradcam", "shap_json", "report"} <= set(explanation.outputs)
    film = namespace["film"]
    assert film.clinical and {name for name, value in explanation.clinical.items() if value} == set(film.clinical)  # its findings given
    assert any(c.shap != 0 for c in explanation.top_contributions)  # so SHAP is not all zero
    assert isinstance(metrics, Metrics) and metrics.n == 10 and metrics.report["notice"]

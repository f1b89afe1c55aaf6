"""`mammofuse evaluate` and the metric library: values equal scikit-learn's, intervals resample patients,
undefined metrics are null, the CI gate's exit codes, leakage warnings, figures, and the JSON schema."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mammofuse.cli import app
from mammofuse.data.sample import patient_digest
from mammofuse.errors import MammofuseError
from mammofuse.evaluation import (
    binary_metrics,
    bootstrap_auc,
    evaluate_predictions,
    expected_calibration_error,
)
from mammofuse.evaluation.evaluate import check_bounds, parse_bounds
from mammofuse.evaluation.leakage import is_suspicious, overlap_warning, patient_overlap
from mammofuse.evaluation.metrics import paired_auc_difference

runner = CliRunner()

LABELS = np.array([0, 0, 1, 1, 0, 1, 0, 1, 1, 0])
PROBS = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9, 0.6, 0.55, 0.3, 0.05])
REQUIRED_KEYS = {"n", "auc", "auc_ci", "pr_auc", "accuracy", "f1", "precision", "recall", "specificity", "brier", "ece", "threshold", "subsets"}


# ---------------------------------------------------------------- metrics


def test_metrics_equal_scikit_learn_on_a_small_example():
    from sklearn.metrics import (
        accuracy_score,
        average_precision_score,
        brier_score_loss,
        f1_score,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    m = binary_metrics(LABELS, PROBS, threshold=0.5)
    called = (PROBS >= 0.5).astype(int)
    assert m["auc"] == pytest.approx(roc_auc_score(LABELS, PROBS))
    assert m["pr_auc"] == pytest.approx(average_precision_score(LABELS, PROBS))
    assert m["accuracy"] == pytest.approx(accuracy_score(LABELS, called))
    assert m["f1"] == pytest.approx(f1_score(LABELS, called))
    assert m["precision"] == pytest.approx(precision_score(LABELS, called))
    assert m["recall"] == m["sensitivity"] == pytest.approx(recall_score(LABELS, called))
    assert m["specificity"] == pytest.approx(recall_score(LABELS, called, pos_label=0))
    assert m["brier"] == pytest.approx(brier_score_loss(LABELS, PROBS))
    c = m["confusion"]
    assert (c["tn"], c["fp"], c["fn"], c["tp"]) == (4, 1, 2, 3)
    assert m["specificity"] == pytest.approx(c["tn"] / (c["tn"] + c["fp"]))


def test_threshold_is_the_one_given_and_inclusive():
    assert binary_metrics([0, 1], [0.3, 0.7], threshold=0.7)["recall"] == 1.0
    assert binary_metrics([0, 1], [0.3, 0.7], threshold=0.71)["recall"] == 0.0


def test_ece_is_the_share_weighted_calibration_gap():
    # bin 0.1: 2 cases, observed 0.5 -> gap 0.4; bin 0.9: 2 cases, observed 1.0 -> gap 0.1
    assert expected_calibration_error(np.array([0, 1, 1, 1]), np.array([0.1, 0.1, 0.9, 0.9])) == pytest.approx(0.5 * 0.4 + 0.5 * 0.1)
    assert expected_calibration_error(np.array([0, 0, 1, 1]), np.array([0.0, 0.0, 1.0, 1.0])) == pytest.approx(0.0)


def test_every_command_decides_a_probability_at_the_threshold_alike():
    """Decided on exact numbers, evaluate called benign what predict's record (0.306734 >= 0.306734) calls malignant."""
    from mammofuse.results import MALIGNANT, decide, shown_digits

    threshold = 0.30673441
    at, below = 0.3067343918328275, 0.3067331  # the first shows as the threshold to the six decimals records keep
    assert decide(at, threshold) == MALIGNANT and decide(below, threshold) != MALIGNANT
    m = evaluate_predictions([1, 1, 0, 0], [at, below, 0.9, 0.1], ["a", "b", "c", "d"], threshold=threshold)
    assert (m["recall"], m["specificity"]) == (0.5, 0.5)  # `at` counted malignant, as its record says
    assert (shown_digits(at, threshold), shown_digits(0.2, threshold)) == (6, 3)  # never "0.307 benign, threshold 0.307"


def test_one_class_gives_null_metrics_with_notes_not_a_crash():
    m = evaluate_predictions([0, 0, 0], [0.2, 0.6, 0.1], ["a", "b", "c"], threshold=0.5)
    assert m["auc"] is None and m["pr_auc"] is None and m["auc_ci"] is None
    assert m["recall"] is None and m["specificity"] == pytest.approx(2 / 3)
    assert any("undefined" in n for n in m["notes"])
    json.dumps(m)  # still valid JSON
    assert binary_metrics([], [], 0.5)["auc"] is None


def test_subsets_only_when_the_data_has_both_masses_and_calcifications():
    groups = [f"p{i}" for i in range(10)]
    kinds = ["mass"] * 5 + ["calc"] * 5
    m = evaluate_predictions(LABELS, PROBS, groups, 0.5, kinds, n_boot=50)
    assert set(m["subsets"]) == {"mass", "calc"}
    assert m["subsets"]["mass"]["n"] == 5 and REQUIRED_KEYS - {"subsets"} <= set(m["subsets"]["calc"])
    assert evaluate_predictions(LABELS, PROBS, groups, 0.5, ["mass"] * 10, n_boot=50)["subsets"] == {}


# ---------------------------------------------------------------- bootstrap by patient


def _repeated(copies: int, patients: int = 30, seed: int = 1):
    """Each patient's lesion repeated ``copies`` times (perfectly correlated lesions)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, patients)
    p = np.clip(0.5 * y + rng.normal(0.25, 0.25, patients), 0, 1)
    return np.repeat(y, copies), np.repeat(p, copies), np.repeat([f"p{i}" for i in range(patients)], copies)


def test_bootstrap_resamples_patients_not_lesions():
    y, p, g = _repeated(copies=8)
    by_patient = bootstrap_auc(y, p, g, n_boot=200, seed=0)
    by_lesion = bootstrap_auc(y, p, [str(i) for i in range(len(y))], n_boot=200, seed=0)
    # Treating 8 copies as independent lesions makes the interval far too narrow.
    assert (by_patient[1] - by_patient[0]) > 2 * (by_lesion[1] - by_lesion[0])
    single = bootstrap_auc(*_repeated(copies=1), n_boot=200, seed=0)
    assert (by_patient[1] - by_patient[0]) == pytest.approx(single[1] - single[0], rel=0.35)


def test_bootstrap_interval_narrows_with_more_patients_and_is_seeded():
    small = bootstrap_auc(*_repeated(1, patients=20), n_boot=150, seed=0)
    large = bootstrap_auc(*_repeated(1, patients=300), n_boot=150, seed=0)
    assert (large[1] - large[0]) < (small[1] - small[0])
    args = _repeated(1, patients=40)
    first = bootstrap_auc(*args, n_boot=100, seed=7)
    assert first == bootstrap_auc(*args, n_boot=100, seed=7)
    assert first != bootstrap_auc(*args, n_boot=100, seed=8)
    low, high = first
    assert low <= evaluate_predictions(*args, threshold=0.5, n_boot=0)["auc"] <= high


def test_paired_difference_resamples_both_models_on_the_same_patients():
    y, p, g = _repeated(1, patients=60)
    same = paired_auc_difference(y, p, p, g, n_boot=100)
    assert same["difference"] == 0 and same["ci"] == [0.0, 0.0]
    better = paired_auc_difference(y, y * 0.5 + p * 0.5, p, g, n_boot=100)
    assert better["difference"] > 0 and better["ci"][0] > 0 and better["p_a_not_better"] < 0.05


def test_no_interval_from_too_few_patients():
    assert bootstrap_auc([0, 1, 0, 1], [0.1, 0.9, 0.2, 0.8], ["a", "a", "b", "b"], n_boot=100) is None
    m = evaluate_predictions([0, 1, 0, 1], [0.1, 0.9, 0.2, 0.8], ["a", "a", "b", "b"], 0.5, n_boot=100)
    assert m["auc"] == 1.0 and m["auc_ci"] is None and any("too few" in n for n in m["notes"])


# ---------------------------------------------------------------- gate and leakage (library)


def test_fail_under_parsing_and_checking():
    assert parse_bounds("auc=0.85, recall=0.9") == {"auc": 0.85, "recall": 0.9}
    for bad in ("auroc=0.8", "auc", "auc=high", "brier=0.2", ""):
        with pytest.raises(MammofuseError):
            parse_bounds(bad)
    assert parse_bounds("auc=0,recall=1") == {"auc": 0.0, "recall": 1.0}
    for out_of_range in ("auc=85", "auc=-5", "recall=1.01", "f1=inf"):  # every gated metric lies in [0, 1]
        with pytest.raises(MammofuseError, match=f"--fail-under: {out_of_range.split('=')[0]} needs a number from 0 to 1"):
            parse_bounds(out_of_range)
    result = {"auc": 0.80, "recall": 0.95, "precision": None, "auc_ci": [0.7, 0.9]}
    assert check_bounds(result, {"auc": 0.75, "recall": 0.9}) == []
    assert check_bounds(result, {"auc": 0.85}) == ["auc 0.8000 < 0.85"]
    assert "undefined" in check_bounds(result, {"precision": 0.5})[0]
    assert check_bounds(result, {"auc_low": 0.75}) == ["auc_low 0.7000 < 0.75"]


def test_overlap_with_training_patients_is_detected_from_digests():
    provenance = {"train_patients": [patient_digest("P_1"), patient_digest("P_2")], "val_patients": [patient_digest("P_3")]}
    overlap = patient_overlap(["P_2", "P_3", "P_9"], provenance)
    assert overlap == {"checked": True, "patients": 3, "train": 1, "val": 1, "init": None}
    assert "TRAINING" in overlap_warning(overlap) and "VALIDATION" in overlap_warning(overlap)
    assert overlap_warning(patient_overlap(["P_9"], provenance)) is None
    assert patient_overlap(["P_1"], {})["checked"] is False


def test_a_patient_digest_is_the_same_in_every_process():
    """Models store these digests: a per-process salt (Python's hash()) would hide every overlap."""
    assert patient_digest("P_00001") == patient_digest(" P_00001 ") == "8376b9883db7d3f0"


def test_the_bundled_model_recognises_the_cbis_patients_it_was_trained_on(cbis_csv):
    from mammofuse import MammoFuse
    from mammofuse.data import load_dataset

    patients = {s.patient_id for s in load_dataset("cbis-ddsm", cbis_csv) if s.split == "train" and s.abnormality == "mass"}
    provenance = MammoFuse.from_pretrained("default").config.provenance
    assert patient_overlap(patients, provenance) == {"checked": True, "patients": 691, "train": 690, "val": 0, "init": None}


def test_suspicious_auc_includes_subsets():
    assert is_suspicious({"auc": 0.97, "subsets": {}})
    assert is_suspicious({"auc": 0.8, "subsets": {"mass": {"auc": 0.99}}})
    assert not is_suspicious({"auc": None, "subsets": {}})


def test_figures_are_written_and_not_empty(tmp_path):
    from mammofuse.evaluation.plots import ablation_png, evaluation_figures

    result = evaluate_predictions(LABELS, PROBS, [f"p{i}" for i in range(10)], 0.5, n_boot=50)
    written = evaluation_figures(LABELS, PROBS, result, tmp_path / "figs", "test")
    assert sorted(p.name for p in written) == ["calibration.png", "confusion.png", "pr.png", "roc.png"]
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    chart = ablation_png({"image": {"auc": 0.6, "auc_sd": 0.05}, "cross": {"auc": 0.7, "auc_sd": None}})
    assert chart[:8] == b"\x89PNG\r\n\x1a\n" and len(chart) > 10_000


# ---------------------------------------------------------------- the command, on the real CSVs


def _clinical_model(folder: Path, train_patients: list[str], threshold: float = 0.5) -> Path:
    import torch

    from mammofuse.model import MammoFuse, ModelConfig, save_model

    torch.manual_seed(0)
    provenance = {"dataset": "cbis-ddsm", "train_patients": sorted(patient_digest(p) for p in train_patients), "val_patients": []}
    return save_model(MammoFuse(ModelConfig(fusion="clinical", threshold=threshold, provenance=provenance)), folder)


@pytest.fixture(scope="module")
def clean_model(tmp_path_factory) -> Path:
    return _clinical_model(tmp_path_factory.mktemp("clean"), ["P_99999"])


def _evaluate(model: Path, data: Path, *extra: str):
    return runner.invoke(app, ["evaluate", "--model", str(model), "--dataset", "cbis-ddsm", "--data", str(data), "--bootstrap", "50", *extra])


def test_json_schema_on_the_cbis_test_rows_with_a_clinical_only_model(clean_model, cbis_csv, tmp_path):
    result = _evaluate(clean_model, cbis_csv, "--format", "json", "--output", str(tmp_path / "r.json"), "--compare", "paper")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert REQUIRED_KEYS <= set(report)
    assert report["n"] == 10 and report["split"] == "test" and report["failed"] == []
    assert report["auc_ci"] is None  # two patients: too few to resample
    assert report["leakage"] == {"checked": True, "patients": 2, "train": 0, "val": 0, "init": None}
    assert [r["metric"] for r in report["comparison"]["metrics"]] == ["auc", "accuracy", "f1", "precision", "recall"]
    assert report["comparison"]["metrics"][0]["paper"] == 0.98
    assert "PATIENT OVERLAP" not in result.output


def test_mini_mias_has_mass_and_calc_subsets(clean_model, mini_mias):
    result = runner.invoke(app, ["evaluate", "--model", str(clean_model), "--dataset", "mini-mias", "--data", str(mini_mias),
                                 "--split", "all", "--format", "json", "--bootstrap", "50"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report["subsets"]) == {"mass", "calc"}
    assert report["subsets"]["mass"]["n"] + report["subsets"]["calc"]["n"] == report["n"] == 123
    assert REQUIRED_KEYS - {"subsets"} <= set(report["subsets"]["calc"])


def test_a_mass_model_evaluated_on_calcifications_says_its_score_means_nothing_for_them(mini_mias):
    """`evaluate --model default --dataset mini-mias` scored its 30 calcifications without a remark: MIAS gives them no
    calcification findings, only its CALC class, and the check looked at the findings alone."""
    from mammofuse import MammoFuse, load_dataset
    from mammofuse.cases import model_notes

    cases = load_dataset("mini-mias", mini_mias)
    notes = model_notes(MammoFuse.from_pretrained("default"), cases, True, unit="cases")
    assert sum(c.abnormality == "calc" for c in cases) == 30
    assert ("model default was trained on mass lesions only and never saw calcifications: its score is not meaningful for the 30 of "
            "123 cases that are calcifications (by their findings or their dataset)") in notes


def test_fail_under_exit_codes(clean_model, cbis_csv):
    assert _evaluate(clean_model, cbis_csv, "--fail-under", "accuracy=0.0").exit_code == 0
    missed = _evaluate(clean_model, cbis_csv, "--fail-under", "accuracy=1")
    assert missed.exit_code == 1 and "fail-under: accuracy" in missed.output
    out_of_range = _evaluate(clean_model, cbis_csv, "--fail-under", "auc=85")
    assert out_of_range.exit_code == 2 and "auc needs a number from 0 to 1" in out_of_range.output
    unknown = _evaluate(clean_model, cbis_csv, "--fail-under", "auroc=0.8")
    assert unknown.exit_code == 2 and "unknown metric 'auroc'" in unknown.output
    assert "Traceback" not in unknown.output


def test_leakage_warning_fires_on_overlapping_patients(tmp_path, cbis_csv):
    leaky = _clinical_model(tmp_path / "leaky", ["P_00173", "P_00001"])
    result = _evaluate(leaky, cbis_csv)
    assert result.exit_code == 0
    assert "PATIENT OVERLAP" in result.output and "TRAINING" in result.output


def test_plots_from_the_command(clean_model, mini_mias, tmp_path):
    result = runner.invoke(app, ["evaluate", "--model", str(clean_model), "--dataset", "mini-mias", "--data", str(mini_mias),
                                 "--split", "all", "--plots", str(tmp_path / "figs"), "--bootstrap", "20"])
    assert result.exit_code == 0, result.output
    for name in ("roc.png", "pr.png", "calibration.png", "confusion.png", "mass/roc.png", "calc/calibration.png"):
        assert (tmp_path / "figs" / name).stat().st_size > 10_000


def test_plots_say_nothing_of_a_home_matplotlib_cannot_write(clean_model, mini_mias, tmp_path):
    """Was: two raw matplotlib lines on stderr (``mkdir -p failed for path ...``, ``Matplotlib created a temporary cache
    directory...``) where HOME cannot be written; a HOME that is a file fails the same way, for root too."""
    import os
    import subprocess
    import sys

    (tmp_path / "home").write_text("")
    env = {k: v for k, v in os.environ.items() if k not in ("MPLCONFIGDIR", "XDG_CONFIG_HOME", "XDG_CACHE_HOME")}
    args = ["evaluate", "--model", str(clean_model), "--dataset", "mini-mias", "--data", str(mini_mias), "--split", "all",
            "--bootstrap", "0", "--plots", str(tmp_path / "figs")]
    result = subprocess.run([sys.executable, "-m", "mammofuse", *args], env={**env, "HOME": str(tmp_path / "home")},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and (tmp_path / "figs" / "roc.png").is_file(), result.stderr
    assert "atplotlib" not in result.stderr and "mkdir -p" not in result.stderr, result.stderr


def test_a_matplotlib_config_folder_the_user_set_keeps_its_remarks(monkeypatch) -> None:
    """The remarks on a config folder the user chose (``MPLCONFIGDIR``) stay theirs to see; those on the default go."""
    import logging

    from mammofuse.figure_notice import _not_a_config_dir_remark, quiet_matplotlib

    logger = logging.getLogger("matplotlib")
    monkeypatch.setattr(logger, "filters", [])
    monkeypatch.setenv("MPLCONFIGDIR", "/nowhere")
    quiet_matplotlib()
    assert logger.filters == []
    monkeypatch.delenv("MPLCONFIGDIR")
    quiet_matplotlib()
    assert logger.filters == [_not_a_config_dir_remark]
    remark = logging.LogRecord("matplotlib", logging.WARNING, __file__, 1, "mkdir -p failed for path %s: %s", ("x", "y"), None)
    assert not logger.filter(remark)


def test_a_rerun_stopped_among_its_figures_leaves_no_report_and_no_earlier_figure(clean_model, mini_mias, tmp_path, monkeypatch):
    """Was: the earlier report kept beside this run's first figures and the earlier run's others."""
    from mammofuse.evaluation import plots

    figures, report = tmp_path / "figs", tmp_path / "report.json"
    args = ["evaluate", "--model", str(clean_model), "--dataset", "mini-mias", "--data", str(mini_mias), "--split", "all", "--bootstrap", "0",
            "--plots", str(figures), "--output", str(report)]
    assert runner.invoke(app, args).exit_code == 0
    earlier = {p.relative_to(figures): p.read_bytes() for p in figures.rglob("*.png")}
    assert len(earlier) == 12 and report.exists()

    def ctrl_c(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(plots, "calibration_figure", ctrl_c)  # Ctrl-C once this run's ROC and PR curves are written
    result = runner.invoke(app, [*args, "--abnormality", "mass"])
    assert result.exit_code == 130 and result.output.endswith("\nerror: interrupted\n")
    left = {p.relative_to(figures): p.read_bytes() for p in figures.rglob("*.png")}
    assert not report.exists() and set(left) == {Path("roc.png"), Path("pr.png")}
    assert all(left[name] != earlier[name] for name in left)  # this run's own: masses only


def test_a_second_evaluate_into_held_plots_is_refused_and_removes_nothing(clean_model, mini_mias, tmp_path):
    """Was: a second run given the same --plots removed the first's figures and report while that one wrote them."""
    from mammofuse.atomic import folder_lock

    figures, report = tmp_path / "figs", tmp_path / "report.json"
    args = ["evaluate", "--model", str(clean_model), "--dataset", "mini-mias", "--data", str(mini_mias), "--split", "all", "--bootstrap", "0",
            "--plots", str(figures), "--output", str(report)]
    assert runner.invoke(app, args).exit_code == 0
    earlier = {p: p.read_bytes() for p in [report, *figures.rglob("*.png")]}
    with folder_lock(figures):  # another evaluate holds it while it writes
        result = runner.invoke(app, args)
    assert result.exit_code == 3 and result.stderr.splitlines()[-1] == f"error: {figures}: cannot write (in use by another mammofuse process)"
    assert {p: p.read_bytes() for p in [report, *figures.rglob("*.png")]} == earlier


def test_image_model_without_images_is_one_usage_error_and_a_case_without_one_fails_alone(tmp_path, cbis_csv, dicom_root):
    import dataclasses

    from mammofuse.data import load_dataset
    from mammofuse.evaluation.evaluate import evaluate_model
    from mammofuse.model import MammoFuse, ModelConfig, save_model

    folder = save_model(MammoFuse(ModelConfig(fusion="image", backbone="resnet18", preprocessing={"image_size": 32})), tmp_path / "img")
    result = _evaluate(folder, cbis_csv, "--format", "json")
    assert result.exit_code == 2 and "failed:" not in result.output
    assert f"none of the 10 cases has an image file, and model {folder} reads images: pass the dataset's image folders (--images" in result.output
    samples = [s for s in load_dataset("cbis-ddsm", cbis_csv, [dicom_root]) if s.split == "test"]
    samples[0] = dataclasses.replace(samples[0], image_path=None)
    metrics = evaluate_model(MammoFuse.from_pretrained(folder), samples, n_boot=0)
    assert metrics.failed == [{"id": samples[0].id, "path": None, "error": f"no image file found for this case ({samples[0].image_id}): it is in none "
                               "of the folders given with --images, or none was given"}]
    assert metrics.n == 9 and metrics.report["leakage"]["patients"] == metrics.patients == 2
    gone = samples[0].patient_id  # every case of one patient fails: that patient was not evaluated, and the leakage check says so
    metrics = evaluate_model(MammoFuse.from_pretrained(folder), [dataclasses.replace(s, image_path=None) if s.patient_id == gone else s
                                                                  for s in samples], n_boot=0)
    assert metrics.report["leakage"]["patients"] == metrics.patients == 1


def test_usage_errors_are_one_line(clean_model, cbis_csv):
    result = _evaluate(clean_model, cbis_csv, "--split", "validation")
    assert result.exit_code == 2 and "no 'validation' split" in result.output
    assert _evaluate(clean_model, cbis_csv, "--compare", "vo2021").exit_code == 2
    for fmt in ([], ["-f", "table"], ["-f", "json"]):
        csv_output = _evaluate(clean_model, cbis_csv, *fmt, "-o", "ev.csv")
        assert csv_output.exit_code == 2 and "evaluate writes its report as JSON: name --output .json" in csv_output.output, fmt


def test_compare_paper_tables_go_to_stdout_and_say_when_the_sample_is_too_small(clean_model, cbis_csv, tmp_path):
    result = _evaluate(clean_model, cbis_csv, "--compare", "paper", "--output", str(tmp_path / "r.json"))
    assert result.exit_code == 0, result.output
    assert "Beside arXiv 2508.16000" in result.stdout and "too few to compare: 10 cases of 2 patients" in result.stdout
    assert json.loads((tmp_path / "r.json").read_text())["comparison"]["note"].startswith("too few to compare")
    as_json = _evaluate(clean_model, cbis_csv, "--compare", "paper", "--format", "json", "--output", str(tmp_path / "q.json"))
    assert as_json.exit_code == 0 and as_json.stdout == "" and "comparison" in json.loads((tmp_path / "q.json").read_text())


def test_reference_points_on_the_held_out_test_split_are_not_claimed_as_measured_here():
    from mammofuse.evaluation.reference import REFERENCE_POINTS

    held_out = [source for setting, _, source in REFERENCE_POINTS if "official test split" in setting]
    assert held_out and all("not re-measured here" in source for source in held_out)


def test_threshold_source_is_where_the_stored_threshold_came_from():
    from mammofuse.provenance import threshold_source

    oof = {"arm_folder": "runs/cv/arms/late", "folds": 5, "cases": 1304, "value": 0.51}
    assert threshold_source({"n_val": 0, "threshold_from": oof}).startswith("Youden's J on the pooled out-of-fold predictions of `runs/cv/arms/late`")
    assert threshold_source({"n_val": 262}) == "chosen on validation by Youden's J"
    assert threshold_source({"n_val": 262, "n_val_malignant": 80}) == "chosen on validation by Youden's J"
    assert threshold_source({"n_val": 3, "n_val_malignant": 3}).startswith("not tuned (validation part of one class): its 3 cases are all malignant")
    assert threshold_source({"n_val": 0}).startswith("not tuned")
    assert threshold_source({}).startswith("unknown")


def test_a_card_says_what_its_validation_part_chose() -> None:
    """With --threshold-from, the card said both that cross-validation and that the validation AUC chose the threshold."""
    from mammofuse.training.card import _validation_caveat

    assert _validation_caveat(True, False, "last", None).startswith("- The validation AUC chose the threshold, so it is optimistic")
    assert _validation_caveat(True, True, "best", None).startswith("- The validation AUC chose the epoch, so")
    assert "chose nothing (the threshold came from cross-validation" in _validation_caveat(True, True, "last", None)
    assert _validation_caveat(False, True, "last", None).startswith("- No validation part")


def test_a_card_gives_the_fine_tune_learning_rates_the_schedule_uses() -> None:
    """finetune_lr scales the run's cosine, which has decayed by the time the backbone unfreezes: the card said
    "fine-tuned at 0.0001" where epoch 11 of 20 ran at 5.05e-05."""
    from mammofuse.training.card import model_card
    from mammofuse.training.schedule import lr_factor
    from mammofuse.training.settings import TrainSettings
    from mammofuse.training.state import BestEpoch

    def training_line(**kw: int) -> str:
        card = model_card(TrainSettings(epochs=20, pretrained="default", **kw), {"n_val": 0, "n_train": 9, "n_train_patients": 9}, [], BestEpoch())
        return next(line for line in card.splitlines() if line.startswith("- 0 epochs run of 20 asked"))

    settings = TrainSettings(epochs=20, freeze_epochs=10, pretrained="default")
    first, last = (settings.lr * lr_factor(epoch, settings) for epoch in (10, 19))
    assert f"{first:.3g}, {last:.3g}" == "5.05e-05, 1e-06"  # the schedule, unchanged (published results depend on it)
    assert training_line(freeze_epochs=10).endswith(
        "; backbone frozen for the first 10 (heads at up to lr 0.001), then fine-tuned at up to 5.05e-05, "
        "following the cosine schedule from epoch 11: lr 5.05e-05 → 1e-06")
    assert training_line(freeze_epochs=20).endswith("; backbone frozen throughout (heads at up to lr 0.001)")
    assert training_line().endswith("; peak lr 0.001")  # the default recipe has no frozen phase


def test_a_card_gives_the_peak_learning_rate_a_warm_up_longer_than_the_run_reaches() -> None:
    """Was: with --warmup-epochs 5 and --epochs 2 the run trained at 1.67e-04 then 3.33e-04, and the card said "peak lr 0.001"."""
    from mammofuse.training.card import model_card
    from mammofuse.training.settings import TrainSettings
    from mammofuse.training.state import BestEpoch

    card = model_card(TrainSettings(epochs=2, warmup_epochs=5), {"n_val": 0, "n_train": 9, "n_train_patients": 9}, [], BestEpoch())
    assert next(line for line in card.splitlines() if line.startswith("- 0 epochs run of 2 asked")).endswith("; peak lr 0.000333")


def test_a_card_says_where_its_image_encoder_started_and_names_only_files_a_model_folder_holds(tmp_path: Path) -> None:
    """Was "started from weights learned here without labels" for any start but random weights, a backbone learned on
    other films and a supervised model's branch (staged training) included; and it pointed to `train_config.yaml` and
    `history.jsonl`, which neither the bundled model nor a published one holds."""
    import re

    from mammofuse.hub import resolve_model
    from mammofuse.training.card import model_card
    from mammofuse.training.settings import TrainSettings
    from mammofuse.training.state import BestEpoch

    (tmp_path / "config.json").write_text("{}")

    def caveat(pretrained: str | None) -> str:
        card = model_card(TrainSettings(pretrained=pretrained), {"n_val": 0, "n_train": 9, "n_train_patients": 9}, [], BestEpoch())
        return next(line for line in card.splitlines() if line.startswith("- The image encoder"))

    assert caveat(None).startswith("- The image encoder was randomly initialised, not ImageNet-initialised")
    assert caveat("cbis-texture-cnn4").startswith("- The image encoder was initialised from the self-supervised backbone `cbis-texture-cnn4`")
    assert caveat(str(tmp_path)).startswith(f"- The image encoder was initialised from the image branch of the trained model `{tmp_path.name}`")
    assert not any("here without labels" in caveat(start) for start in (None, "cbis-texture-cnn4", str(tmp_path)))
    bundled = resolve_model("default").folder
    named = set(re.findall(r"`([^`/ ]+\.(?:json|jsonl|yaml|safetensors))`", (bundled / "README.md").read_text()))
    assert named and all((bundled / name).is_file() for name in named), named


def _card(dataset: str, fusion: str = "late", abnormality: tuple[str, ...] = ("mass",)) -> str:
    from mammofuse.training.card import model_card
    from mammofuse.training.settings import TrainSettings
    from mammofuse.training.state import BestEpoch

    provenance = {"n_val": 0, "n_train": 9, "n_train_patients": 9, "abnormality": list(abnormality)}
    return model_card(TrainSettings(dataset=dataset, fusion=fusion, pretrained=None), provenance, [], BestEpoch())


def test_a_cbis_ddsm_card_states_its_reference_standard_intended_use_and_data_provenance() -> None:
    """Cards said nothing of how labels were established (BENIGN_WITHOUT_CALLBACK lesions are benign without a biopsy),
    what the model is for and not for, where the films came from, or that a case is a lesion on one view."""
    card = _card("cbis-ddsm")
    assert "- Reference standard: malignant = pathology-proven; benign = pathology-proven, or not recalled (BENIGN_WITHOUT_CALLBACK: " \
           "judged benign on the screening films alone, with no further films and no biopsy); Lee et al. 2017, *Scientific Data* 4:170177" in card
    assert "- Task: telling benign from malignant a mass that a radiologist has already found, delimited (its lesion region) and " \
           "described (its findings); research on multimodal fusion and its explanations\n- Users: researchers\n" in card
    out_of_scope = next(line for line in card.splitlines() if line.startswith("- Out of scope: "))
    assert out_of_scope == ("- Out of scope: screening or detection (finding lesions): the model scores a lesion it is given; calcifications: "
                            "it trained on masses only; digital mammograms from modern detectors: its training images were digitised film; "
                            "any clinical decision")
    assert "Heath et al. 2001, *Proc. IWDM 2000*" in card and "no demographics" in card and "- Unit: a lesion on one view;" in card
    assert card.index("## Intended use") < card.index("## Model")
    assert "masses: it trained on calcifications only" in _card("cbis-ddsm", abnormality=("calc",))
    both = _card("cbis-ddsm", abnormality=("calc", "mass"))
    assert "a calcification or mass that" in both and "it trained on" not in both
    clinical = _card("cbis-ddsm", fusion="clinical")
    assert "has already found and described (its findings);" in clinical and "modern detectors" not in clinical  # no image: no film


@pytest.mark.parametrize(("dataset", "fusion"), [("mini-mias", "late"), ("manifest", "image"), ("manifest", "clinical"), ("", "late")])
def test_a_card_of_other_data_claims_no_cbis_ddsm_specifics(dataset: str, fusion: str) -> None:
    card = _card(dataset, fusion, abnormality=())
    assert not any(claim in card for claim in ("DDSM", "BENIGN_WITHOUT_CALLBACK", "Lee et al.", "Heath et al.", "pathology-proven",
                                               "- Unit:", "calcifications: it trained"))
    assert "- Reference standard: the labels as " in card and "how they were established is not recorded here" in card
    assert "a lesion that a radiologist has already found" in card and card.count("any clinical decision") == 1
    assert ("modern detectors" in card) == (dataset == "mini-mias")  # mini-MIAS is digitised film too; a manifest's images may not be


def _ablation(arms: dict) -> dict:
    arm = {"auc": 0.88, "auc_sd": 0.02, "auc_pooled": 0.88, "sensitivity": 0.8, "specificity": 0.8}
    return {"protocol": {"dataset": "cbis-ddsm (train split)", "cases": 9, "patients": 9, "split": "5-fold"},
            "variants": {name: {**arm, **extra} for name, extra in arms.items()}}


def test_a_cross_validated_card_says_how_to_read_its_shortcut_controls(tmp_path: Path) -> None:
    """A fusion model's controls (0.850) keep the findings: read alone they looked like a leak, where the findings alone score 0.859."""
    from mammofuse.training.card import add_cross_validation

    controls = {"masked": {"n": 9, "auc": 0.85, "auc_plain_same_cases": 0.88}, "away": {"n": 9, "auc": 0.851, "auc_plain_same_cases": 0.88}}

    def card(report: dict, arm: str) -> str:
        (tmp_path / "README.md").write_text("# card\n")
        add_cross_validation(tmp_path, report, arm)
        text = (tmp_path / "README.md").read_text()
        lines = text.splitlines()
        if "- How to read the controls: " in text:  # right after the control lines
            at = next(i for i, line in enumerate(lines) if line.startswith("- How to read the controls: "))
            assert lines[at - 1].startswith("- Shortcut control, ")
        return text

    both = card(_ablation({"late": {"controls": controls}, "clinical": {"auc_pooled": 0.859},
                           "image": {"controls": {"masked": {**controls["masked"], "auc": 0.49}, "away": {**controls["away"], "auc": 0.51}}}}), "late")
    assert "- How to read the controls: a fusion model keeps the findings when the lesion is hidden, so compare its controls with the " \
           "findings alone, the `clinical` arm of this ablation: pooled AUC 0.859; the image arm's own controls (here masked 0.490, " \
           "away 0.510) near 0.5 mean the image branch reads the lesion" in both
    alone = card(_ablation({"cross-md_off": {"controls": controls}}), "cross-md_off")
    assert "with the findings alone (the `clinical` arm: `mammofuse ablate --variants clinical`, same folds); the image arm's own " \
           "controls (`mammofuse ablate --variants image`) near 0.5" in alone
    image = card(_ablation({"image": {"controls": controls}}), "image")
    assert "- How to read the controls: near 0.5 mean the image branch reads the lesion" in image and "fusion model" not in image
    assert "How to read the controls" not in card(_ablation({"clinical": {}}), "clinical")


def test_the_bundled_card_carries_what_the_card_writer_now_says_of_its_data_and_use() -> None:
    """The bundled card is kept by hand: the intended-use, unit, reference-standard and provenance lines the card writer
    gives its config must be in it word for word, with its flow of cases and the no-region branch's numbers."""
    from mammofuse.hub import resolve_model
    from mammofuse.training.card import model_card
    from mammofuse.training.settings import TrainSettings
    from mammofuse.training.state import BestEpoch

    folder = resolve_model("default").folder
    provenance = json.loads((folder / "config.json").read_text())["provenance"]
    written = model_card(TrainSettings(**provenance["settings"]), provenance, [], BestEpoch()).splitlines()
    start = written.index("## Intended use")
    kept = [*written[start:start + 5], *(line for line in written if line.startswith(("- Unit:", "- Reference standard:", "- Data provenance:")))]
    bundled = (folder / "README.md").read_text()
    assert len(kept) == 8 and all(line in bundled.splitlines() for line in kept)
    assert "1,318 lesion rows from 691 patients" in bundled and "104 of them (15%) benign without callback" in bundled
    assert "ROC AUC 0.855, calibration slope 0.80" in bundled and "- How to read the controls: a fusion model" in bundled


def test_a_lesion_crop_model_given_no_regions_says_its_images_were_not_used(cbis_csv, dicom_root):
    from mammofuse.hub import resolve_model

    try:
        resolve_model("default")
    except MammofuseError as exc:
        pytest.skip(f"bundled default model not installed: {exc}")
    args = ["evaluate", "--dataset", "cbis-ddsm", "--data", str(cbis_csv), "--images", str(dicom_root), "--abnormality", "mass", "--bootstrap", "10"]
    result = runner.invoke(app, [*args, "--format", "json"], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert "10 of 10 cases have no lesion region: their image is not used: each that can be read is scored on its clinical findings alone" in " ".join(result.stderr.split())
    model = json.loads(result.stdout)["model"]
    assert len(model["notes"]) == 1 and "no lesion region" in model["notes"][0]
    assert model["threshold_source"].startswith("Youden's J on the pooled out-of-fold predictions")  # as the model card says
    masked = runner.invoke(app, [*args, "--control", "masked"], env={"COLUMNS": "300"})
    assert "late model on cbis-ddsm (test), control: lesion masked out" in " ".join(masked.stdout.split())  # the title wraps
    assert masked.exit_code == 1 and "10 of 10 cases have no lesion region: the 'masked' control needs the lesion region, so each of them fails" \
        in " ".join(masked.stderr.split())  # not scored on their findings as if controlled


def test_a_whole_breast_model_refuses_the_away_control_in_one_line(tmp_path, mini_mias):
    from conftest import make_tiny_model

    model = make_tiny_model(tmp_path / "model", "image", "full")
    result = runner.invoke(app, ["evaluate", "--model", str(model), "--dataset", "mini-mias", "--data", str(mini_mias),
                                 "--split", "all", "--control", "away"])
    assert result.exit_code == 2 and "looks at the whole breast: use 'masked'" in result.output
    assert "Traceback" not in result.output


def test_reports_are_strict_json_with_undefined_numbers_as_null() -> None:
    """A fold trained without a validation part has a NaN validation AUC: ablation.json held `NaN`, which JSON readers refuse."""
    from mammofuse.jsontext import json_text

    text = json_text({"val_auc": float("nan"), "folds": [0.7, float("inf"), (1, -float("inf"))], "name": "x", "n": 3}, indent=1)
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in JSON")) == {"val_auc": None, "folds": [0.7, None, [1, None]],
                                                                                     "name": "x", "n": 3}


def test_evaluate_in_python_warns_the_remarks_the_cli_prints(tmp_path, cbis_csv):
    """mammofuse.evaluate() said nothing of evaluated patients the model was trained on, where the CLI shows a panel;
    and the report named the model by the spec as typed in the CLI, by its resolved name in Python."""
    import warnings

    import mammofuse
    from mammofuse.evaluation.evaluate import report_remarks
    from mammofuse.jsontext import json_text

    leaky = _clinical_model(tmp_path / "leaky", ["P_00173", "P_00001"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics = mammofuse.evaluate(f"{leaky}/", "cbis-ddsm", cbis_csv, bootstrap=50)
    remarks = [w for w in caught if issubclass(w.category, mammofuse.MammofuseWarning)]
    assert [str(w.message) for w in remarks] == [r.text for r in report_remarks(metrics.report)]
    assert [r.kind for r in report_remarks(metrics.report)][-1] == "overlap"
    assert str(remarks[-1].message).startswith("PATIENT OVERLAP: 1 of 2 evaluated patients were in the model's TRAINING data")
    assert all(w.filename == __file__ for w in remarks)  # at the caller's line
    cli = _evaluate(f"{leaky}/", cbis_csv, "--format", "json")
    assert cli.exit_code == 0 and "WARNING: LEAKAGE" in cli.stderr and "PATIENT OVERLAP" in cli.stderr
    assert json.loads(cli.stdout) == json.loads(json_text(metrics.to_dict()))
    assert metrics.report["model_spec"] == str(leaky)


def test_report_remarks_of_an_auc_too_good_and_a_model_without_patient_digests():
    from mammofuse.evaluation.evaluate import report_remarks
    from mammofuse.evaluation.leakage import LEAKAGE_CHECKLIST

    report = {"model": {"notes": ["a model note"]}, "rows": {"rows": 9, "left_out": 3, "mixed_pathology": 2, "box_count": 1, "ambiguous": 0},
              "leakage": patient_overlap(["P_1"], {}), "suspicious_auc": True}
    remarks = report_remarks(report)
    assert [r.kind for r in remarks] == ["note", "note", "note", "suspicious_auc"]
    assert remarks[0].text == ("3 of the split's 9 CSV rows are left out: 2 on films holding lesions of both pathologies, whose boxes cannot be "
                               "told apart; 1 on films whose boxes in the COCO file are not as many as their rows")
    assert remarks[1].text == "a model note"
    assert remarks[2].text == "the model records no training-patient digests; patient overlap cannot be checked"
    assert remarks[3].text.startswith("AUC >= 0.97 is far above") and remarks[3].details == LEAKAGE_CHECKLIST


def test_platt_recovers_the_map_and_recalibrates_folds_from_the_other_folds() -> None:
    """Scores squeezed towards 0.5 (true logit = 2 x the score's) are found under-confident and mended out of fold."""
    from mammofuse.evaluation.calibration import calibration_summary, fit_platt
    from mammofuse.results import sigmoid

    rng = np.random.default_rng(0)
    true_logit = rng.normal(0, 2, 4000)
    labels = (rng.random(4000) < sigmoid(true_logit)).astype(int)
    squeezed = sigmoid(true_logit / 2)
    fitted = fit_platt(labels, squeezed)
    assert fitted.slope == pytest.approx(2.0, abs=0.15) and fitted.intercept == pytest.approx(0.0, abs=0.1)
    summary = calibration_summary([(labels[k::4], squeezed[k::4]) for k in range(4)])
    assert summary["slope"] == pytest.approx(fitted.slope)
    assert summary["ece"] > 0.05 and summary["ece_recalibrated"] < summary["ece"] / 2
    assert summary["brier_recalibrated"] < summary["brier"]
    assert calibration_summary([(labels, squeezed)]) is None  # one fold: nothing to fit the others on


def test_scores_that_rank_backwards_get_no_calibration() -> None:
    from mammofuse.evaluation.calibration import fit_platt

    with pytest.raises(MammofuseError, match="backwards"):
        fit_platt([0, 0, 1, 1, 0, 1], [0.9, 0.8, 0.2, 0.1, 0.7, 0.3])


def test_metrics_by_subgroup_call_each_case_at_its_own_threshold_and_count_the_unrecorded():
    from mammofuse.evaluation.subgroups import NOT_RECORDED, subgroup_lines, subgroup_metrics

    labels = [0, 1, 0, 1, 0, 1, 1, 0]
    probs = [0.2, 0.9, 0.6, 0.7, 0.35, 0.4, 0.8, 0.3]
    cuts = [0.5] * 4 + [0.3] * 4  # the last four were called at another fold's threshold
    groups = [{"density": "1", "view": "CC"}] * 4 + [{"density": "4", "view": "CC"}] * 3 + [{"view": "CC"}]
    out = subgroup_metrics(labels, probs, [f"p{i}" for i in range(8)], cuts, groups, n_boot=0, seed=0)
    assert set(out) == {"density"}  # every case is CC: one group says nothing the whole does not
    one, four = out["density"]["1"], out["density"]["4"]
    assert (one["n"], one["positives"], one["auc"], one["sensitivity"], one["specificity"]) == (4, 2, 1.0, 1.0, 0.5)
    assert (four["n"], four["auc"], four["sensitivity"], four["specificity"]) == (3, 1.0, 1.0, 0.0)  # the benign 0.35 >= 0.3: malignant
    assert out["density"][NOT_RECORDED] == {"n": 1}
    assert subgroup_lines(out) == ["breast density: 1: AUC 1.000 (n 4, 2 malignant); 4: AUC 1.000 (n 3, 2 malignant); not recorded: n 1"]


def test_a_cross_validated_card_gives_the_arm_by_breast_density(tmp_path):
    from mammofuse.training.card import add_cross_validation

    (tmp_path / "README.md").write_text("# card\n")
    group = {"n": 10, "positives": 5, "auc": 0.8, "auc_ci": [0.6, 0.95], "sensitivity": 0.8, "specificity": 0.6}
    arm = {"auc": 0.8, "auc_sd": 0.1, "auc_pooled": 0.8, "sensitivity": 0.8, "specificity": 0.6, "folds": 5, "auc_folds": [0.8] * 5,
           "subgroups": {"density": {"1": group, "4": {**group, "auc": 0.7}}}}
    report = {"variants": {"clinical": arm}, "protocol": {"dataset": "cbis-ddsm", "cases": 20, "patients": 20, "split": "5-fold"}}
    add_cross_validation(tmp_path, report, "clinical")
    assert ("- By breast density: 1: AUC 0.800 [0.600, 0.950] (n 10, 5 malignant); 4: AUC 0.700 [0.600, 0.950] (n 10, 5 malignant) "
            "(pooled out of fold, 95% CI by patient bootstrap)") in (tmp_path / "README.md").read_text()

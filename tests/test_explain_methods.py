"""Explanation methods as plug-ins: the registry, when each method applies, the runner's loop, the Explanation record."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

from mammofuse.atomic import write_text
from mammofuse.cli import app
from mammofuse.data.sample import Sample
from mammofuse.errors import MammofuseError
from mammofuse.explainers import (
    METHODS,
    CaseContext,
    Contribution,
    ExplainOptions,
    Explanation,
    ExplanationMethod,
    MethodResult,
    available_methods,
    check_options,
    default_selection,
    explain_case,
    get_method,
    select_methods,
)
from mammofuse.explainers.report import ReportSection
from mammofuse.imaging.preprocess import PreprocessRecipe
from mammofuse.model import MammoFuse, ModelConfig

CLINICAL = {"density": "3", "shape": "irregular", "margin": "spiculated"}


def tiny_model(fusion: str) -> MammoFuse:
    torch.manual_seed(0)
    return MammoFuse(ModelConfig(fusion=fusion, backbone="resnet18", proj_dim=16, num_heads=2,
                                 preprocessing=PreprocessRecipe(image_size=32, input="full").as_dict())).eval()


def case(path: Path, clinical: dict[str, str] = CLINICAL) -> Sample:
    return Sample(id=path.name, patient_id="", label=-1, clinical=clinical, image_path=str(path))


# --- the registry ---------------------------------------------------------------------------


def test_the_registry_holds_the_five_methods_in_running_order() -> None:
    assert available_methods() == ("gradcam", "shap", "lime_clinical", "lime_image", "attention")
    assert all(isinstance(m, ExplanationMethod) and m.name == name for name, m in METHODS.items())
    assert get_method("shap") is METHODS["shap"]
    with pytest.raises(MammofuseError, match="unknown explanation method 'magic'; choose from gradcam, shap, lime_clinical"):
        get_method("magic")


def test_selection_takes_names_or_the_lime_group_and_runs_in_registry_order() -> None:
    assert default_selection() == ("gradcam", "shap", "lime", "attention")
    assert [m.name for m in select_methods(default_selection())] == list(available_methods())
    assert [m.name for m in select_methods(["attention", "lime"])] == ["lime_clinical", "lime_image", "attention"]
    assert [m.name for m in select_methods(["lime_image", "gradcam"])] == ["gradcam", "lime_image"]
    with pytest.raises(MammofuseError, match=r"unknown explanation method 'magic', 'x'.*\(lime = lime_clinical, lime_image\)"):
        select_methods(["gradcam", "magic", "x"])


def test_options_validate_methods_and_lime_samples() -> None:
    assert ExplainOptions().methods == default_selection()
    with pytest.raises(MammofuseError, match="unknown explanation method"):
        ExplainOptions(methods=("gradcam", "magic"))
    with pytest.raises(MammofuseError, match=r"^lime_samples must be an integer in \[10, 100000\], not 9$"):
        ExplainOptions(lime_samples=9)


@pytest.mark.parametrize("method, fusion, reason", [
    ("gradcam", "image", None),
    ("gradcam", "clinical", "the model is clinical-only (no image branch)"),
    ("gradcam", "cross", None),
    ("shap", "image", "the model is image-only (it ignores clinical findings)"),
    ("shap", "clinical", None),
    ("shap", "cross", None),
    ("lime_clinical", "image", "the model is image-only"),
    ("lime_clinical", "clinical", None),
    ("lime_clinical", "cross", None),
    ("lime_image", "image", None),
    ("lime_image", "clinical", "the model is clinical-only"),
    ("lime_image", "cross", None),
    ("attention", "image", "'image' fusion has no cross-attention"),
    ("attention", "clinical", "'clinical' fusion has no cross-attention"),
    ("attention", "concat", "'concat' fusion has no cross-attention"),
    ("attention", "cross", None),
    ("attention", "co", None),
])
def test_each_method_says_whether_it_applies_to_a_model_and_why_not(method: str, fusion: str, reason: str | None) -> None:
    model = SimpleNamespace(config=ModelConfig(fusion=fusion, backbone="resnet18"))
    assert get_method(method).applies_to(model) == reason


def test_listing_the_methods_does_not_import_torch() -> None:
    code = "import sys, mammofuse.explainers as e; e.available_methods(); e.ExplainOptions(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_the_cli_lists_and_validates_methods_from_the_registry(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["explain", "--help"], env={"COLUMNS": "250"})
    assert result.exit_code == 0
    assert all(name in result.output for name in available_methods())
    result = CliRunner().invoke(app, ["explain", "x.dcm", "--out", str(tmp_path), "--methods", "lime_image,sorcery"], env={"COLUMNS": "250"})
    assert result.exit_code == 2 and "'sorcery'; choose from gradcam, shap, lime_clinical, lime_image, attention" in result.stderr


def test_options_are_checked_only_by_methods_that_apply() -> None:
    with pytest.raises(MammofuseError, match="unknown layer 'backbone.layer9'"):
        check_options(tiny_model("image"), ExplainOptions(layer="backbone.layer9"))
    check_options(tiny_model("clinical"), ExplainOptions(layer="backbone.layer9"))  # no Grad-CAM to run
    check_options(tiny_model("image"), ExplainOptions(methods=("shap", "lime_image"), layer="backbone.layer9"))
    with pytest.raises(MammofuseError, match=r"no chosen method applies to this model \(SHAP: the model is image-only.*methods for it: gradcam, lime_image"):
        check_options(tiny_model("image"), ExplainOptions(methods=("shap",)))


# --- the runner's loop ----------------------------------------------------------------------


def test_methods_that_do_not_apply_are_skipped_with_their_reason(real_dicoms: dict[str, Path], tmp_path: Path) -> None:
    steps: list[str] = []
    options = ExplainOptions(methods=("attention", "gradcam", "shap", "lime_image"))
    result = explain_case(tiny_model("clinical"), case(real_dicoms["P_00173_lcc"]), tmp_path, options, on_step=steps.append)
    assert steps == ["shap"]
    assert result.notes == [
        "Grad-CAM skipped: the model is clinical-only (no image branch)",
        "image LIME skipped: the model is clinical-only",
        "attention skipped: 'clinical' fusion has no cross-attention",
    ]
    assert list(result.outputs) == ["shap_png", "shap_json", "summary", "report"]
    assert list(result.seconds) == ["read_and_predict", "shap", "total"]
    report = (tmp_path / "report.html").read_text()
    assert "image LIME skipped: the model is clinical-only" in report and "Grad-CAM (image)" not in report


def test_a_method_can_skip_a_case_it_cannot_explain(real_dicoms: dict[str, Path], tmp_path: Path) -> None:
    sample = case(real_dicoms["P_00173_lcc"], clinical={})
    result = explain_case(tiny_model("cross"), sample, tmp_path, ExplainOptions(methods=("gradcam", "attention")))
    assert result.notes[-1] == "attention skipped: no clinical finding given, so the image had nothing to attend to"
    assert list(result.outputs) == ["gradcam", "gradcam_npy", "summary", "report"]
    with pytest.raises(MammofuseError, match="1-130.dcm: nothing to explain: .*attention skipped: no clinical finding given"):
        explain_case(tiny_model("cross"), sample, tmp_path / "none", ExplainOptions(methods=("attention",)))
    assert not (tmp_path / "none").exists()


class Stub(ExplanationMethod):
    """A method that plugs in without any change to the runner."""

    name, title, outputs = "stub", "stub method", {"stub": "stub.txt"}
    runs: list[str] = []

    def applies_to(self, model: MammoFuse) -> str | None:
        return None if model.config.fusion == "cross" else "only cross models"

    def run(self, case: CaseContext) -> MethodResult:
        self.runs.append(case.inputs.source)
        paths = self.paths(case.folder)
        write_text(paths["stub"], "stub")
        return MethodResult(paths, ReportSection("Stub section", "drawn by the stub"), notes=["stub ran"],
                            contributions=[Contribution("mass margins", "SPICULATED", 0.25)])


def test_a_new_method_plugs_into_the_runner_and_the_report(real_dicoms: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(METHODS, "stub", Stub())
    monkeypatch.setattr(Stub, "runs", [])
    sample = case(real_dicoms["P_00173_lcc"])
    result = explain_case(tiny_model("cross"), sample, tmp_path / "cross", ExplainOptions(methods=("stub",)))
    assert Stub.runs == [sample.image_path]
    assert result.outputs["stub"] == tmp_path / "cross" / "stub.txt" and result.notes == ["stub ran"]
    assert result.top_contributions == [Contribution("mass margins", "SPICULATED", 0.25)]
    assert "Stub section" in (tmp_path / "cross" / "report.html").read_text()
    with pytest.raises(MammofuseError, match="nothing to explain: stub method skipped: only cross models"):
        explain_case(tiny_model("concat"), sample, tmp_path / "concat", ExplainOptions(methods=("stub",)))
    assert Stub.runs == [sample.image_path]


# --- the Explanation record -----------------------------------------------------------------


def test_explanation_to_dict_is_json_ready_and_is_what_explanation_json_holds(real_dicoms: dict[str, Path], tmp_path: Path) -> None:
    options = ExplainOptions(methods=("gradcam", "shap"))
    result = explain_case(tiny_model("cross"), case(real_dicoms["P_00820_rcc"]), tmp_path, options, model_name="tiny")
    assert isinstance(result, Explanation)
    record = result.to_dict()
    assert json.loads(json.dumps(record)) == record
    assert record["outputs"]["gradcam"] == "gradcam.png" and record["options"]["methods"] == ["gradcam", "shap"]
    assert record["decision"] == ("malignant" if result.probability >= result.threshold else "benign")
    assert record["top_clinical_contributions"][0] == {"field": result.top_contributions[0].label,
                                                       "value": result.top_contributions[0].value, "shap": result.top_contributions[0].shap}
    # Written last, the file lists every output (the report and itself included) and the total time.
    assert json.loads((tmp_path / "explanation.json").read_text()) == record
    assert {"summary", "report"} <= set(record["outputs"]) and "total" in record["seconds"]


def test_an_explanation_built_by_hand_serialises_paths_as_names_and_times_to_the_millisecond() -> None:
    result = Explanation(
        source="scan.dcm", folder=Path("out/scan"), probability=0.75, logit=1.0986, threshold=0.5, decision="malignant",
        model="m", weights_digest="0123456789abcdef", fusion="cross", backbone="resnet18",
        clinical={"margin": "SPICULATED", "density": None},
        options=ExplainOptions(methods=("shap",)), outputs={"shap_png": Path("out/scan/shap_clinical.png")},
        notes=["a note"], top_contributions=[Contribution("mass margins", "SPICULATED", 0.2)], seconds={"shap": 0.12345},
    )
    record = json.loads(json.dumps(result.to_dict()))
    assert record == result.to_dict()
    assert record["outputs"] == {"shap_png": "shap_clinical.png"} and record["seconds"] == {"shap": 0.123}
    assert record["top_clinical_contributions"] == [{"field": "mass margins", "value": "SPICULATED", "shap": 0.2}]
    assert record["clinical"] == {"margin": "SPICULATED", "density": None} and "Research use only" in record["notice"]
    assert result.model_description == "m (cross fusion, resnet18; weights 0123456789abcdef)"


# --- the front door -------------------------------------------------------------------------


def test_the_front_door_explains_one_file_with_findings(real_dicoms: dict[str, Path], tmp_path: Path) -> None:
    from mammofuse.api import explain

    model = tiny_model("cross")
    model.name = "tiny"
    result = explain(real_dicoms["P_00820_rcc"], tmp_path, model, methods=["gradcam", "attention"], layer="backbone.layer3", density=3,
                     margin="spiculated")  # layer4 of a 32 px input is one cell, which a note would call no location
    assert isinstance(result, Explanation) and result.model == "tiny"
    assert result.clinical["margin"] == "spiculated" and result.clinical["shape"] is None
    assert list(result.outputs) == ["gradcam", "gradcam_npy", "attention", "summary", "report"]
    assert (tmp_path / "report.html").is_file() and result.notes == []
    with pytest.raises(MammofuseError, match="unknown explanation method 'magic'"):
        explain(real_dicoms["P_00820_rcc"], tmp_path / "bad", model, methods=["magic"])
    assert not (tmp_path / "bad").exists()

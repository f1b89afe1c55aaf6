"""`mammofuse explain`: Grad-CAM, clinical SHAP, LIME, attention and the HTML report.

Correctness is checked against independent implementations (captum's LayerGradCam,
the Shapley formula over every ordering) and on a constructed image whose only signal sits in one quadrant.
Models are random-weight ResNet-18s at 32-64 px: fast, and real networks.
"""

from __future__ import annotations

import functools
import html
import itertools
import json
import re
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from mammofuse.cli import app
from mammofuse.clinical import load_schema
from mammofuse.data.sample import Sample
from mammofuse.errors import MammofuseError, OutputError
from mammofuse.explainers import (
    ExplainOptions,
    GradCAM,
    explain_case,
    grad_cam,
    output_folders,
)
from mammofuse.explainers.inputs import (
    FixedClinicalScorer,
    FixedImageScorer,
    prepare_inputs,
)
from mammofuse.explainers.lime_explain import lime_clinical, lime_image
from mammofuse.explainers.runner import MAX_FOLDER_BYTES
from mammofuse.explainers.shap_clinical import clinical_shapley
from mammofuse.imaging.preprocess import PreprocessRecipe
from mammofuse.inference import load_input
from mammofuse.model import MammoFuse, ModelConfig, save_model
from mammofuse.results import sigmoid

runner = CliRunner()
CLINICAL = {"density": "3", "shape": "irregular", "margin": "spiculated", "calc_type": "punctate-pleomorphic"}
IMAGE_FUSIONS = ("image", "concat", "cross", "co")


def make_model(fusion: str = "cross", size: int = 64, seed: int = 0) -> MammoFuse:
    torch.manual_seed(seed)
    config = ModelConfig(fusion=fusion, backbone="resnet18", proj_dim=16, num_heads=2,
                         preprocessing=PreprocessRecipe(image_size=size, input="full").as_dict())
    return MammoFuse(config).eval()


def case_tensors(model: MammoFuse, clinical: dict[str, str] = CLINICAL, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    size = model.config.recipe.image_size
    image = torch.randn(1, 1, size, size, generator=torch.Generator().manual_seed(seed))
    vector, mask = load_schema().encode(clinical)
    return image, torch.from_numpy(vector)[None], torch.from_numpy(mask)[None]


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Saved random-weight models, ResNet-18 at 32 px, one per fusion."""
    root = tmp_path_factory.mktemp("explain-models")
    return {f: save_model(make_model(f, size=32), root / f) for f in ("image", "clinical", "cross", "co")}


def explain_cli(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["explain", *args], env={"OMP_NUM_THREADS": "1", "COLUMNS": "200"})
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


# --- Grad-CAM -------------------------------------------------------------------------------


@pytest.mark.parametrize("layer", ["backbone.layer4", "backbone.layer3", "backbone.layer2.1.conv2", "backbone.bn1"])
@pytest.mark.parametrize("fusion", IMAGE_FUSIONS)
def test_gradcam_equals_captums_layer_gradcam(fusion: str, layer: str) -> None:
    captum_attr = pytest.importorskip("captum.attr")
    model = make_model(fusion)
    image, clinical, mask = case_tensors(model)
    ours = grad_cam(model, image, clinical, mask, layer)
    reference = captum_attr.LayerGradCam(lambda x: model(x, clinical, mask).logits, model.get_submodule(layer))
    theirs = reference.attribute(image, relu_attributions=True)[0, 0].detach().numpy()
    assert ours.shape == theirs.shape
    assert ours.max() > 0, "a zero map would make the comparison empty"
    np.testing.assert_allclose(ours / ours.max(), theirs / theirs.max(), atol=1e-5)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6 * ours.max())


@pytest.mark.parametrize("backbone, layer", [("resnet34", "backbone.layer3"), ("resnet50", "backbone.layer3.2.conv3")])
def test_gradcam_equals_captum_on_other_backbones(backbone: str, layer: str) -> None:
    captum_attr = pytest.importorskip("captum.attr")
    torch.manual_seed(0)
    model = MammoFuse(ModelConfig(fusion="concat", backbone=backbone, proj_dim=16, num_heads=2,
                                  preprocessing=PreprocessRecipe(image_size=64, input="full").as_dict())).eval()
    image, clinical, mask = case_tensors(model)
    ours = grad_cam(model, image, clinical, mask, layer)
    theirs = captum_attr.LayerGradCam(lambda x: model(x, clinical, mask).logits, model.get_submodule(layer)).attribute(image, relu_attributions=True)
    assert ours.max() > 0
    np.testing.assert_allclose(ours, theirs[0, 0].detach().numpy(), rtol=1e-4, atol=1e-6 * ours.max())


def quadrant_signal_model(fusion: str) -> MammoFuse:
    """A model whose image features are local brightness: only lit regions carry signal.

    The backbone is replaced by an 8x8-block mean (non-negative weights) and a ReLU'd
    1x1 expansion to 512 channels; the head's sign is chosen so brightness raises the logit.
    """
    model = make_model(fusion)
    stem = nn.Conv2d(1, 8, kernel_size=8, stride=8, bias=False)
    expand = nn.Conv2d(8, 512, kernel_size=1)
    with torch.no_grad():
        stem.weight.fill_(1 / 64)
        expand.weight.uniform_(0.0, 1.0)
        expand.bias.zero_()
    model.backbone = nn.Sequential(OrderedDict(conv1=stem, relu=nn.ReLU(), layer4=nn.Sequential(expand, nn.ReLU())))
    model.eval()
    _, clinical, mask = case_tensors(model)
    lit, dark = torch.zeros(1, 1, 64, 64), torch.zeros(1, 1, 64, 64)
    lit[..., 24:40, 24:40] = 1.0
    with torch.no_grad():
        if model(lit, clinical, mask).logits <= model(dark, clinical, mask).logits:
            model.head[-1].weight.neg_()
            model.head[-1].bias.neg_()
    return model


@pytest.mark.parametrize("quadrant", [(0, 0), (0, 1), (1, 0), (1, 1)])
@pytest.mark.parametrize("fusion", ["image", "cross"])
def test_gradcam_peaks_in_the_only_region_that_carries_signal(fusion: str, quadrant: tuple[int, int]) -> None:
    model = quadrant_signal_model(fusion)
    _, clinical, mask = case_tensors(model)
    image = torch.zeros(1, 1, 64, 64)
    top, left = 32 * quadrant[0], 32 * quadrant[1]
    image[..., top + 8 : top + 24, left + 8 : left + 24] = 1.0  # a bright blob inside one quadrant
    cam = grad_cam(model, image, clinical, mask, "backbone.layer4")
    assert cam.shape == (8, 8)
    row, col = np.unravel_index(np.argmax(cam), cam.shape)
    assert (row // 4, col // 4) == quadrant
    outside = cam.copy()
    outside[4 * quadrant[0] : 4 * quadrant[0] + 4, 4 * quadrant[1] : 4 * quadrant[1] + 4] = 0
    assert outside.max() == 0 and cam.max() > 0


def test_gradcam_hooks_are_removed_even_when_the_forward_pass_fails() -> None:
    model = make_model("cross")
    image, clinical, mask = case_tensors(model)
    layer = model.get_submodule("backbone.layer4")

    def broken() -> torch.Tensor:
        model(image, clinical, mask)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        with GradCAM(model, "backbone.layer4") as cam:
            assert len(layer._forward_hooks) == 1
            cam(broken)
    assert len(layer._forward_hooks) == 0
    # A layer that is not a feature map (the head) fails cleanly and leaves no hook either.
    with pytest.raises(MammofuseError, match="feature map"):
        grad_cam(model, image, clinical, mask, "head")
    assert all(len(m._forward_hooks) == 0 for m in model.modules())
    # Grad-CAM does not leave gradients on the model's parameters, and gives the same map again.
    first = grad_cam(model, image, clinical, mask)
    assert all(p.grad is None for p in model.parameters())
    np.testing.assert_array_equal(first, grad_cam(model, image, clinical, mask))


def test_gradcam_rejects_unknown_layers_and_clinical_only_models() -> None:
    model = make_model("cross")
    image, clinical, mask = case_tensors(model)
    with pytest.raises(MammofuseError, match="unknown layer 'backbone.layer9'.*backbone.layer4"):
        grad_cam(model, image, clinical, mask, "backbone.layer9")
    with pytest.raises(MammofuseError, match="no image branch"):
        grad_cam(make_model("clinical"), image, clinical, mask)


def test_gradcam_works_with_a_frozen_backbone_and_under_no_grad() -> None:
    model = make_model("co")
    for p in model.parameters():
        p.requires_grad_(False)
    image, clinical, mask = case_tensors(model)
    with torch.no_grad():
        cam = grad_cam(model, image, clinical, mask, "backbone.layer3")
    assert cam.shape == (4, 4) and np.isfinite(cam).all()


# --- SHAP -----------------------------------------------------------------------------------


def shap_inputs(fusion: str, clinical: dict[str, str] = CLINICAL):
    model = make_model(fusion)
    image, vector, mask = case_tensors(model, clinical)
    inputs = type("Inputs", (), {"image": image, "extra": lambda self, batch=1: {}})()
    return model, FixedImageScorer(model, inputs), vector[0].numpy(), mask[0].numpy()


@pytest.mark.parametrize("fusion", ["clinical", "concat", "cross", "co"])
def test_shap_attributions_add_up_to_output_minus_expected_value(fusion: str) -> None:
    model, scorer, vector, mask = shap_inputs(fusion)
    result = clinical_shapley(scorer, vector, mask, load_schema())
    image = None if fusion == "clinical" else scorer.features
    with torch.no_grad():
        direct = float(model(None, torch.from_numpy(vector)[None], torch.from_numpy(mask)[None], features=image).logits[0])
        baseline = float(model(None, torch.zeros(1, 36), torch.zeros(1, 5, dtype=torch.bool), features=image).logits[0])
    assert result.logit_output == pytest.approx(direct, abs=1e-5)
    assert result.logit_expected == pytest.approx(baseline, abs=1e-5)
    assert result.output == pytest.approx(float(sigmoid(direct)), abs=1e-6)
    assert result.logit.sum() == pytest.approx(result.logit_output - result.logit_expected, abs=1e-9)
    assert result.probability.sum() == pytest.approx(result.output - result.expected_value, abs=1e-9)
    assert result.probability[4] == 0.0 and result.values[4] is None  # calc distribution was not given
    assert np.abs(result.probability[:4]).max() > 0


@pytest.mark.parametrize("clinical", [CLINICAL, {"density": "2"}, {"margin": "spiculated", "calc_type": "pleomorphic-amorphous"}])
def test_shap_equals_the_shapley_formula_over_every_ordering_of_the_fields(clinical: dict[str, str]) -> None:
    _, scorer, vector, mask = shap_inputs("cross", clinical=clinical)
    schema = load_schema()
    widths = [b.stop - b.start for b in schema.slices().values()]

    @functools.cache  # 32 coalitions, asked 1,200 times by the orderings below: each scored once
    def value(members: frozenset[int]) -> float:  # the model's probability with only these fields given
        keep = np.array([i in members for i in range(5)])
        return float(sigmoid(scorer.logits(vector[None] * np.repeat(keep, widths)[None], mask[None] & keep[None]))[0])

    orderings = list(itertools.permutations(range(5)))
    brute = np.zeros(5)
    for order in orderings:
        for k, field in enumerate(order):
            brute[field] += value(frozenset(order[: k + 1])) - value(frozenset(order[:k]))
    result = clinical_shapley(scorer, vector, mask, schema)
    np.testing.assert_allclose(result.probability, brute / len(orderings), atol=1e-6)  # float32 batches
    assert result.expected_value == pytest.approx(value(frozenset()), abs=1e-6)


def test_shap_values_are_computed_by_shaps_kernel_explainer(monkeypatch: pytest.MonkeyPatch) -> None:
    import shap

    runs = []

    class Recording(shap.KernelExplainer):
        def shap_values(self, *args, **kwargs):
            runs.append(np.asarray(super().shap_values(*args, **kwargs)))
            return runs[-1]

    monkeypatch.setattr(shap, "KernelExplainer", Recording)
    _, scorer, vector, mask = shap_inputs("cross")
    result = clinical_shapley(scorer, vector, mask, load_schema())
    assert len(runs) == 1 and runs[0].shape == (1, 5, 2)  # one call: logit and probability columns
    np.testing.assert_array_equal(result.logit[:4], runs[0][0, :4, 0])
    np.testing.assert_array_equal(result.probability[:4], runs[0][0, :4, 1])


def test_shap_with_no_clinical_findings_is_all_zero() -> None:
    _, scorer, vector, mask = shap_inputs("cross", clinical={})
    result = clinical_shapley(scorer, vector, mask, load_schema())
    assert np.all(result.probability == 0) and result.output == pytest.approx(result.expected_value)


# --- LIME -----------------------------------------------------------------------------------


def test_clinical_lime_is_reproducible_with_a_seed() -> None:
    _, scorer, _, _ = shap_inputs("cross")
    schema = load_schema()
    first = lime_clinical(scorer, schema, CLINICAL, num_samples=200, seed=3)
    again = lime_clinical(scorer, schema, CLINICAL, num_samples=200, seed=3)
    other = lime_clinical(scorer, schema, CLINICAL, num_samples=200, seed=4)
    assert first.weights == again.weights
    assert first.weights != other.weights
    assert len(first.weights) == 5
    assert any(name == "calcification type=pleomorphic-punctate" for name, _ in first.weights)  # as predict shows it
    assert "<html>" in first.html.lower() or "<!doctype" in first.html.lower()


def test_clinical_lime_draws_every_category_of_every_field_equally_often(monkeypatch: pytest.MonkeyPatch) -> None:
    from lime import lime_tabular

    from mammofuse.explainers.lime_explain import field_categories

    explainers = []

    class Recorded(lime_tabular.LimeTabularExplainer):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            explainers.append(self)

    monkeypatch.setattr(lime_tabular, "LimeTabularExplainer", Recorded)
    _, scorer, _, _ = shap_inputs("clinical")
    schema = load_schema()
    lime_clinical(scorer, schema, CLINICAL, num_samples=20, seed=0)
    sizes = [len(c) for c in field_categories(schema, schema.normalise(CLINICAL))]
    assert len(set(sizes)) > 1  # fields of different sizes: a background as long as the largest is unbalanced
    (explainer,) = explainers
    for field, size in enumerate(sizes):  # LIME samples each field's categories by these frequencies
        assert explainer.feature_values[field] == list(range(size))
        np.testing.assert_allclose(explainer.feature_frequencies[field], 1 / size)


def test_image_lime_is_reproducible_with_a_seed() -> None:
    model = make_model("cross", size=32)
    image, clinical, mask = case_tensors(model)
    inputs = type("Inputs", (), {"clinical": clinical, "mask": mask, "extra_for": lambda self, images, recipe: {}})()
    scorer = FixedClinicalScorer(model, inputs)
    first = lime_image(scorer, image[0, 0].numpy(), num_samples=40, seed=7)
    again = lime_image(scorer, image[0, 0].numpy(), num_samples=40, seed=7)
    other = lime_image(scorer, image[0, 0].numpy(), num_samples=40, seed=8)
    np.testing.assert_array_equal(first.weights, again.weights)
    np.testing.assert_array_equal(first.segments, again.segments)
    assert not np.array_equal(first.weights, other.weights)
    assert first.segments.shape == (32, 32) and first.weights.shape == (first.segments.max() + 1,)


# --- the runner and the CLI on real DICOMs ---------------------------------------------------


def test_inputs_are_exactly_what_predict_feeds_the_model(real_dicoms: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    from mammofuse import inference
    from mammofuse.explainers import inputs as module
    from mammofuse.imaging.reader import read_mammogram

    model = make_model("cross", size=48)
    sample = Sample(id="x", patient_id="", label=-1, clinical=CLINICAL, image_path=str(real_dicoms["P_00820_lcc"]))
    reads = []
    for reader in (module, inference):
        monkeypatch.setattr(reader, "read_mammogram", lambda path: reads.append(path) or read_mammogram(path))
    inputs = prepare_inputs(model, sample)
    monkeypatch.undo()
    assert reads == [sample.image_path]  # the file is decoded once
    np.testing.assert_array_equal(inputs.image[0].numpy(), load_input(sample, model.config.recipe)[0])
    assert inputs.view.ndim == 2 and max(inputs.view.shape) == 768
    assert inputs.header["PatientID"] == "Mass-Test_P_00820_LEFT_CC"


def test_explain_writes_every_output_for_a_real_dicom(tiny_models: dict[str, Path], real_dicoms: dict[str, Path], tmp_path: Path) -> None:
    dicom = real_dicoms["P_00820_rcc"]
    code, out, err = explain_cli(str(dicom), "--model", str(tiny_models["cross"]), "--density", "3", "--shape", "irregular",
                                 "--margin", "spiculated", "--out", str(tmp_path), "--lime-samples", "20", "--seed", "1")
    assert code == 0, err
    folder = tmp_path / dicom.stem
    expected = {"gradcam.png", "gradcam.npy", "shap_clinical.png", "shap_clinical.json", "lime_clinical.html",
                "lime_image.html", "attention.png", "report.html", "explanation.json"}
    assert {p.name for p in folder.iterdir()} == expected  # nothing else: no temporary files left behind
    cam = np.load(folder / "gradcam.npy")
    assert cam.shape == (1, 1) and cam.dtype == np.float32  # layer4 of a 32 px input
    summary = json.loads((folder / "explanation.json").read_text())
    assert {Path(p).name for p in summary["outputs"].values()} == expected  # it lists every output, itself and the report included
    shap_json = json.loads((folder / "shap_clinical.json").read_text())
    contributions = sum(f["shap"] for f in shap_json["fields"])
    assert contributions == pytest.approx(shap_json["output"] - shap_json["expected_value"], abs=1e-9)
    assert shap_json["output"] == pytest.approx(summary["probability"], abs=1e-6)
    assert summary["clinical"]["margin"] == "spiculated" and summary["decision"] in ("benign", "malignant")
    report = (folder / "report.html").read_text()
    assert "Research use only" in report and report.count("data:image/png;base64,") >= 4
    assert f"{summary['probability']:.3f}" in report and "spiculated" in report
    assert "<script src" not in report and "http://" not in report.split("<iframe")[0]
    for png in ("gradcam.png", "shap_clinical.png", "attention.png"):
        assert (folder / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert dicom.name in out and "P(malignant)" in out and "Research use only" in out


def test_dicom_attributes_holding_html_are_shown_as_text(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("pydicom")
    from dicom_factory import breast_phantom, write_dicom

    patient_id = '<script>alert("id")</script>'
    patient_name = "<img src=x onerror=alert(1)>^Evil"
    dicom = write_dicom(tmp_path / "<b onclick=x>.dcm", breast_phantom(96, 64), PatientID=patient_id, PatientName=patient_name)
    code, _, err = explain_cli(str(dicom), "--model", str(tiny_models["co"]), "--margin", "spiculated",
                               "--out", str(tmp_path / "out"), "--lime-samples", "10", "--include-identifiers")
    assert code == 0, err
    report = (tmp_path / "out" / "b_onclick_x" / "report.html").read_text()
    for raw in (patient_id, patient_name, "<b onclick=x>"):
        assert raw not in report
        assert html.escape(raw) in report
    assert "<script>" not in report and "<img src=x" not in report
    assert "<b onclick" not in (tmp_path / "out" / "b_onclick_x" / "lime_image.html").read_text()


def test_clinical_lime_page_and_shap_json_carry_the_notice_and_name_the_case_escaped(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    """lime_clinical.html was LIME's export as it is: no research-use notice, no title, no case name; shap_clinical.json had no notice."""
    pytest.importorskip("pydicom")
    from dicom_factory import breast_phantom, write_dicom

    from mammofuse import RESEARCH_NOTICE

    dicom = write_dicom(tmp_path / "<b onclick=x>.dcm", breast_phantom(96, 64))
    code, _, err = explain_cli(str(dicom), "--model", str(tiny_models["cross"]), "--margin", "spiculated", "--methods", "lime_clinical,shap",
                               "--out", str(tmp_path / "out"), "--lime-samples", "10")
    assert code == 0, err
    page = (tmp_path / "out" / "b_onclick_x" / "lime_clinical.html").read_text()
    assert f"<title>Clinical LIME: {html.escape(str(dicom))}</title>" in page and "<b onclick" not in page
    assert html.escape(RESEARCH_NOTICE) in page and "Content-Security-Policy" in page
    assert '<iframe sandbox="allow-scripts"' in page and "var lime" in html.unescape(page)  # LIME's own page, framed
    assert json.loads((tmp_path / "out" / "b_onclick_x" / "shap_clinical.json").read_text())["notice"] == RESEARCH_NOTICE


def test_report_leaves_patient_identifiers_out_unless_asked(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("pydicom")
    from dicom_factory import breast_phantom, write_dicom

    identifiers = {"PatientName": "Doe^Jane", "PatientID": "MRN-4711", "PatientBirthDate": "19610203",
                   "AccessionNumber": "ACC-99", "StudyDate": "20240517",
                   "StudyDescription": "MAMMO DOE JANE", "SeriesDescription": "L CC JANE D."}  # free text (PS3.15 Annex E)
    dicom = write_dicom(tmp_path / "scan.dcm", breast_phantom(96, 64), Manufacturer="ACME Imaging", **identifiers)
    args = [str(dicom), "--model", str(tiny_models["cross"]), "--margin", "spiculated", "--methods", "shap"]
    assert explain_cli(*args, "--out", str(tmp_path / "plain"))[0] == 0
    report = (tmp_path / "plain" / "scan" / "report.html").read_text()
    assert not [value for value in identifiers.values() if value in report]
    assert "ACME Imaging" in report and "MG" in report and "--include-identifiers" in report
    assert "StudyDescription, SeriesDescription (--include-identifiers shows them)" in report
    assert explain_cli(*args, "--out", str(tmp_path / "full"), "--include-identifiers")[0] == 0
    report = (tmp_path / "full" / "scan" / "report.html").read_text()
    assert all(html.escape(value) in report for value in identifiers.values())


def test_attribution_rows_are_real_lines_in_predicts_lower_case(tiny_models: dict[str, Path], real_dicoms: dict[str, Path], tmp_path: Path) -> None:
    code, out, err = explain_cli(str(real_dicoms["P_00173_lcc"]), "--model", str(tiny_models["cross"]), "--density", "2", "--shape", "lobulated",
                                 "--margin", "circumscribed", "--out", str(tmp_path), "--methods", "shap")
    assert code == 0, err
    assert "\\x0a" not in out and "LOBULATED" not in out
    rows = [line for line in out.splitlines() if "=" in line]
    assert len(rows) == 3 and any("mass shape=lobulated" in row for row in rows)  # one table line per contribution
    report = (tmp_path / "1-130" / "report.html").read_text()
    assert "lobulated" in report and "LOBULATED" not in report


def test_methods_none_of_which_applies_are_an_error(tiny_models: dict[str, Path], real_dicoms: dict[str, Path], tmp_path: Path) -> None:
    dicom = str(real_dicoms["P_00173_lcc"])
    code, out, err = explain_cli(dicom, "--model", str(tiny_models["clinical"]), "--density", "2", "--methods", "gradcam", "--out", str(tmp_path / "c"))
    assert code == 2 and "no chosen method applies to this model" in err and "methods for it: shap" in err
    assert len([line for line in err.splitlines() if line.startswith("error")]) == 1 and "Traceback" not in err
    assert not (tmp_path / "c" / "1-130").exists() and not out
    code, _, err = explain_cli(dicom, "--model", str(tiny_models["cross"]), "--methods", "attention", "--out", str(tmp_path / "a"))
    err = " ".join(err.split())
    assert code == 1 and "1-130.dcm: nothing to explain: no finding of the lesion given" in err  # what the case lacks, then
    assert "; attention skipped: no clinical finding given" in err
    assert not (tmp_path / "a" / "1-130" / "report.html").exists()


def test_methods_that_do_not_apply_are_skipped_with_a_note(tiny_models: dict[str, Path], real_dicoms: dict[str, Path], tmp_path: Path) -> None:
    dicom = str(real_dicoms["P_00173_lcc"])
    code, out, err = explain_cli(dicom, "--model", str(tiny_models["clinical"]), "--density", "2", "--out", str(tmp_path / "c"), "--lime-samples", "10")
    assert code == 0, err
    names = {p.name for p in (tmp_path / "c" / "1-130").iterdir()}
    assert {"shap_clinical.json", "lime_clinical.html", "report.html"} <= names
    assert not names & {"gradcam.png", "lime_image.html", "attention.png"}
    assert "Grad-CAM skipped" in err and "attention skipped" in err and "skipped" not in out  # notes go to stderr
    code, out, err = explain_cli(dicom, "--model", str(tiny_models["image"]), "--out", str(tmp_path / "i"), "--methods", "gradcam,shap")
    assert code == 0, err
    names = {p.name for p in (tmp_path / "i" / "1-130").iterdir()}
    assert "gradcam.png" in names and "shap_clinical.json" not in names and "lime_image.html" not in names
    assert "SHAP skipped" in (tmp_path / "i" / "1-130" / "report.html").read_text()


def test_a_clinical_only_model_explains_without_reading_the_image_as_predict_scores_it(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    """explain read the pixels anyway and failed an unreadable file while noting "images are not read"; predict scored it."""
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not a dicom at all")
    model = str(tiny_models["clinical"])
    code, out, err = explain_cli(str(junk), "--model", model, "--density", "3", "--margin", "spiculated", "--out", str(tmp_path / "out"),
                                 "--lime-samples", "10")
    assert code == 0, err
    assert "images are not read" in err and "failed:" not in err and "P(malignant)" in out
    folder = tmp_path / "out" / "junk"
    summary = json.loads((folder / "explanation.json").read_text())
    assert summary["view"] == {} and {"shap_json", "lime_clinical"} <= set(summary["outputs"]) and "gradcam" not in summary["outputs"]
    report = (folder / "report.html").read_text()
    assert "not read: the model is clinical-only" in report and "bits" not in report
    predicted = runner.invoke(app, ["predict", str(junk), "--model", model, "--density", "3", "--margin", "spiculated", "-f", "json"])
    assert predicted.exit_code == 0 and json.loads(predicted.stdout)[0]["probability"] == pytest.approx(summary["probability"], abs=1e-6)


def test_a_bad_file_fails_alone_with_one_line(tiny_models: dict[str, Path], real_dicoms: dict[str, Path], tmp_path: Path) -> None:
    bad = tmp_path / "broken.dcm"
    bad.write_bytes(b"not a dicom at all")
    good = real_dicoms["P_00173_rcc"]
    code, out, err = explain_cli(str(bad), str(good), "--model", str(tiny_models["cross"]), "--out", str(tmp_path / "o"),
                                 "--methods", "gradcam,shap")
    assert code == 1
    assert "broken.dcm" in err and "Traceback" not in err and len([line for line in err.splitlines() if "failed" in line]) == 1
    assert (tmp_path / "o" / good.stem / "report.html").is_file() and not (tmp_path / "o" / "broken").exists()


@pytest.mark.parametrize("out", ["expl", "expl2"])
def test_explaining_a_folder_again_leaves_out_explains_own_output_folders(out: str, tiny_models: dict[str, Path], tmp_path: Path) -> None:
    """A second `explain studies -r --out studies/expl` listed studies/expl/scan/gradcam.png as an input: exit 2 "is also an input"
    (the same --out), or RGBA failures (another --out)."""
    from PIL import Image

    studies = tmp_path / "studies"
    studies.mkdir()
    Image.fromarray((np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8)).save(studies / "scan.png")
    args = ("--model", str(tiny_models["cross"]), "--margin", "spiculated", "--methods", "gradcam,shap", "-r")
    assert explain_cli(str(studies), *args, "--out", str(studies / "expl"))[0] == 0
    code, _, err = explain_cli(str(studies), *args, "--out", str(studies / out))
    assert code == 0, err
    assert f"1 folder holding explanation.json left out as explain's own outputs: {studies / 'expl' / 'scan'}" in " ".join(err.split())
    assert sorted(p.name for p in (studies / out).iterdir()) == ["scan"]
    code, _, err = explain_cli(str(studies / "expl" / "scan"), *args, "--out", str(tmp_path / "again"))  # the output folder itself
    assert code == 2 and "no mammogram files found" in err


@pytest.mark.parametrize("args, message", [
    (["--methods", "gradcam,magic"], "unknown explanation method"),
    (["--layer", "backbone.layer9"], "unknown layer"),
    (["--layer", ""], "the Grad-CAM layer (--layer) is empty: name one, e.g. backbone.layer4 (image layers: backbone.conv1"),
    (["--margin", "wavy"], "valid:"),
])
def test_usage_errors_exit_2(tiny_models: dict[str, Path], real_dicoms: dict[str, Path], tmp_path: Path, args: list[str], message: str) -> None:
    code, _, err = explain_cli(str(real_dicoms["P_00173_rcc"]), "--model", str(tiny_models["cross"]), "--out", str(tmp_path), *args)
    assert code == 2 and message in err and "Traceback" not in err


def test_runner_gives_the_same_lime_with_the_same_seed(tiny_models: dict[str, Path], real_dicoms: dict[str, Path], tmp_path: Path) -> None:
    from mammofuse.model import load_model

    model = load_model(tiny_models["cross"])
    sample = Sample(id="x", patient_id="", label=-1, clinical=CLINICAL, image_path=str(real_dicoms["P_00173_rmlo"]))
    options = ExplainOptions(methods=("lime",), lime_samples=20, seed=5)
    one = explain_case(model, sample, tmp_path / "a", options)
    two = explain_case(model, sample, tmp_path / "b", options)
    assert (tmp_path / "a" / "lime_image.html").read_text() == (tmp_path / "b" / "lime_image.html").read_text()
    assert one.probability == two.probability


def test_output_folders_are_unique_and_safe(tmp_path: Path) -> None:
    folders = output_folders(["a/scan.dcm", "b/scan.dcm", "c/<x y>.png", "../..dcm"], tmp_path)
    assert [re.sub("-[0-9a-f]{10}$", "-#", f.name) for f in folders] == ["scan-#", "scan-#", "x_y", "case"]
    assert len(set(folders)) == 4 and all(f.parent == tmp_path for f in folders)


def test_output_folders_keep_unicode_names_and_tell_alike_ones_apart_by_path_not_order(tmp_path: Path) -> None:
    """Non-Latin names were all `case`, `case_2`...; café, cafè and caf were caf, caf_2, caf_3 in the order given."""
    sources = ["sl/東京.dcm", "sl/大阪.dcm", "café.dcm", "cafè.dcm", "caf.dcm", "a/scan.dcm", "b/Scan.dcm", "x\u202ey\x1b.dcm",
               "a\udce9.dcm", "..\u200f.dcm", "é" * 300 + ".dcm"]
    folders = output_folders(sources, tmp_path)
    assert dict(zip(sources, folders)) == dict(zip(sources[::-1], output_folders(sources[::-1], tmp_path)))
    names = [f.name for f in folders]
    assert names[:5] == ["東京", "大阪", "café", "cafè", "caf"]
    assert re.fullmatch("scan-[0-9a-f]{10}", names[5]) and re.fullmatch("Scan-[0-9a-f]{10}", names[6])  # alike on macOS
    assert names[7:10] == ["x_y", "a", "case"]  # no bidi, control or undecodable character; never '..'
    assert names[10] == "é" * (MAX_FOLDER_BYTES // 2) and output_folders(["a/../sl/東京.dcm"], tmp_path) == [tmp_path / "東京"]


def test_output_folders_are_the_same_bytes_under_any_locale(tmp_path: Path) -> None:
    """Under a Latin-1 or ASCII locale the name's UTF-8 bytes were read as other characters: 東京 became `case`."""
    import os
    import subprocess
    import sys

    script = ("import os, sys; from pathlib import Path; from mammofuse.explainers.runner import output_folders; "
              "names = [os.fsdecode(n) for n in (b'sl/\\xe6\\x9d\\xb1\\xe4\\xba\\xac.dcm', b'caf\\xc3\\xa9.dcm', b'x\\xff.dcm')]; "
              "sys.stdout.buffer.write(b'/'.join(os.fsencode(f.name) for f in output_folders(names, Path('out'))))")
    env = {**os.environ, "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "東京/café/x".encode()

def test_a_folder_holding_another_files_explanation_gets_this_files_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`explain sl/東京.dcm` overwrote out/case, 大阪's explanation, in silence."""
    monkeypatch.chdir(tmp_path)
    for name in ("sl/東京.dcm", "other/東京.dcm"):
        Path(name).parent.mkdir()
        Path(name).write_bytes(b"")
    out = tmp_path / "out"
    (out / "東京").mkdir(parents=True)
    (out / "東京" / "explanation.json").write_text(json.dumps({"source": "sl/東京.dcm"}))
    notes: list[str] = []
    assert output_folders(["sl/東京.dcm"], out, notes) == output_folders(["./sl/東京.dcm"], out, notes) == [out / "東京"]
    (moved,) = output_folders(["other/東京.dcm"], out, notes)
    assert re.fullmatch("東京-[0-9a-f]{10}", moved.name) and output_folders([str(tmp_path / "other" / "東京.dcm")], out) == [moved]
    assert notes == [f"{out / '東京'} holds the explanation of sl/東京.dcm: that of other/東京.dcm goes to {moved}"]


def test_a_file_of_the_same_relative_path_from_another_working_folder_is_another_file(
    tiny_models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`cd x && explain scan.png`, then `cd y && explain scan.png` into one --out: the second overwrote the first's
    explanation, since the recorded source 'scan.png' read as the same path."""
    from PIL import Image

    for folder, seed in (("x", 0), ("y", 1)):
        (tmp_path / folder).mkdir()
        Image.fromarray((np.random.default_rng(seed).random((64, 64)) * 255).astype(np.uint8)).save(tmp_path / folder / "scan.png")
    args = ("--model", str(tiny_models["clinical"]), "--margin", "spiculated", "--methods", "shap", "--out", str(tmp_path / "out"))
    monkeypatch.chdir(tmp_path / "x")
    assert explain_cli("scan.png", *args)[0] == 0
    assert explain_cli("scan.png", *args)[0] == 0  # the same file again: its own folder
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["scan"]
    first = (tmp_path / "out" / "scan" / "explanation.json").read_bytes()
    monkeypatch.chdir(tmp_path / "y")
    assert explain_cli("scan.png", *args)[0] == 0
    (moved,) = [p for p in (tmp_path / "out").iterdir() if p.name != "scan"]
    assert re.fullmatch("scan-[0-9a-f]{10}", moved.name)
    assert (tmp_path / "out" / "scan" / "explanation.json").read_bytes() == first


def test_a_second_explain_into_a_held_out_folder_is_refused_and_writes_nothing(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    """Two explain runs into one --out named and wrote the same folders at once (and removed each other's outputs)."""
    from PIL import Image

    from mammofuse.atomic import folder_lock

    Image.fromarray((np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8)).save(tmp_path / "scan.png")
    out = tmp_path / "out"
    args = ("--model", str(tiny_models["clinical"]), "--margin", "spiculated", "--methods", "shap", "--out", str(out))
    with folder_lock(out):  # another run holds it
        code, _, err = explain_cli(str(tmp_path / "scan.png"), *args)
    assert code == 3 and err.splitlines()[-1] == f"error: {out}: cannot write (in use by another mammofuse process)", err
    assert not out.exists()  # nothing written: the holder, which made the folder, left it empty, so removed it
    assert explain_cli(str(tmp_path / "scan.png"), *args)[0] == 0 and sorted(p.name for p in out.iterdir()) == ["scan"]  # no lock left


def test_explaining_one_file_again_leaves_the_others_explanations_alone(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    from PIL import Image

    studies = tmp_path / "sl"
    studies.mkdir()
    for name in ("東京.png", "大阪.png"):
        Image.fromarray((np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8)).save(studies / name)
    args = ("--model", str(tiny_models["clinical"]), "--margin", "spiculated", "--methods", "shap", "--out", str(tmp_path / "out"))
    assert explain_cli(str(studies), *args)[0] == 0
    before = {p.name: (p / "explanation.json").read_bytes() for p in (tmp_path / "out").iterdir()}
    assert sorted(before) == ["大阪", "東京"]
    assert explain_cli(str(studies / "東京.png"), *args)[0] == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["大阪", "東京"]
    assert (tmp_path / "out" / "大阪" / "explanation.json").read_bytes() == before["大阪"]
    assert json.loads((tmp_path / "out" / "東京" / "explanation.json").read_text())["source"] == str(studies / "東京.png")


def test_clinical_csv_gives_each_file_its_own_findings(tiny_models: dict[str, Path], real_dicoms: dict[str, Path], tmp_path: Path) -> None:
    benign, malignant = real_dicoms["P_00173_rcc"], real_dicoms["P_00820_rcc"]
    table = tmp_path / "findings.csv"
    table.write_text(f"path,mass margins,density\n{benign},circumscribed,2\n{malignant},spiculated,4\n")
    code, _, err = explain_cli(str(benign), str(malignant), "--model", str(tiny_models["cross"]), "--clinical", str(table),
                               "--out", str(tmp_path / "o"), "--methods", "shap")
    assert code == 0, err
    margins = {name: json.loads((tmp_path / "o" / name / "explanation.json").read_text())["clinical"]["margin"]
               for name in (benign.stem, malignant.stem)}
    assert margins == {benign.stem: "circumscribed", malignant.stem: "spiculated"}


def test_bundled_default_model_explains_a_real_dicom(real_dicoms: dict[str, Path], tmp_path: Path) -> None:
    from mammofuse.hub import resolve_model

    try:
        resolve_model("default")
    except MammofuseError as exc:
        pytest.skip(f"bundled default model not installed: {exc}")
    dicom = real_dicoms["P_00820_lmlo"]
    code, out, err = explain_cli(str(dicom), "--density", "3", "--margin", "spiculated", "--roi", "2000,1000,200",
                                 "--out", str(tmp_path), "--lime-samples", "10")
    assert code == 0, err
    assert (tmp_path / dicom.stem / "report.html").is_file() and "default" in out
    code, _, err = explain_cli(str(dicom), "--density", "3", "--out", str(tmp_path / "no-roi"), "--lime-samples", "10")
    assert code == 1 and "no lesion region was given: give its region (--roi" in err


def test_explain_without_a_region_does_not_claim_the_findings_are_scored(real_dicoms: dict[str, Path], tmp_path: Path) -> None:
    """predict scores a lesion-crop model's case without a region on its findings; explain fails it, and its note says so."""
    import warnings

    from mammofuse import MammofuseWarning, explain

    dicom = str(real_dicoms["P_00173_lcc"])
    code, _, err = explain_cli(dicom, "--density", "2", "--methods", "shap", "--out", str(tmp_path / "cli"))
    err = " ".join(err.split())
    assert code == 1 and "1 of 1 files have no lesion region: explaining needs the lesion's region, so each of them fails" in err
    assert "scored on its clinical findings alone" not in err and "only the breast density" not in err  # it is not scored at all
    with warnings.catch_warnings(record=True) as caught, pytest.raises(MammofuseError, match="no lesion region was given"):
        warnings.simplefilter("always")
        explain(dicom, tmp_path / "lib", density=2, methods=["shap"])
    remarks = " ".join(str(w.message) for w in caught if issubclass(w.category, MammofuseWarning))
    assert "explaining needs the lesion's region" in remarks and "scored on its clinical findings alone" not in remarks
    assert "roi= in Python" in remarks  # the library's remark names the library's way to give the region


def test_the_documented_roi_of_the_shipped_1_130_lies_on_its_mass(real_dicoms: dict[str, Path]) -> None:
    """README and --help give `--roi 2400,1145,100` for 1-130.dcm: its benign mass, brighter than the tissue around it."""
    from mammofuse.imaging.reader import read_mammogram

    example = "--roi 2400,1145,100 --density 2 --shape lobulated --margin circumscribed"
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert example in readme and "2210,1400,180" not in readme
    assert example in runner.invoke(app, ["explain", "--help"], env={"COLUMNS": "250"}).stdout
    pixels = read_mammogram(real_dicoms["P_00173_lcc"], canonical=False).pixels  # the file's own pixels, as --roi takes them
    rows, cols = np.ogrid[: pixels.shape[0], : pixels.shape[1]]
    distance = np.hypot(rows - 2400, cols - 1145)
    inside, ring = pixels[distance <= 100], pixels[(distance > 100) & (distance <= 200)]
    assert (inside > 0.2).mean() > 0.9 and inside.mean() > 1.5 * ring.mean()


def test_a_second_run_into_the_same_folder_leaves_only_its_own_outputs(tiny_models: dict[str, Path], real_dicoms: dict[str, Path], tmp_path: Path) -> None:
    dicom = str(real_dicoms["P_00173_lmlo"])
    common = ["--model", str(tiny_models["cross"]), "--margin", "spiculated", "--density", "2", "--out", str(tmp_path), "--lime-samples", "10"]
    assert explain_cli(dicom, *common)[0] == 0
    assert (tmp_path / "1-131" / "attention.png").is_file()
    (tmp_path / "1-131" / "notes.txt").write_text("the user's own file")
    assert explain_cli(dicom, *common, "--methods", "shap")[0] == 0
    names = {p.name for p in (tmp_path / "1-131").iterdir()}
    assert names == {"shap_clinical.png", "shap_clinical.json", "report.html", "explanation.json", "notes.txt"}


def test_what_a_method_cannot_show_is_said_not_drawn(tiny_models: dict[str, Path], real_dicoms: dict[str, Path], tmp_path: Path) -> None:
    """A ResNet's layer4 on a 32 px input is one cell, which was drawn as full-strength evidence over the whole crop; one
    finding gave an attention panel of 1 everywhere; LIME's fit was not given in the report."""
    import warnings

    from mammofuse import explain

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        one = explain(real_dicoms["P_00173_lcc"], tmp_path / "a", tiny_models["cross"], lime_samples=20, margin="spiculated")
        co = explain(real_dicoms["P_00173_lcc"], tmp_path / "b", tiny_models["co"], methods="attention", margin="spiculated")
    assert np.load(one.outputs["gradcam_npy"]).shape == (1, 1)
    assert any(n.startswith("Grad-CAM at backbone.layer4 is a 1 x 1 map of one value: no location at this layer") for n in one.notes)
    assert any(n.startswith("attention skipped: one clinical finding given, so every image region's attention went to it") for n in one.notes)
    assert "attention" not in one.outputs and "attention" in co.outputs  # co still draws the finding's attention to the image
    report = one.outputs["report"].read_text(encoding="utf-8")
    assert re.search(r"over the label-encoded clinical fields .*local model R\u00b2 \d\.\d{3}", report)
    from mammofuse.explainers.lime_explain import fit_notes

    assert fit_notes("image LIME", 0.23) == ["image LIME's local linear model fits the model's scores poorly here (R\u00b2 0.23, below 0.5): "
                                             "read its weights with care"] and fit_notes("image LIME", 0.5) == []
    fits = [float(r) for r in re.findall(r"local model R\u00b2 (-?\d+\.\d{3})", report)]
    assert len(fits) == 2 and sum("LIME's local linear model fits the model's scores poorly here" in n for n in one.notes) == sum(r < 0.5 for r in fits)


def test_one_method_may_be_given_as_a_string(real_dicoms: dict[str, Path], tmp_path: Path) -> None:
    """methods="gradcam" was split into the letters 'g', 'r', 'a'... (unknown explanation methods)."""
    import warnings

    from mammofuse import explain

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        explanation = explain(real_dicoms["P_00173_lcc"], tmp_path, roi=(2400, 1145, 100), density=2, methods="gradcam")
    assert "gradcam" in explanation.outputs and "shap_clinical" not in explanation.outputs


def test_a_radiomics_model_gets_attention_maps_and_lime_images_their_own_token(real_dicoms: dict[str, Path], tmp_path: Path) -> None:
    """The radiomics token follows the feature-map tokens: attention crashed on it, and image LIME kept the unperturbed crop's."""
    torch.manual_seed(0)
    recipe = PreprocessRecipe(image_size=32, canvas=(800, 800), roi_min_size=16)
    model = MammoFuse(ModelConfig(fusion="cross", backbone="resnet18", proj_dim=16, num_heads=2, radiomics=True, preprocessing=recipe.as_dict()))
    model.train()
    sample = Sample(id="x", patient_id="", label=-1, clinical=CLINICAL, image_path=str(real_dicoms["P_00173_lcc"]), region=(2400.0, 1145.0, 100.0))
    inputs = prepare_inputs(model.eval(), sample)
    with torch.no_grad():
        direct = float(model(inputs.image, inputs.clinical, inputs.mask, **inputs.extra()).logits[0])
    assert FixedClinicalScorer(model, inputs).logits(inputs.image)[0] == pytest.approx(direct, abs=1e-5)
    blank = torch.zeros_like(inputs.image)  # every superpixel switched off
    assert not torch.allclose(inputs.extra_for(blank, model.config.recipe)["radiomics"], inputs.radiomics)
    with torch.no_grad():
        own, unperturbed = (float(model(blank, inputs.clinical, inputs.mask, **extra).logits[0])
                            for extra in (inputs.extra_for(blank, model.config.recipe), inputs.extra()))
    assert FixedClinicalScorer(model, inputs).logits(blank)[0] == pytest.approx(own, abs=1e-5)
    assert own != pytest.approx(unperturbed, abs=1e-3)
    model.train()
    result = explain_case(model, sample, tmp_path / "case", ExplainOptions(methods=("attention",)))
    assert model.training, "the caller's mode is restored"
    assert set(result.outputs) == {"attention", "report", "summary"} and result.notes == []
    swapped = Sample(id="y", patient_id="", label=-1, clinical=CLINICAL, image_path=sample.image_path, region=(1145.0, 2400.0, 100.0))
    result = explain_case(model, swapped, tmp_path / "swapped", ExplainOptions(methods=("shap",)))
    assert any("lies mostly on background" in n for n in result.notes)


def test_a_method_that_fails_is_a_note_and_the_others_are_written(tiny_models: dict[str, Path], real_dicoms: dict[str, Path], tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from mammofuse.explainers.methods import METHODS

    def broken(case: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(METHODS["gradcam"], "run", broken)
    model = MammoFuse.from_pretrained(tiny_models["cross"])
    sample = Sample(id="x", patient_id="", label=-1, clinical=CLINICAL, image_path=str(real_dicoms["P_00820_rcc"]))
    result = explain_case(model, sample, tmp_path, ExplainOptions(methods=("gradcam", "shap")))
    assert "Grad-CAM failed: RuntimeError: boom" in result.notes
    assert {p.name for p in tmp_path.iterdir()} == {"shap_clinical.png", "shap_clinical.json", "report.html", "explanation.json"}


def test_a_rerun_stopped_midway_leaves_no_index_of_the_earlier_run(tiny_models: dict[str, Path], real_dicoms: dict[str, Path], tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Was: the earlier run's explanation.json and report.html kept, describing other findings, beside this run's Grad-CAM."""
    from mammofuse.explainers.methods import METHODS

    args = (str(real_dicoms["P_00173_lcc"]), "--model", str(tiny_models["cross"]), "--methods", "gradcam,shap", "--out", str(tmp_path))
    assert explain_cli(*args, "--margin", "spiculated")[0] == 0
    folder = tmp_path / "1-130"
    earlier = {p.name: p.stat().st_ino for p in folder.iterdir()}
    assert {"explanation.json", "report.html", "gradcam.png"} <= set(earlier)

    def ctrl_c(case: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(METHODS["shap"], "run", ctrl_c)  # Ctrl-C once Grad-CAM has written this run's files
    code, _, err = explain_cli(*args, "--margin", "circumscribed", "--density", "4")
    assert (code, err) == (130, "error: interrupted\n")
    assert (folder / "gradcam.png").stat().st_ino != earlier["gradcam.png"]  # replaced: written by this run
    assert not {"explanation.json", "report.html"} & {p.name for p in folder.iterdir()}


@pytest.mark.parametrize(("methods", "problem"), [
    ("shap", "an earlier output cannot be removed: Is a directory"),  # a stale output's name
    ("gradcam,shap", "it is a folder"),  # a method's own output
])
def test_a_folder_at_an_output_name_is_an_output_error(tiny_models: dict[str, Path], real_dicoms: dict[str, Path], tmp_path: Path,
                                                       methods: str, problem: str) -> None:
    """Was a raw IsADirectoryError from removing stale outputs (exit 1), or a Grad-CAM note, not exit 3."""
    (tmp_path / "1-130" / "gradcam.png").mkdir(parents=True)
    code, _, err = explain_cli(str(real_dicoms["P_00173_lcc"]), "--model", str(tiny_models["cross"]), "--margin", "spiculated",
                               "--methods", methods, "--out", str(tmp_path))
    assert code == 3 and len(err.strip().splitlines()) == 1, err
    assert f"{tmp_path / '1-130' / 'gradcam.png'}: cannot write ({problem})" in err
    model = MammoFuse.from_pretrained(tiny_models["cross"])
    sample = Sample(id="x", patient_id="", label=-1, clinical=CLINICAL, image_path=str(real_dicoms["P_00173_lcc"]))
    with pytest.raises(OutputError, match=rf"gradcam.png: cannot write \({problem}\)"):
        explain_case(model, sample, tmp_path / "1-130", ExplainOptions(methods=tuple(methods.split(","))))


@pytest.mark.parametrize("key", ["P_00173_lcc", "P_00173_rcc"])  # the right breast's view is mirrored
def test_the_view_box_says_where_the_drawn_region_lies_in_the_file(real_dicoms: dict[str, Path], key: str) -> None:
    from PIL import Image

    from mammofuse.imaging.reader import read_mammogram

    recipe = PreprocessRecipe(image_size=32, canvas=(800, 800), roi_min_size=16)
    model = MammoFuse(ModelConfig(fusion="late", backbone="cnn4", preprocessing=recipe.as_dict())).eval()
    path = real_dicoms[key]
    raw = read_mammogram(path, canonical=False).pixels
    region = (2400.0, 1145.0 if key.endswith("lcc") else raw.shape[1] - 1145.0, 100.0)
    inputs = prepare_inputs(model, Sample(id="x", patient_id="", label=-1, clinical=CLINICAL, image_path=str(path), region=region))
    top, bottom, left, right = (int(round(v)) for v in inputs.view_box)
    assert top < region[0] < bottom and left < region[1] < right
    window = raw[top:bottom, left:right]
    window = window[:, ::-1] if inputs.info.flipped else window
    assert inputs.info.flipped == key.endswith("rcc")
    height, width = inputs.view.shape
    redrawn = np.asarray(Image.fromarray(window.astype(np.float32), mode="F").resize((width, height), Image.Resampling.BILINEAR))
    assert np.corrcoef(redrawn.ravel(), inputs.view.ravel())[0, 1] > 0.98


def test_explain_in_python_takes_the_cli_settings_and_any_case_of_method(tiny_models: dict[str, Path], real_dicoms: dict[str, Path], tmp_path: Path) -> None:
    """seed=, lime_samples= and layer= fell into the findings ('unknown clinical field'); 'GradCAM' was unknown in Python only."""
    from mammofuse import MammoFuse, explain

    model = MammoFuse.from_pretrained(tiny_models["cross"])
    dicom = real_dicoms["P_00173_rmlo"]
    explanation = model.explain(dicom, tmp_path / "a", methods=[" GradCAM", "LIME_Clinical,gradcam"], seed=7, lime_samples=12,
                                layer="backbone.layer3", margin="spiculated")
    assert explanation.options.to_dict() == {"methods": ["gradcam", "lime_clinical"], "lime_samples": 12, "seed": 7,
                                             "layer": "backbone.layer3", "include_identifiers": False}
    assert {"gradcam", "lime_clinical"} <= set(explanation.outputs) and "lime_image" not in explanation.outputs
    for methods in ([], " , "):
        with pytest.raises(MammofuseError, match=r"^methods \(--methods\) is empty; choose from gradcam, shap"):
            explain(dicom, tmp_path / "b", model, methods=methods, margin="spiculated")
    code, _, err = explain_cli(str(dicom), "--model", str(tiny_models["cross"]), "--methods", " , ", "--out", str(tmp_path / "c"))
    assert code == 2 and "methods (--methods) is empty; choose from gradcam, shap" in err
    for setting, message in (({"seed": -1}, r"seed must be an integer in \[0, 4294967295\]"),
                             ({"lime_samples": 9}, r"lime_samples must be an integer in \[10, 100000\]"),
                             ({"layer": "backbone.layer9"}, "unknown layer")):
        with pytest.raises(MammofuseError, match=message):
            model.explain(dicom, tmp_path / "d", methods="gradcam,lime", margin="spiculated", **setting)
    with pytest.raises(TypeError, match=r"^methods must be a method name \(str\) or a list of them, not int"):
        model.explain(dicom, tmp_path / "d", methods=["shap", 5], margin="spiculated")
    assert not (tmp_path / "b").exists() and not (tmp_path / "d").exists()


@pytest.mark.parametrize(("name", "methods"), [("attention.png", "shap"), ("gradcam.png", "gradcam"), ("report.html", "shap")])
def test_explain_in_python_refuses_to_remove_or_overwrite_the_file_it_explains(name: str, methods: str, tiny_models: dict[str, Path],
                                                                               tmp_path: Path) -> None:
    """explain('apix/attention.png', 'apix') deleted its input as a stale output; 'apix/gradcam.png' was overwritten."""
    from PIL import Image

    from mammofuse import MammoFuse

    image = tmp_path / "apix" / name
    image.parent.mkdir()
    Image.fromarray((np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8)).save(image, format="PNG")
    before = image.read_bytes()
    model = MammoFuse.from_pretrained(tiny_models["cross"])
    with pytest.raises(MammofuseError, match=rf"^output {re.escape(str(image))} is also an input \({re.escape(str(image))}\): writing it would destroy"):
        model.explain(image, image.parent, methods=methods, **CLINICAL)
    assert image.read_bytes() == before and [p.name for p in image.parent.iterdir()] == [name]  # nothing written


def test_the_same_seed_writes_the_same_lime_pages_and_report_and_leaves_numpys_random_state(tiny_models: dict[str, Path], real_dicoms: dict[str, Path], tmp_path: Path) -> None:
    """LIME's page drew its element id from NumPy's global random state: two runs differed, and the caller's draws moved."""
    from mammofuse import MammoFuse

    model = MammoFuse.from_pretrained(tiny_models["cross"])
    np.random.seed(11)
    expected = np.random.random()
    np.random.seed(11)
    for folder in ("a", "b"):
        model.explain(real_dicoms["P_00173_rmlo"], tmp_path / folder, methods="lime", seed=3, lime_samples=10, **CLINICAL)
    assert np.random.random() == expected
    for name in ("lime_clinical.html", "lime_image.html", "report.html"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name

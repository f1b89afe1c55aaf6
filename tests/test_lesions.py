"""Several lesions of one image: rows of a clinical CSV that name one file, each with its own lesion circle."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import make_tiny_model
from typer.testing import CliRunner

import mammofuse
from mammofuse.cases import cases_from_inputs
from mammofuse.cli import app
from mammofuse.errors import MammofuseError

runner = CliRunner()
UID_LCC = "1.3.6.1.4.1.9590.100.1.2.218230735110408535824248856621891983277"  # P_00173's left CC (1-130.dcm)
FIRST = {"roi_row": "2400", "roi_col": "1145", "roi_radius": "100", "shape": "lobulated", "margin": "circumscribed"}
SECOND = {"roi_row": "1500", "roi_col": "900", "roi_radius": "140", "shape": "irregular", "margin": "spiculated"}


@pytest.fixture(scope="module")
def roi_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny lesion-crop model: its score depends on the region, so lesions of one file score apart."""
    return make_tiny_model(tmp_path_factory.mktemp("lesions") / "model", "concat", "roi")


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), env={"OMP_NUM_THREADS": "1", "COLUMNS": "250"})
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, " ".join(result.stderr.split())


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def circle(row: dict[str, str]) -> list[float]:
    return [float(row["roi_row"]), float(row["roi_col"]), float(row["roi_radius"])]


@pytest.mark.parametrize("key", ["path", "SOPInstanceUID"])
def test_each_lesion_scores_as_its_own_run_would(key: str, roi_model: Path, real_dicoms: dict[str, Path], tmp_path: Path) -> None:
    lcc = real_dicoms["P_00173_lcc"]
    name = str(lcc) if key == "path" else UID_LCC
    table = write_csv(tmp_path / "lesions.csv", [{key: name, "density": "2", **FIRST}, {key: name, "density": "2", **SECOND}])
    code, out, err = run("predict", str(lcc), "--model", str(roi_model), "--clinical", str(table), "-f", "json")
    assert code == 0, err
    records = json.loads(out)
    assert [r["region"] for r in records] == [circle(FIRST), circle(SECOND)]
    assert [(r["clinical"]["shape"], r["clinical"]["margin"]) for r in records] == [("lobulated", "circumscribed"), ("irregular", "spiculated")]
    assert records[0]["probability"] != records[1]["probability"]
    for record, lesion in zip(records, (FIRST, SECOND)):  # the same score as a run given that lesion alone
        roi = ",".join(lesion[c] for c in ("roi_row", "roi_col", "roi_radius"))
        code, out, err = run("predict", str(lcc), "--model", str(roi_model), "--roi", roi, "--density", "2", "--shape", lesion["shape"],
                             "--margin", lesion["margin"], "-f", "json")
        assert code == 0 and json.loads(out)[0]["probability"] == record["probability"], err


def test_the_table_tells_lesions_apart_and_the_summary_counts_cases_of_files(roi_model: Path, real_dicoms: dict[str, Path], tmp_path: Path) -> None:
    lcc = real_dicoms["P_00173_lcc"]
    table = write_csv(tmp_path / "lesions.csv", [{"path": str(lcc), **FIRST}, {"path": str(lcc), **SECOND}])
    code, out, err = run("predict", str(lcc), "--model", str(roi_model), "--clinical", str(table))
    assert code == 0 and "lesion" in out and "2400,1145,100" in out and "1500,900,140" in out, err
    code, out, err = run("predict", str(lcc), "--model", str(roi_model), "--clinical", str(table), "-f", "csv", "-o", str(tmp_path / "s.csv"))
    assert code == 0 and "2 cases of 1 file: 2 scored, 0 failed" in err, err
    code, out, err = run("predict", str(lcc), "--model", str(roi_model), "--margin", "spiculated", "-f", "csv", "-o", str(tmp_path / "t.csv"))
    assert code == 0 and "1 file: 1 scored, 0 failed" in err, err


def test_rows_of_one_file_need_each_its_own_circle(real_dicoms: dict[str, Path], tmp_path: Path) -> None:
    lcc = real_dicoms["P_00173_lcc"]
    for key, name in (("path", str(lcc)), ("SOPInstanceUID", UID_LCC)):
        bare = write_csv(tmp_path / "bare.csv", [{key: name, **FIRST}, {key: name, "shape": "round"}])
        code, out, err = run("predict", str(lcc), "--clinical", str(bare), "-f", "json")
        assert code == 2 and not out and f"lines 2, 3 of {bare} all give this file's {key}, and line 3 gives no lesion circle" in err, err
        assert "full path" not in err  # they are one file's rows: no column would tell them apart
        same = write_csv(tmp_path / "same.csv", [{key: name, **FIRST}, {key: name, **{**SECOND, **{c: FIRST[c] for c in ("roi_row", "roi_col", "roi_radius")}}}])
        code, out, err = run("predict", str(lcc), "--clinical", str(same), "-f", "json")
        assert code == 2 and not out and f"lines 2 and 3 of {same} give this file the same lesion circle" in err, err


def test_rows_matched_by_file_name_only_stay_ambiguous(real_dicoms: dict[str, Path], tmp_path: Path) -> None:
    """A bare name may be several files' (1-1.dcm in every TCIA folder): its rows are not taken as one file's lesions."""
    lcc = real_dicoms["P_00173_lcc"]
    table = write_csv(tmp_path / "names.csv", [{"path": lcc.name, **FIRST}, {"path": lcc.name, **SECOND}])
    with pytest.raises(MammofuseError, match="matches lines 2, 3 .* by file name; give each file's full path .* to give one image several lesions"):
        cases_from_inputs([lcc], False, {}, table)


def test_resume_finds_each_lesion_by_its_region(roi_model: Path, real_dicoms: dict[str, Path], tmp_path: Path) -> None:
    lcc = real_dicoms["P_00173_lcc"]
    table = write_csv(tmp_path / "lesions.csv", [{"path": str(lcc), **FIRST}, {"path": str(lcc), **SECOND}])
    out = tmp_path / "scores.jsonl"
    args = ("predict", str(lcc), "--model", str(roi_model), "--clinical", str(table), "-f", "jsonl", "-o", str(out))
    code, _, err = run(*args)
    assert code == 0, err
    both = out.read_text().splitlines()
    out.write_text(both[1] + "\n")  # the second lesion done, the first not
    code, _, err = run(*args, "--resume")
    assert code == 0 and "2 cases of 1 file, 1 of them in" in err, err
    again = out.read_text().splitlines()
    assert sorted(again) == sorted(both) and again[0] == both[1]
    moved = write_csv(tmp_path / "moved.csv", [{"path": str(lcc), **FIRST}, {"path": str(lcc), **{**SECOND, "roi_radius": "150"}}])
    code, _, err = run("predict", str(lcc), "--model", str(roi_model), "--clinical", str(moved), "-f", "jsonl", "-o", str(out), "--resume")
    assert code == 2 and "was scored at lesion region 1500,900,140, but this run gives this file 2 lesions, none there" in err, err


def test_breast_scores_average_a_files_lesions_first_as_evaluate_does(roi_model: Path, real_dicoms: dict[str, Path], tmp_path: Path) -> None:
    lcc, lmlo = real_dicoms["P_00173_lcc"], real_dicoms["P_00173_lmlo"]
    table = write_csv(tmp_path / "lesions.csv", [{"path": str(lcc), **FIRST}, {"path": str(lcc), **SECOND},
                                                 {"path": str(lmlo), **{**FIRST, "roi_row": "2000"}}])
    code, out, err = run("predict", str(lcc), str(lmlo), "--model", str(roi_model), "--clinical", str(table), "--aggregate", "breast", "-f", "json")
    assert code == 0 and "several names" not in err, err
    records = json.loads(out)
    lesions, view = [r["probability"] for r in records[:2]], records[2]["probability"]
    expected = round(((lesions[0] + lesions[1]) / 2 + view) / 2, 6)
    assert {r["breast_views"] for r in records} == {2}
    assert all(r["breast_probability"] == pytest.approx(expected, abs=2e-6) for r in records)


def test_explain_and_one_file_in_python_refuse_several_lesions(roi_model: Path, real_dicoms: dict[str, Path], tmp_path: Path) -> None:
    lcc = real_dicoms["P_00173_lcc"]
    table = write_csv(tmp_path / "lesions.csv", [{"path": str(lcc), **FIRST}, {"path": str(lcc), **SECOND}])
    code, _, err = run("explain", str(lcc), "--model", str(roi_model), "--clinical", str(table), "--out", str(tmp_path / "ex"), "--methods", "gradcam")
    assert code == 2 and "explain takes one lesion per image" in err and not (tmp_path / "ex").exists(), err
    with pytest.raises(MammofuseError, match="clinical_csv gives this one file 2 lesions; pass it in a list"):
        mammofuse.predict(lcc, str(roi_model), clinical_csv=table)
    predictions = mammofuse.predict([lcc], str(roi_model), clinical_csv=table)
    assert [p.region for p in predictions] == [tuple(circle(FIRST)), tuple(circle(SECOND))]


def test_notes_count_a_files_lesions_as_cases(roi_model: Path, real_dicoms: dict[str, Path], tmp_path: Path) -> None:
    lcc = real_dicoms["P_00173_lcc"]
    circles = [{c: lesion[c] for c in ("roi_row", "roi_col", "roi_radius")} for lesion in (FIRST, SECOND)]
    table = write_csv(tmp_path / "circles.csv", [{"path": str(lcc), **c} for c in circles])
    code, out, err = run("predict", str(lcc), "--model", str(roi_model), "--clinical", str(table), "-f", "json")
    assert code == 0 and "2 of 2 cases give no finding of the lesion" in err, err


@pytest.mark.parametrize("kept", [FIRST, SECOND])
def test_resume_refuses_a_lesion_no_longer_given_whatever_the_order_of_its_records(kept: dict[str, str], roi_model: Path,
                                                                                 real_dicoms: dict[str, Path], tmp_path: Path) -> None:
    """Before: with the first lesion kept, the second's record was dropped as "scored twice" (and not scored again);
    with the second kept, the run failed on the first's."""
    lcc = real_dicoms["P_00173_lcc"]
    both = write_csv(tmp_path / "both.csv", [{"path": str(lcc), **FIRST}, {"path": str(lcc), **SECOND}])
    out = tmp_path / "scores.jsonl"
    assert run("predict", str(lcc), "--model", str(roi_model), "--clinical", str(both), "-o", str(out))[0] == 0
    written = out.read_bytes()
    one = write_csv(tmp_path / "one.csv", [{"path": str(lcc), **kept}])
    code, _, err = run("predict", str(lcc), "--model", str(roi_model), "--clinical", str(one), "-o", str(out), "--resume")
    assert code == 2 and "was scored with" in err and "resume with the same clinical flags" in err, err
    assert out.read_bytes() == written


def test_the_lesions_of_one_image_are_one_patients(real_dicoms: dict[str, Path], tmp_path: Path) -> None:
    lcc = real_dicoms["P_00173_lcc"]
    table = write_csv(tmp_path / "patients.csv", [{"path": str(lcc), "patient_id": "P_A", **FIRST}, {"path": str(lcc), "patient_id": "P_B", **SECOND}])
    with pytest.raises(MammofuseError, match=r"lines 2 and 3 of .* give this file's lesions different patient_id \(P_A, P_B\)"):
        cases_from_inputs([lcc], False, {}, table)


def test_explain_is_not_told_to_give_one_image_several_lesions(roi_model: Path, real_dicoms: dict[str, Path], tmp_path: Path) -> None:
    from mammofuse.api import cases
    from mammofuse.model import load_model

    lcc = real_dicoms["P_00173_lcc"]
    table = write_csv(tmp_path / "names.csv", [{"path": lcc.name, **FIRST}, {"path": lcc.name, **SECOND}])
    with pytest.raises(MammofuseError) as refused:
        cases([lcc], load_model(roi_model), None, table, explaining=True)
    assert "by file name; give each file's full path" in str(refused.value) and "several lesions" not in str(refused.value)


@pytest.mark.parametrize("fmt", ["jsonl", "json"])
def test_a_files_remark_is_one_note_however_many_lesions(fmt: str, roi_model: Path, real_dicoms: dict[str, Path], tmp_path: Path) -> None:
    import pydicom

    scan = pydicom.dcmread(real_dicoms["P_00173_lcc"])
    scan.Modality = "CR"
    cr = tmp_path / "cr.dcm"
    scan.save_as(cr)
    table = write_csv(tmp_path / "lesions.csv", [{"path": str(cr), **FIRST}, {"path": str(cr), **SECOND}])
    code, _, err = run("predict", str(cr), "--model", str(roi_model), "--clinical", str(table), "-f", fmt)
    assert code == 0 and err.count("modality is CR, not MG") == 1, err


@pytest.mark.parametrize("canvas", [None, (800, 800)])
def test_the_lesions_of_one_film_decode_it_once(canvas: tuple[int, int] | None, real_dicoms: dict[str, Path], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import pydicom

    from mammofuse import inference
    from mammofuse.data.sample import Sample
    from mammofuse.imaging.preprocess import PreprocessRecipe

    scan = pydicom.dcmread(real_dicoms["P_00173_lcc"])
    scan.Modality = "CR"  # a remark every lesion's record carries
    film = tmp_path / "cr.dcm"
    scan.save_as(film)
    recipe = PreprocessRecipe(image_size=32, input="roi", canvas=canvas)
    regions = [tuple(circle(FIRST)), tuple(circle(SECOND)), tuple(circle(FIRST))]
    samples = [Sample(f"l{i}", "p", 0, image_path=str(film), region=r, image_id="f") for i, r in enumerate(regions)]
    samples.append(Sample("other", "q", 0, image_path=str(real_dicoms["P_00173_lcc"]), region=regions[0], image_id="g"))
    reads = []
    monkeypatch.setattr(inference, "read_mammogram", lambda path: reads.append(path) or mammofuse.imaging.reader.read_mammogram(path))
    dataset = inference.LesionDataset(samples, recipe, "cbis-ddsm-v1")
    items = [dataset[i] for i in range(len(samples))]
    assert reads == [str(film), str(real_dicoms["P_00173_lcc"])]
    assert all("modality is CR, not MG" in item["note"] for item in items[:3]) and "modality is CR" not in items[3]["note"]
    for sample, item in zip(samples, items):
        assert item["error"] == "" and np.array_equal(item["image"].numpy(), inference.load_input(sample, recipe)[0])
    assert not dataset._reader._kept  # the last lesion of a film lets it go

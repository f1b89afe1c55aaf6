"""`mammofuse predict` and the case builder, on the eight real CBIS-DDSM DICOMs with a tiny model."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from typer.testing import CliRunner

from mammofuse.cases import cases_from_inputs, find_image_files, read_clinical_csv
from mammofuse.cli import app
from mammofuse.errors import MammofuseError

runner = CliRunner()
CBIS_UID_LCC_BENIGN = "1.3.6.1.4.1.9590.100.1.2.218230735110408535824248856621891983277"


def predict(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["predict", *args], env={"OMP_NUM_THREADS": "1", "COLUMNS": "250"})
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def test_scores_the_eight_real_dicoms(tiny_model: Path, dicom_root: Path) -> None:
    code, out, err = predict(str(dicom_root), "--recursive", "--model", str(tiny_model), "--density", "B",
                             "--shape", "lobulated", "--margin", "circumscribed", "--format", "json")
    assert code == 0, err
    records = json.loads(out)
    assert len(records) == 8 and all(r["error"] is None for r in records)
    assert {Path(r["path"]).name for r in records} == {"1-130.dcm", "1-131.dcm", "1-132.dcm", "1-133.dcm",
                                                      "1-280.dcm", "1-281.dcm", "1-282.dcm", "1-283.dcm"}
    for r in records:
        assert 0.0 <= r["probability"] <= 1.0
        assert r["prediction"] == ("malignant" if r["probability"] >= 0.5 else "benign")
        assert r["threshold"] == 0.5 and r["model"] == str(tiny_model)
        assert r["clinical"] == {"density": "2", "shape": "lobulated", "margin": "circumscribed",
                                 "calc_type": None, "calc_distribution": None}
    assert "Research use only" in err


def test_predict_matches_the_bare_model_on_the_training_preprocessing(tiny_model: Path, real_dicoms: dict[str, Path]) -> None:
    """predict must feed the model exactly what training feeds it (the saved recipe)."""
    import torch

    from mammofuse.clinical import load_schema
    from mammofuse.imaging import read_mammogram
    from mammofuse.imaging.preprocess import preprocess
    from mammofuse.model import load_model

    path = real_dicoms["P_00820_rmlo"]
    code, out, err = predict(str(path), "--model", str(tiny_model), "--margin", "spiculated", "-f", "json")
    assert code == 0, err
    model = load_model(tiny_model)
    image = torch.from_numpy(preprocess(read_mammogram(path), model.config.recipe))[None]
    vector, mask = load_schema().encode({"margin": "spiculated"})
    with torch.inference_mode():
        logit = model(image, torch.from_numpy(vector)[None], torch.from_numpy(mask)[None]).logits
    assert json.loads(out)[0]["probability"] == pytest.approx(torch.sigmoid(logit).item(), abs=1e-5)


def test_table_is_for_people_with_the_notice(tiny_model: Path, real_dicoms: dict[str, Path]) -> None:
    code, out, _ = predict(str(real_dicoms["P_00173_lcc"]), "--model", str(tiny_model))
    assert code == 0
    assert "1-130.dcm" in out and "Research use only" in out and "threshold 0.500" in out


def test_missing_clinical_is_null_and_threshold_overrides(tiny_model: Path, real_dicoms: dict[str, Path]) -> None:
    path = str(real_dicoms["P_00173_lcc"])
    for threshold, call in (("0", "malignant"), ("1", "benign")):
        code, out, _ = predict(path, "--model", str(tiny_model), "--threshold", threshold, "-f", "jsonl")
        record = json.loads(out.splitlines()[0])
        assert code == 0 and record["prediction"] == call and record["threshold"] == float(threshold)
        assert set(record["clinical"].values()) == {None}
        assert record["notice"] == "Research use only, not a medical device."


def test_unknown_clinical_value_is_a_usage_error_with_the_valid_values(tiny_model: Path, real_dicoms: dict[str, Path]) -> None:
    code, out, err = predict(str(real_dicoms["P_00173_lcc"]), "--model", str(tiny_model), "--margin", "spiculatd")
    assert code == 2 and out == ""
    assert "circumscribed, microlobulated, obscured, ill_defined, spiculated" in err
    assert "did you mean spiculated?" in err
    assert "Traceback" not in err


def test_bad_file_among_good_ones_fails_alone(tiny_model: Path, real_dicoms: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"garbage")
    code, out, err = predict(str(real_dicoms["P_00173_lcc"]), str(tmp_path / "broken.dcm"), str(real_dicoms["P_00820_lcc"]),
                             "--model", str(tiny_model), "-f", "json", "--batch-size", "1", "--workers", "1")
    assert code == 1
    records = {Path(r["path"]).name: r for r in json.loads(out)}
    assert records["broken.dcm"]["probability"] is None and "DICOM" in records["broken.dcm"]["error"]
    assert records["1-130.dcm"]["error"] is None and records["1-280.dcm"]["error"] is None
    assert "failed:" in err and "broken.dcm" in err
    code, out, _ = predict(str(real_dicoms["P_00173_lcc"]), str(tmp_path / "broken.dcm"), "--model", str(tiny_model), "--density", "2")
    header, good, bad = (next(line for line in out.splitlines() if key in line) for key in ("probability", "1-130.dcm", "broken.dcm"))
    assert code == 1 and header.split("┃")[-2].strip() == "error"
    assert "density=2" in good and "density=2" in bad and "DICOM" in bad.split("│")[-2]  # the findings in their column, the error in its own
    code, out, _ = predict(str(real_dicoms["P_00173_lcc"]), "--model", str(tiny_model))
    assert code == 0 and "error" not in out


def test_missing_path_and_unknown_model_are_usage_errors(tiny_model: Path, real_dicoms: dict[str, Path], tmp_path: Path) -> None:
    code, _, err = predict(str(real_dicoms["P_00173_lcc"]), str(tmp_path / "absent.dcm"), "--model", str(tiny_model))
    assert code == 2 and "absent.dcm: no such file or folder" in err
    code, _, err = predict(str(real_dicoms["P_00173_lcc"]), "--model", "resnet-imaginary")
    assert code == 2 and "unknown model 'resnet-imaginary'" in err
    code, _, err = predict(str(tmp_path), "--model", str(tiny_model))
    assert code == 2 and "no mammogram files found" in err


def test_output_is_written_and_its_suffix_picks_the_format(tiny_model: Path, real_dicoms: dict[str, Path], tmp_path: Path) -> None:
    target = tmp_path / "out" / "scores.csv"
    code, out, _ = predict(str(real_dicoms["P_00173_lcc"]), "--model", str(tiny_model), "--density", "3", "-o", str(target))
    assert code == 0 and out == ""
    rows = list(csv.DictReader(target.open()))
    assert rows[0]["prediction"] in {"benign", "malignant"} and rows[0]["density"] == "3" and rows[0]["error"] == ""
    assert rows[0]["notice"] == "Research use only, not a medical device."
    assert [p.name for p in target.parent.iterdir()] == ["scores.csv"]  # no temporary left behind


def _write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_clinical_csv_matches_by_path_stem_and_sop_instance_uid(real_dicoms: dict[str, Path], tmp_path: Path) -> None:
    lcc, rcc, mlo = real_dicoms["P_00173_lcc"], real_dicoms["P_00173_rcc"], real_dicoms["P_00173_lmlo"]
    table = _write_csv(tmp_path / "findings.csv", [
        {"path": str(rcc), "breast_density": "2", "mass shape": "OVAL", "assessment": "4"},
        {"path": mlo.stem, "mass margins": "SPICULATED"},
        {"path": "", "SOPInstanceUID": CBIS_UID_LCC_BENIGN, "mass shape": "LOBULATED"},
    ])
    notes: list[str] = []
    cases = cases_from_inputs([lcc, rcc, mlo], False, {"density": "4", "margin": "obscured"}, table, notes=notes)
    by_name = {Path(c.image_path).name: c for c in cases}
    assert by_name[rcc.name].clinical == {"density": "2", "margin": "obscured", "shape": "OVAL"}  # the row wins
    assert by_name[mlo.name].clinical == {"density": "4", "margin": "SPICULATED"}
    assert by_name[lcc.name].clinical == {"density": "4", "margin": "obscured", "shape": "LOBULATED"}
    assert all(c.label == -1 for c in cases)
    assert any("assessment" in n for n in notes)  # never an input: reported as ignored


def test_the_ignored_columns_note_names_the_first_ten(real_dicoms: dict[str, Path], tmp_path: Path) -> None:
    """A CSV of 100,000 columns printed every name in one note."""
    scan = real_dicoms["P_00173_rcc"]
    table = _write_csv(tmp_path / "wide.csv", [{"path": str(scan), "density": "2", **{f"extra{k}": "x" for k in range(1000)}}])
    notes: list[str] = []
    cases_from_inputs([scan], False, {}, table, notes=notes)
    ignored = next(n for n in notes if "ignored columns" in n)
    assert ignored.endswith(f"{table}: {', '.join(f'extra{k}' for k in range(10))} and 990 more")


def test_clinical_csv_relative_paths_regions_and_unmatched_notes(real_dicoms: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    scans = tmp_path / "scans"
    scans.mkdir()
    local = Path(shutil.copy(real_dicoms["P_00820_lcc"], scans / "left.dcm"))
    table = _write_csv(tmp_path / "c.csv", [
        {"file": "scans/left.dcm", "density": "c", "roi_row": "100", "roi_col": "200", "roi_radius": "30"},
        {"file": "elsewhere.dcm", "density": "a"},
    ])
    notes: list[str] = []
    (case,) = cases_from_inputs([scans], False, {}, table, notes=notes)
    assert case.image_path == str(local) and case.clinical == {"density": "c"} and case.region == (100.0, 200.0, 30.0)
    assert any("match no file" in n and "elsewhere.dcm" in n for n in notes)


def test_a_clinical_path_matches_as_written_or_without_the_spaces_around_it(tmp_path: Path) -> None:
    """Was: every path cell was stripped, so the row of a file named `` a.png`` was read as ``a.png``'s. A hand-written
    ``scan.dcm , 3`` still names ``scan.dcm``; rows naming one file either way are its rows together (lesions, or
    ambiguous), never one of them dropped as matching no file."""
    table = tmp_path / "findings.csv"
    table.write_text("path,density,roi_row,roi_col,roi_radius\n a.png,1,,,\nscan.dcm , 3,,,\nb.png,2,10,10,5\nb.png ,3,20,20,5\n")
    clinical = read_clinical_csv(table)
    assert [[row.line for row in clinical.match(tmp_path / name)] for name in (" a.png", "scan.dcm")] == [[2], [3]]
    assert [row.line for row in clinical.match(tmp_path / "b.png", lesions=True)] == [4, 5]  # two lesions of b.png
    with pytest.raises(MammofuseError, match="lines 2, 3 of .*ambiguous.csv all give this file.s path"):
        read_clinical_csv(_ambiguous(tmp_path)).match(tmp_path / "a.png")


def test_a_clinical_csv_gives_the_lesion_circle_one_way(tmp_path: Path) -> None:
    """predict's own ``region`` column is its circle; another CSV's ``region`` (a quadrant) is left alone, as before."""
    table = tmp_path / "findings.csv"
    predicts = "probability,prediction,threshold,model"
    table.write_text(f"path,region,{predicts}\na.png,10; 20; 5,0.9,malignant,0.5,default\nb.png,,,,,\n")
    assert [row.region for row in read_clinical_csv(table).rows] == [(10.0, 20.0, 5.0), None]
    table.write_text(f"path,region,roi_row,roi_col,roi_radius,{predicts}\na.png,10; 20; 5,10,20,5,0.9,malignant,0.5,default\n")
    with pytest.raises(MammofuseError, match="has both roi_row, roi_col, roi_radius and predict's region column"):
        read_clinical_csv(table)
    table.write_text("path,region,density\na.png,upper outer quadrant,2\n")
    clinical = read_clinical_csv(table)
    assert clinical.rows[0].region is None and clinical.ignored_columns == ["region"]


def _ambiguous(tmp_path: Path) -> Path:
    """Rows ``a.png`` and `` a.png`` without lesion circles: both name ``a.png``."""
    table = tmp_path / "ambiguous.csv"
    table.write_text("path,density\na.png,1\n a.png,2\n")
    return table


def test_roi_gives_the_circle_of_every_file_without_one_in_clinical_as_readme_and_help_say(real_dicoms: dict[str, Path], tmp_path: Path) -> None:
    """The README said --roi covered only the files without a --clinical row; a row without a circle gets it too."""
    from mammofuse.cli.common import Roi

    circled, uncircled, unlisted = real_dicoms["P_00173_lcc"], real_dicoms["P_00173_rcc"], real_dicoms["P_00173_lmlo"]
    table = _write_csv(tmp_path / "c.csv", [{"path": circled.name, "density": "2", "roi_row": "100", "roi_col": "200", "roi_radius": "30"},
                                            {"path": uncircled.name, "density": "2", "roi_row": "", "roi_col": "", "roi_radius": ""}])
    cases = cases_from_inputs([circled, uncircled, unlisted], False, {}, table, region=(1.0, 2.0, 3.0))
    assert [c.region for c in cases] == [(100.0, 200.0, 30.0), (1.0, 2.0, 3.0), (1.0, 2.0, 3.0)]
    assert "for every file without one in --clinical" in Roi.__metadata__[0].help
    readme = " ".join((Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8").split())
    assert "`--roi ROW,COL,RADIUS` gives one for every file without one in `--clinical` (no row, or a row without a circle;" in readme


def test_clinical_csv_errors_name_the_line(real_dicoms: dict[str, Path], tmp_path: Path) -> None:
    lcc = real_dicoms["P_00173_lcc"]
    bad = _write_csv(tmp_path / "bad.csv", [{"path": lcc.name, "mass margins": "CIRCUMSCRIBED"}, {"path": "x", "mass margins": "wobbly"}])
    with pytest.raises(MammofuseError, match=r"bad.csv:3: unknown mass margins 'wobbly' \(valid: .*spiculated\)"):
        cases_from_inputs([lcc], False, {}, bad)
    twice = _write_csv(tmp_path / "twice.csv", [{"path": "1-130", "density": "1"}, {"path": "1-130", "density": "2"}])
    with pytest.raises(MammofuseError, match="matches lines 2, 3"):
        cases_from_inputs([lcc], False, {}, twice)
    no_radius = _write_csv(tmp_path / "no_radius.csv", [{"path": lcc.name, "roi_row": "100", "roi_col": "200"}])
    with pytest.raises(MammofuseError, match=r"no_radius.csv: has no roi_radius column: a lesion circle needs"):
        cases_from_inputs([lcc], False, {}, no_radius)
    half = _write_csv(tmp_path / "half.csv", [{"path": "x", "roi_row": "", "roi_col": "", "roi_radius": ""},
                                              {"path": lcc.name, "roi_row": "100", "roi_col": "200", "roi_radius": ""}])
    with pytest.raises(MammofuseError, match=r"half.csv:3: roi_radius is empty: a lesion circle needs"):
        cases_from_inputs([lcc], False, {}, half)
    nokey = _write_csv(tmp_path / "nokey.csv", [{"density": "1"}])
    with pytest.raises(MammofuseError, match="needs a 'path'"):
        cases_from_inputs([lcc], False, {}, nokey)


def test_clinical_csv_refuses_a_region_that_is_not_finite(tiny_model: Path, real_dicoms: dict[str, Path], tmp_path: Path) -> None:
    lcc = real_dicoms["P_00173_lcc"]
    for row, col, radius, named in (("nan", "200", "30", "roi_row 'nan'"), ("100", "inf", "-Infinity", "roi_col 'inf' and roi_radius '-Infinity'")):
        table = _write_csv(tmp_path / "regions.csv", [{"path": "x", "roi_row": "1", "roi_col": "2", "roi_radius": "3"},
                                                      {"path": lcc.name, "roi_row": row, "roi_col": col, "roi_radius": radius}])
        with pytest.raises(MammofuseError, match=f"regions.csv:3: {named}: roi_row, roi_col and roi_radius must be finite"):
            cases_from_inputs([lcc], False, {}, table)
    code, out, err = predict(str(lcc), "--model", str(tiny_model), "--clinical", str(table), "-f", "jsonl")
    assert code == 2 and out == "" and "regions.csv:3: roi_col 'inf'" in err and len(err.strip().splitlines()) == 1, err


def test_cli_clinical_csv_usage_error_and_success(tiny_model: Path, real_dicoms: dict[str, Path], tmp_path: Path) -> None:
    lcc = real_dicoms["P_00173_lcc"]
    bad = _write_csv(tmp_path / "bad.csv", [{"path": lcc.name, "shape": "squiggly"}])
    code, _, err = predict(str(lcc), "--model", str(tiny_model), "--clinical", str(bad))
    assert code == 2 and "bad.csv:2: unknown mass shape 'squiggly'" in err
    good = _write_csv(tmp_path / "good.csv", [{"path": lcc.name, "shape": "lobulated", "density": "2"}])
    code, out, err = predict(str(lcc), "--model", str(tiny_model), "--clinical", str(good), "-f", "json")
    assert code == 0, err
    assert json.loads(out)[0]["clinical"]["shape"] == "lobulated"


def test_folders_skip_non_images_and_extensionless_non_dicoms(real_dicoms: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    shutil.copy(real_dicoms["P_00173_lcc"], tmp_path / "000001")  # TCIA-style name without a suffix
    (tmp_path / "README").write_text("not an image")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "sub").mkdir()
    shutil.copy(real_dicoms["P_00173_rcc"], tmp_path / "sub" / "b.dcm")
    assert [p.name for p in find_image_files([tmp_path])] == ["000001"]
    assert [p.name for p in find_image_files([tmp_path], recursive=True)] == ["000001", "b.dcm"]


def test_a_folder_tree_deeper_than_the_recursion_limit_is_listed(tmp_path: Path) -> None:
    """``Path.rglob`` recursed once a folder: a tree 1,100 folders deep was a RecursionError (exit 4)."""
    tree, leaf = tmp_path / "tree", tmp_path / "tree" / ("d/" * 1100)
    for depth in range(100, 1200, 100):  # os.makedirs recurses too: 100 folders a call
        os.makedirs(tree / ("d/" * depth), exist_ok=True)
    (leaf / "scan.png").write_bytes(b"")
    (tree / "loop").symlink_to(tree)  # a folder symlink is not followed
    (tmp_path / "kept").touch()  # where os.removedirs stops
    try:
        assert find_image_files([tree], recursive=True) == [leaf / "scan.png"]
    finally:
        (leaf / "scan.png").unlink()
        (tree / "loop").unlink()
        os.removedirs(leaf)  # shutil.rmtree, and so pytest's clean-up, recurses too


def test_a_sub_folder_that_cannot_be_listed_fails_on_its_own(tiny_model: Path, real_dicoms: dict[str, Path], tmp_path: Path,
                                                             refuse_listing: Callable[..., None]) -> None:
    """Was: skipped silently, its images lost: ``1 file: 1 scored, 0 failed``, exit 0."""
    import shutil

    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    shutil.copy(real_dicoms["P_00173_lcc"], tree / "a.dcm")
    refuse_listing(tree / "sub")
    code, out, err = predict(str(tree), "-r", "--model", str(tiny_model), "--density", "2", "-f", "jsonl")
    assert code == 1, err
    assert [json.loads(line)["error"] for line in out.splitlines()] == [None]
    assert f"failed: {tree / 'sub'}: cannot read the folder (Permission denied): its files are left out" in err
    unread: list[tuple[str, str]] = []
    assert find_image_files([tree], recursive=True, unread=unread) == [tree / "a.dcm"] and len(unread) == 1
    with pytest.raises(MammofuseError, match="sub: cannot read the folder .Permission denied."):
        find_image_files([tree], recursive=True)
    unread.clear()
    assert find_image_files([tree], recursive=True, unread=unread, skip_folders_with="explanation.json") == [tree / "a.dcm"]
    assert unread == [(str(tree / "sub"), "cannot read the folder (Permission denied): its files are left out")]


def test_a_tree_whose_only_folders_cannot_be_listed_names_them(tmp_path: Path, refuse_listing: Callable[..., None]) -> None:
    """Was: ``no mammogram files found in tree``, the folders not named; the tree itself: not said to be unreadable."""
    (tmp_path / "sub").mkdir()
    refuse_listing(tmp_path / "sub")
    with pytest.raises(MammofuseError, match="; 1 folder could not be read: .*sub$"):
        find_image_files([tmp_path], recursive=True, unread=[])
    refuse_listing(tmp_path)
    code, _, err = predict(str(tmp_path), "-r", "--density", "2")
    assert code == 2 and err.strip() == f"error: {tmp_path}: cannot read (Permission denied)"


def test_inspect_and_the_api_report_a_sub_folder_that_cannot_be_listed(tiny_model: Path, real_dicoms: dict[str, Path], tmp_path: Path,
                                                                       refuse_listing: Callable[..., None]) -> None:
    """Was: inspect exited 0 and ``mammofuse.predict`` returned without a word, the folder's images left out."""
    import shutil

    import mammofuse
    from mammofuse.errors import MammofuseWarning

    (tmp_path / "sub").mkdir()
    shutil.copy(real_dicoms["P_00173_lcc"], tmp_path / "a.dcm")
    refuse_listing(tmp_path / "sub")
    result = runner.invoke(app, ["inspect", str(tmp_path), "-r", "-f", "json"])
    assert result.exit_code == 1 and len(json.loads(result.stdout)) == 1
    assert f"failed: {tmp_path / 'sub'}: cannot read the folder (Permission denied)" in result.stderr
    with pytest.warns(MammofuseWarning, match="sub: cannot read the folder .Permission denied."):
        assert len(mammofuse.predict([tmp_path], str(tiny_model), recursive=True, density=2, shape="oval", margin="circumscribed")) == 1


def test_an_extensionless_file_that_cannot_be_opened_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Was: dropped silently (its DICOM marker unread); kept, it fails when read, as an unreadable ``.dcm`` does."""
    (tmp_path / "000001").write_bytes(b"")
    (tmp_path / "README").write_text("not an image")
    original = Path.open

    def refused(self: Path, *args: object, **kwargs: object) -> object:
        if self.name == "000001":
            raise PermissionError(13, "Permission denied", str(self))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", refused)
    assert find_image_files([tmp_path]) == [tmp_path / "000001"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any folder or file: the monkeypatched tests above stand in")
def test_folders_and_files_without_read_permission_are_reported(tiny_model: Path, real_dicoms: dict[str, Path], tmp_path: Path) -> None:
    """Was: a folder of mode 000 or 300 and an extensionless file of mode 000 left out without a word, exit 0."""
    import shutil

    tree = tmp_path / "tree"
    for name in ("closed", "blind"):
        (tree / name).mkdir(parents=True)
        shutil.copy(real_dicoms["P_00173_lcc"], tree / name / "a.dcm")
    shutil.copy(real_dicoms["P_00173_rcc"], tree / "000001")
    (tree / "closed").chmod(0o000)
    (tree / "blind").chmod(0o300)
    (tree / "000001").chmod(0o000)
    try:
        code, _, err = predict(str(tree), "-r", "--model", str(tiny_model), "--density", "2", "-f", "jsonl")
    finally:
        for name in ("closed", "blind"):
            (tree / name).chmod(0o700)
    assert code == 1, err
    for name in ("closed", "blind"):
        assert f"failed: {tree / name}: cannot read the folder (Permission denied)" in err
    assert f"failed: {tree / '000001'}: " in err  # as any file that cannot be opened


def test_a_file_given_twice_is_scored_once_with_a_note(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "b.png").write_bytes(b"")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    notes: list[str] = []
    given = [Path("b.png"), tmp_path, Path("./a.png"), Path("sub/../b.png")]
    assert find_image_files(given, notes=notes) == [Path("b.png"), tmp_path / "a.png"]
    assert notes == ["3 of 5 paths name a file already given: each file is scored once"]
    assert find_image_files([tmp_path], notes=notes) == [tmp_path / "a.png", tmp_path / "b.png"] and len(notes) == 1


def test_models_lists_the_registered_names() -> None:
    result = runner.invoke(app, ["models", "--format", "json"])
    assert result.exit_code == 0
    names = [m["name"] for m in json.loads(result.stdout)]
    assert "default" in names


def test_bundled_default_model_scores_a_real_dicom(real_dicoms: dict[str, Path]) -> None:
    """The README's first command: the bundled model, a real DICOM, clinical flags, no network."""
    code, out, err = predict(str(real_dicoms["P_00173_lcc"]), "--density", "2", "--shape", "lobulated",
                             "--margin", "circumscribed", "-f", "json")
    assert code == 0, err
    record = json.loads(out)[0]
    assert record["model"] == "default" and record["error"] is None and np.isfinite(record["probability"])


CALCIFICATION_REMARK = "model default was trained on mass lesions only and never saw calcifications: this score is not meaningful for a calcification"


def test_calcification_findings_for_a_mass_model_get_a_note(tiny_model: Path, real_dicoms: dict[str, Path]) -> None:
    scan = str(real_dicoms["P_00173_lcc"])
    code, out, err = predict(scan, "--calc-type", "pleomorphic", "--density", "2", "-f", "json")  # the bundled default: masses only
    assert code == 0 and "note: model default was trained on mass lesions only and never saw calcifications" in err
    assert "not meaningful for the 1 of 1 files given calcification findings" in " ".join(err.split())
    assert CALCIFICATION_REMARK in json.loads(out)[0]["note"]
    assert CALCIFICATION_REMARK not in " ".join(err.split())  # the run's one note says it on stderr, not once per file
    code, _, err = predict(scan, "--margin", "spiculated", "--density", "2", "-f", "json")
    assert code == 0 and "calcifications" not in err
    code, _, err = predict(scan, "--model", str(tiny_model), "--calc-distribution", "clustered", "-f", "json")  # trained on unknown lesions
    assert code == 0 and "calcifications" not in err


def test_a_calcification_scored_by_a_mass_model_says_so_in_its_csv_record(real_dicoms: dict[str, Path], tmp_path: Path) -> None:
    """`--calc-type vascular` alone scored 0.672 'malignant' with an empty note: only stderr said the score meant nothing."""
    calc, mass = real_dicoms["P_00173_lcc"], real_dicoms["P_00173_lmlo"]
    findings = tmp_path / "findings.csv"
    findings.write_text(f"path,calc_type,shape,margin\n{calc},vascular,,\n{mass},,oval,circumscribed\n", encoding="utf-8")
    code, out, err = predict(str(calc), str(mass), "--clinical", str(findings), "--format", "csv")
    assert code == 0, err
    rows = {Path(r["path"]).name: r for r in csv.DictReader(out.splitlines())}
    assert rows[calc.name]["probability"] and rows[calc.name]["note"].endswith(CALCIFICATION_REMARK)
    assert "calcification" not in rows[mass.name]["note"]
    assert "not meaningful for the 1 of 2 files given calcification findings" in " ".join(err.split())


def test_the_breast_density_alone_gets_a_note_that_it_describes_no_lesion(real_dicoms: dict[str, Path]) -> None:
    from mammofuse.cases import DENSITY_ONLY

    scan = str(real_dicoms["P_00173_lcc"])
    code, out, err = predict(scan, "--density", "2", "-f", "json")  # the bundled default, no region: density is all it scores
    assert code == 0 and "1 of 1 files give the model only the breast density" in " ".join(err.split())
    assert DENSITY_ONLY in json.loads(out)[0]["note"]
    for more in (["--margin", "spiculated"], ["--roi", "2400,1145,100"]):  # a finding of the lesion, or its image
        code, out, err = predict(scan, "--density", "2", *more, "-f", "json")
        assert code == 0 and "only the breast density" not in err and DENSITY_ONLY not in (json.loads(out)[0]["note"] or ""), more


def test_an_image_scored_without_a_finding_of_the_lesion_gets_a_note(real_dicoms: dict[str, Path]) -> None:
    """`--roi` alone scored 0.618 'malignant' with a null note: the reverse, findings without a region, is always remarked."""
    from mammofuse.cases import NO_LESION_FINDING

    scan = str(real_dicoms["P_00173_lcc"])
    for density in ([], ["--density", "2"]):  # the bundled default, a fusion model: the image, and the breast density at most
        code, out, err = predict(scan, "--roi", "2400,1145,100", *density, "-f", "json")
        err = " ".join(err.split())
        assert code == 0 and "1 of 1 files give no finding of the lesion" in err, density
        assert json.loads(out)[0]["note"] == NO_LESION_FINDING and NO_LESION_FINDING not in err  # the run's note says it once
    code, out, err = predict(scan, "--roi", "2400,1145,100", "--density", "2", "--shape", "lobulated", "-f", "json")
    assert code == 0 and "finding of the lesion" not in err and json.loads(out)[0]["note"] is None


def test_a_lesion_circle_on_background_gets_a_note(real_dicoms: dict[str, Path]) -> None:
    scan = str(real_dicoms["P_00173_lcc"])  # its mass lies at row 2400, column 1145
    code, out, err = predict(scan, "--density", "2", "--shape", "lobulated", "--roi", "2400,1145,100", "-f", "json")
    assert code == 0 and json.loads(out)[0]["note"] is None and "background" not in err
    code, out, err = predict(scan, "--density", "2", "--roi", "1145,2400,100", "-f", "json")  # row and column swapped
    assert code == 0 and json.loads(out)[0]["note"].startswith("the lesion circle lies mostly on background")
    assert "1-130.dcm: the lesion circle lies mostly on background" in " ".join(err.split())


def test_files_of_no_known_breast_get_a_note_when_aggregating(tiny_model: Path, real_dicoms: dict[str, Path], tmp_path: Path) -> None:
    from PIL import Image

    film = tmp_path / "film.png"  # a PNG has no header, and its name no patient or side
    Image.fromarray((np.random.default_rng(0).random((256, 200)) * 255).astype(np.uint8)).save(film)
    scan = str(real_dicoms["P_00173_lcc"])
    code, out, err = predict(scan, str(film), "--model", str(tiny_model), "--aggregate", "breast", "-f", "json")
    assert code == 0 and [r["breast"] for r in json.loads(out)] == ["P_00173/L", None]
    assert "1 of 2 files have no known breast" in " ".join(err.split())
    code, _, err = predict(scan, "--model", str(tiny_model), "--aggregate", "breast", "-f", "json")
    assert code == 0 and "known breast" not in err
    short = tmp_path / "00173_LEFT_MLO.png"  # the shared 800 px images are named by the short image key
    film.rename(short)
    code, out, _ = predict(scan, str(short), "--model", str(tiny_model), "--aggregate", "breast", "-f", "json")
    assert code == 0 and [r["breast"] for r in json.loads(out)] == ["P_00173/L", "P_00173/L"]


def test_a_breast_mean_of_a_view_with_its_image_and_one_on_findings_alone_gets_a_note(real_dicoms: dict[str, Path], tmp_path: Path) -> None:
    """A circle for the CC only: the breast's mean averaged a recalibrated fusion score and a raw findings score unremarked."""
    cc, mlo = real_dicoms["P_00173_lcc"], real_dicoms["P_00173_lmlo"]
    findings = tmp_path / "findings.csv"
    findings.write_text(f"path,roi_row,roi_col,roi_radius\n{cc},2400,1145,100\n{mlo},,,\n", encoding="utf-8")
    code, out, err = predict(str(cc), str(mlo), "--clinical", str(findings), "--shape", "lobulated", "--aggregate", "breast", "-f", "json")
    assert code == 0 and [r["breast_views"] for r in json.loads(out)] == [2, 2], err
    assert ("1 of 1 breasts average views scored with their image and views scored on their findings alone (no lesion region), "
            "scores on two scales: P_00173/L") in " ".join(err.split())


def test_unavailable_device_and_bad_format_are_usage_errors(tiny_model: Path, real_dicoms: dict[str, Path]) -> None:
    import torch

    path = str(real_dicoms["P_00173_lcc"])
    if not torch.cuda.is_available():
        code, _, err = predict(path, "--model", str(tiny_model), "--device", "cuda")
        assert code == 2 and "CUDA is not available" in err
    code, _, err = predict(path, "--model", str(tiny_model), "--format", "xml")
    assert code == 2 and "xml" in err and "table" in err and "jsonl" in err and "Traceback" not in err


def test_score_folder_example_passes_on_the_exit_codes_and_names_them(tiny_model: Path, real_dicoms: dict[str, Path], tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "examples" / "score_folder.sh"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}

    def score(*args: object) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(script), *map(str, args)], capture_output=True, text=True, env=env, timeout=120)

    studies = tmp_path / "studies"
    studies.mkdir()
    (studies / "good.dcm").symlink_to(real_dicoms["P_00173_lcc"])
    (studies / "broken.dcm").write_bytes(b"not a DICOM")
    usage = score()
    assert usage.returncode == 2 and usage.stderr.startswith("usage: score_folder.sh")
    unwritable = score(studies, tmp_path, tiny_model)  # OUT.csv is a folder
    assert unwritable.returncode == 3 and f"cannot write {tmp_path}; see the message above" in unwritable.stderr
    some = score(studies, tmp_path / "scores.csv", tiny_model)
    assert some.returncode == 1 and "some files failed" in some.stderr
    rows = {Path(r["path"]).name: r for r in csv.DictReader((tmp_path / "scores.csv").open())}
    assert rows["good.dcm"]["error"] == "" and rows["broken.dcm"]["error"]


def test_findings_written_as_na_are_not_given_in_the_notes() -> None:
    """A CSV's "NA" is a finding not given: it made a calcification remark, and hid the density-only one."""
    from mammofuse import MammoFuse
    from mammofuse.cases import model_notes
    from mammofuse.data.sample import Sample

    model = MammoFuse.from_pretrained("default")
    na = Sample(id="a", patient_id="", label=-1, clinical={"density": "2", "calc_type": "NA", "margin": "N/A"}, image_path="a.dcm")
    notes = " ".join(model_notes(model, [na], True))
    assert "calcification" not in notes and "only the breast density" in notes


def test_default_workers_follow_the_cpus_this_process_may_use(tiny_model: Path, real_dicoms: dict[str, Path], monkeypatch) -> None:
    """Under taskset, Slurm or a container's cpuset the machine's CPU count is not ours: 4 readers on 2 allowed CPUs."""
    import mammofuse.scoring

    engines: list[int] = []

    class Recorded(mammofuse.scoring.LocalEngine):
        def __init__(self, batch_size: int, workers: int) -> None:
            engines.append(workers)
            super().__init__(batch_size=batch_size, workers=0)  # read here: no processes for a test

    monkeypatch.setattr(mammofuse.scoring, "LocalEngine", Recorded)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    code, _, err = predict(*map(str, real_dicoms.values()), "--model", str(tiny_model), "--batch-size", "1", "-f", "json")
    assert code == 0, err
    assert engines == [2]
    monkeypatch.delattr(os, "sched_getaffinity")  # macOS, Windows: the machine's count
    code, _, err = predict(*map(str, real_dicoms.values()), "--model", str(tiny_model), "--batch-size", "1", "-f", "json")
    assert code == 0 and engines == [2, 4], err

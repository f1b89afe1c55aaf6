"""The command line: fast start-up, version, inspect, schema, data summary, one-line errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from mammofuse import __version__
from mammofuse.cli import app

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


def test_help_lists_every_command():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("train", "evaluate", "predict", "explain", "ablate", "inspect", "schema", "data"):
        assert command in result.output
    assert "Research use only" in result.output


def test_start_up_path_does_not_import_torch():
    heavy = ('torch', 'torchvision', 'numpy', 'shap', 'lime', 'sklearn', 'pydicom', 'importlib.metadata')  # metadata: __version__
    code = f"import sys, mammofuse.cli; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "unbuffered"])
@pytest.mark.parametrize("args", [["--help"], ["--version"], [], ["schema", "--help"], ["schema"], ["schema", "-f", "json"]])
def test_help_and_version_on_a_full_disk_are_one_line_and_exit_3_as_a_commands_output(args, buffered):
    """Was: Typer's --help and --version, run before any command, ended in an OSError traceback and exit 1; then, with
    stdout buffered (no PYTHONUNBUFFERED), in "Exception ignored" and exit 120, Python's flush at exit failing again.
    A table for people (``schema``, printed through Rich) said only "No space left on device", naming no stream."""
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"} | ({} if buffered else {"PYTHONUNBUFFERED": "1"})
    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, "-m", "mammofuse", *args], stdout=full, stderr=subprocess.PIPE, text=True, env=env, timeout=120)
    assert (result.returncode, result.stderr) == (3, "error: stdout: cannot write (No space left on device)\n")


def test_inspect_json_on_the_real_dicoms(real_dicoms):
    result = runner.invoke(app, ["inspect", *map(str, real_dicoms.values()), "--format", "json"])
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)
    assert len(records) == 8
    for r in records:
        assert {"path", "rows", "columns", "bits_stored", "photometric", "modality", "laterality", "view", "patient_id"} <= set(r)
        assert r["laterality"] in {"L", "R"} and r["view"] in {"CC", "MLO"} and r["rows"] > 4000
        assert r["patient_id"].endswith(f"{'LEFT' if r['laterality'] == 'L' else 'RIGHT'}_{r['view']}")


def test_inspect_reports_a_bad_file_and_goes_on(real_dicoms, tmp_path):
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"DICM? no")
    good = str(real_dicoms["P_00173_lcc"])
    result = runner.invoke(app, ["inspect", good, str(bad), "--format", "json"])
    assert result.exit_code == 1
    records = json.loads(result.stdout)
    assert records[0]["error"] is None and records[1]["error"] and records[1]["path"] == str(bad)
    assert "Traceback" not in result.output


def test_inspect_missing_path_is_a_usage_error(tmp_path):
    result = runner.invoke(app, ["inspect", str(tmp_path / "nope.dcm")])
    assert result.exit_code == 2 and "no such file" in result.output


def test_schema_json():
    spec = json.loads(runner.invoke(app, ["schema", "--format", "json"]).stdout)
    assert spec["dim"] == 36 and [f["name"] for f in spec["fields"]][0] == "density"


def test_schema_footer_example_is_a_valid_compound_value():
    import re

    from mammofuse.cli.common import clinical_flags

    footer = " ".join(runner.invoke(app, ["schema"], env={"COLUMNS": "200"}).stdout.split())
    flag, value = re.search(r"Compound values join terms with '-' \((--[a-z-]+) ([a-z_-]+)\)", footer).groups()
    assert "-" in value and clinical_flags(**{"density": None, "shape": None, "margin": None, "calc_type": None,
                                              "calc_distribution": None, flag[2:].replace("-", "_"): value})


def test_data_summary_without_images_says_they_were_not_given(cbis_csv):
    args = ["data", "summary", "--dataset", "cbis-ddsm", "--data", str(cbis_csv), "--abnormality", "mass"]
    table = " ".join(runner.invoke(app, args, env={"COLUMNS": "200"}).stdout.split())
    assert "images: not given" in table and "not found" not in table
    none = {"left_out": 0, "mixed_pathology": 0, "box_count": 0, "ambiguous": 0}
    rows = {"train": {"rows": 1318, **none}, "test": {"rows": 10, **none}}
    assert json.loads(runner.invoke(app, [*args, "--format", "json"]).stdout)["matching"] == {"images": None, "lesions": None, "rows": rows}


def test_data_summary_json(mini_mias):
    result = runner.invoke(app, ["data", "summary", "--dataset", "mini-mias", "--data", str(mini_mias), "--format", "json"])
    summary = json.loads(result.stdout)
    assert summary["splits"]["all"]["lesions"] == 123 and summary["splits"]["all"]["malignant"] == 54


def test_data_summary_bad_folder_is_one_line(tmp_path):
    result = runner.invoke(app, ["data", "summary", "--dataset", "cbis-ddsm", "--data", str(tmp_path)])
    assert result.exit_code == 2 and "no CBIS-DDSM" in result.output and "Traceback" not in result.output


def test_data_summary_of_a_short_manifest_row_is_one_line(tmp_path):
    """A missing patient_id cell was an internal error (KeyError, exit 4)."""
    (tmp_path / "m.csv").write_text("path,label,patient_id\na.png,1\n")
    result = runner.invoke(app, ["data", "summary", "--dataset", "manifest", "--data", str(tmp_path / "m.csv")])
    assert result.exit_code == 2 and "m.csv:2: no patient_id cell" in result.stderr
    assert "internal error" not in result.output and len(result.stderr.strip().splitlines()) == 1


def test_data_summary_shows_split_names_and_the_path_as_text(tmp_path):
    """A split or folder named like Rich markup was an internal error (MarkupError, exit 4)."""
    folder = tmp_path / "[" / "y]"
    folder.mkdir(parents=True)
    (folder / "m.csv").write_text("path,label,patient_id,split\na.png,1,p1,[/x]\nb.png,0,p2,[bold]b\n")
    result = runner.invoke(app, ["data", "summary", "--dataset", "manifest", "--data", str(folder / "m.csv")], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    shown = "".join(result.stdout.split())
    assert "[/x]" in shown and "[bold]b" in shown and "[/y]/m.csv)" in shown


def test_report_commands_write_to_output_and_name_their_formats(tmp_path):
    for command in (["schema"], ["models"]):
        shown = runner.invoke(app, [*command, "--format", "json"]).stdout
        assert runner.invoke(app, [*command, "--format", "json", "--output", str(tmp_path / "r.json")]).exit_code == 0
        assert json.loads((tmp_path / "r.json").read_text()) == json.loads(shown)
        assert runner.invoke(app, [*command, "-o", str(tmp_path / "r.txt")]).exit_code == 0
        assert ("cbis-ddsm-v1" if command == ["schema"] else "Research use only") in (tmp_path / "r.txt").read_text()
        assert "table|json" in runner.invoke(app, [*command, "--help"], terminal_width=200).stdout
    assert runner.invoke(app, ["schema", "--output", str(tmp_path)]).exit_code == 3  # a folder: not writable as a file


def test_report_commands_take_their_format_from_the_output_suffix(tmp_path, mini_mias):
    result = runner.invoke(app, ["schema", "-o", str(tmp_path / "s.json")])
    assert result.exit_code == 0 and json.loads((tmp_path / "s.json").read_text())["dim"] == 36
    for command in (["models", "-f", "json", "-o", str(tmp_path / "m.csv")], ["models", "-o", str(tmp_path / "m.jsonl")],
                    ["schema", "-f", "table", "-o", str(tmp_path / "s.json")],
                    ["data", "summary", "--dataset", "mini-mias", "--data", str(mini_mias), "-o", str(tmp_path / "d.csv")]):
        result = runner.invoke(app, command)
        assert result.exit_code == 2 and "looks like" in result.stderr, command
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json"]


@pytest.mark.parametrize("command", ["predict", "explain", "inspect"])
def test_help_names_the_paths_argument_and_every_exit_status(command):
    from mammofuse.cli.common import INTERNAL_ERROR

    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "250"})
    assert result.exit_code == 0 and "{PATHS}..." in result.output and "{paths}" not in result.output
    assert f"{INTERNAL_ERROR} internal error (a bug: please report it)" in " ".join(result.output.split())
    assert f"`{INTERNAL_ERROR}` an internal error (a bug: please report it)" in (ROOT / "README.md").read_text()


@pytest.mark.parametrize(("command", "option"), [
    (["train", "--dataset", "mini-mias", "--data", "d", "--out", ""], "--out"),
    (["pretrain", "--dataset", "mini-mias", "--data", "d", "--out", ""], "--out"),
    (["ablate", "--dataset", "mini-mias", "--data", "d", "--out", ""], "--out"),
    (["explain", "scan.dcm", "--out", ""], "--out"),
    (["evaluate", "--dataset", "mini-mias", "--data", "d", "--output", ""], "--output"),
    (["evaluate", "--dataset", "mini-mias", "--data", "d", "--plots", ""], "--plots"),
    (["predict", "scan.dcm", "--output", ""], "--output"),
    (["inspect", "scan.dcm", "-o", ""], "--output"),
    (["schema", "--output="], "--output"),
])
def test_an_empty_output_path_is_a_usage_error(command, option, tmp_path, monkeypatch):
    """Path('') is '.': an empty --out, --output or --plots wrote into the current folder."""
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, command)
    shown = " ".join(result.output.replace("│", " ").split())
    assert result.exit_code == 2 and f"Invalid value for '{option}'" in shown, result.output
    assert "an empty path; name a file or folder (. for the current one)" in shown and not any(tmp_path.iterdir())


@pytest.mark.parametrize("exc", [typer.BadParameter("bad value"), typer.Abort(), typer.Exit(5)])
def test_typers_own_exceptions_pass_through_guarded(exc: Exception) -> None:
    """Typer 0.29 vendors Click: its usage errors must stay Typer's (exit 2, or the code asked for), not an internal error (4)."""
    from mammofuse.cli.common import guarded

    @guarded
    def command() -> None:
        raise exc

    with pytest.raises(type(exc)):
        command()


@pytest.mark.parametrize(("command", "option"), [
    (["predict", "", "--density", "2"], "PATHS"),
    (["predict", "scan.dcm", "", "--density", "2"], "PATHS"),
    (["inspect", ""], "PATHS"),
    (["explain", "", "--out", "out"], "PATHS"),
    (["predict", "scan.dcm", "--density", "2", "--clinical", ""], "--clinical"),
    (["evaluate", "--dataset", "manifest", "--data", ""], "--data"),
    (["evaluate", "--dataset", "cbis-ddsm", "--data", "d", "--images", ""], "--images"),
    (["data", "summary", "--dataset", "manifest", "--data", ""], "--data"),
    (["train", "--dataset", "manifest", "--data", "", "--out", "out"], "--data"),
    (["train", "--config", "", "--out", "out"], "--config"),
    (["pretrain", "--dataset", "manifest", "--data", "", "--out", "b.safetensors"], "--data"),
    (["ablate", "--dataset", "manifest", "--data", "", "--out", "out"], "--data"),
])
def test_an_empty_input_path_is_a_usage_error(command, option, tmp_path, monkeypatch):
    """Path('') is '.': predict "" (an unset shell variable) scored every image of the current folder."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "manifest.csv").write_text("path,label,patient_id\n")
    (tmp_path / "scan.dcm").write_bytes(b"")
    result = runner.invoke(app, command)
    shown = " ".join(result.output.replace("│", " ").split())
    assert result.exit_code == 2 and f"Invalid value for '{option}'" in shown, result.output
    assert "an empty path; name a file or folder (. for the current one)" in shown
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.csv", "scan.dcm"]


@pytest.mark.parametrize("flag", ["--pretrained", "--threshold-from"])
def test_an_empty_pretrained_or_threshold_from_is_refused_not_read_as_none(flag, tmp_path):
    """--pretrained "" trained from random weights, --threshold-from "" kept the validation threshold."""
    result = runner.invoke(app, ["train", "--dataset", "manifest", "--data", str(tmp_path / "m.csv"), "--out", str(tmp_path / "out"), flag, ""])
    name = flag.removeprefix("--").replace("-", "_")
    assert result.exit_code == 2 and f"{name} is empty (an unset shell variable?)" in result.stderr, result.output

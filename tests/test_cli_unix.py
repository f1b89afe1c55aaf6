"""The command line as a Unix citizen: a terminal on stderr, pipes that close early, file names that are not UTF-8,
caches that cannot be written, concurrent writers of one output."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import make_tiny_model
from dicom_factory import breast_phantom
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def mammofuse(*args: object) -> list[str]:
    """The command line of ``mammofuse ARGS`` run as a user runs it (a new process)."""
    return [sys.executable, "-m", "mammofuse", *map(str, args)]


def environment(**changes: str | None) -> dict[str, str]:
    """This process's environment for a child, with ``changes`` (None removes a variable)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny cnn4 model: these tests run `mammofuse` in new processes, and cnn4 spares each one the import of torchvision."""
    return make_tiny_model(tmp_path_factory.mktemp("tiny-unix") / "model", backbone="cnn4")


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three small PNG mammogram phantoms in a folder."""
    folder = tmp_path_factory.mktemp("studies")
    image = Image.fromarray(breast_phantom(bits=8).astype(np.uint8))
    for name in ("a.png", "b.png", "c.png"):
        image.save(folder / name)
    return folder


def test_records_go_to_redirected_stdout_while_a_progress_bar_is_drawn_on_a_terminal(tiny: Path, studies: Path, tmp_path: Path) -> None:
    """They went to the terminal, through the bar's redirection of stdout, and the file stayed empty."""
    import pty

    master, terminal = pty.openpty()
    drained: list[bytes] = []

    def drain() -> None:  # a terminal that nobody reads blocks its writer
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                return
            if not chunk:
                return
            drained.append(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    out = tmp_path / "scores.csv"
    with out.open("w") as stdout:
        done = subprocess.run(mammofuse("predict", studies, "--model", tiny, "-f", "csv", "--batch-size", "1"), stdout=stdout, stderr=terminal,
                              env=environment(TERM="xterm", COLUMNS="100"), timeout=180)
    os.close(terminal)
    reader.join(timeout=10)
    os.close(master)
    shown = b"".join(drained).decode(errors="replace")
    assert done.returncode == 0, shown
    assert "scoring" in shown  # the bar was drawn
    rows = list(csv.DictReader(out.read_text().splitlines()))
    assert sorted(Path(r["path"]).name for r in rows) == ["a.png", "b.png", "c.png"]
    assert "a.png" not in shown


@pytest.fixture(scope="module")
def latin_name(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A phantom whose file name is not UTF-8 (``caf\\xe9.png``, Latin-1), beside one that is."""
    folder = tmp_path_factory.mktemp("latin")
    image = Image.fromarray(breast_phantom(bits=8).astype(np.uint8))
    name = folder / os.fsdecode(b"caf\xe9.png")
    try:
        image.save(name)
    except (OSError, UnicodeEncodeError):
        pytest.skip("this file system refuses names that are not UTF-8")
    image.save(folder / "ok.png")
    return name


def test_a_file_name_that_is_not_utf8_survives_stdout_records_and_tables(tiny: Path, latin_name: Path, tmp_path: Path) -> None:
    """Each exited 4, "internal error (UnicodeEncodeError)", under a UTF-8 locale's strict stdout."""
    env = environment(PYTHONIOENCODING="utf-8", LC_ALL="C.UTF-8")
    records = subprocess.run(mammofuse("predict", latin_name.parent, "--model", tiny, "-f", "csv"), capture_output=True, env=env, timeout=180)
    assert records.returncode == 0, records.stderr
    assert os.fsencode(latin_name) in records.stdout.splitlines()[1]  # the bytes of the name, as they are: the file can be found again
    table = tmp_path / "scores.txt"
    shown = subprocess.run(mammofuse("predict", latin_name.parent, "--model", tiny, "-o", table), capture_output=True, env=env, timeout=180)
    assert shown.returncode == 0, shown.stderr
    assert "caf\\xe9.png" in table.read_text(encoding="utf-8")  # for people: the byte shown, the file valid UTF-8


def test_a_file_name_that_is_not_utf8_survives_inspect_output_and_explain(latin_name: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from mammofuse.cli import app

    runner = CliRunner()
    listed = tmp_path / "files.csv"
    result = runner.invoke(app, ["inspect", str(latin_name.parent), "-o", str(listed)])
    assert result.exit_code == 0, result.output
    assert os.fsencode(latin_name) in listed.read_bytes()
    roi_model = make_tiny_model(tmp_path / "roi-model", "concat", "roi")
    result = runner.invoke(app, ["explain", str(latin_name), "--model", str(roi_model), "--methods", "shap", "--density", "2", "--out", str(tmp_path / "out")],
                           env={"OMP_NUM_THREADS": "1", "COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    (folder,) = (tmp_path / "out").iterdir()
    assert folder.name.isascii() and "caf\\xe9.png" in (folder / "report.html").read_text(encoding="utf-8")
    assert "caf\\xe9.png" in result.stdout



@pytest.fixture(scope="module")
def names(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Phantoms named in UTF-8 (``caf\\xc3\\xa9.png``), with a byte that is not UTF-8 (``x\\xff.png``), and in ASCII."""
    folder = tmp_path_factory.mktemp("names")
    image = Image.fromarray(breast_phantom(bits=8).astype(np.uint8))
    for name in (b"caf\xc3\xa9.png", b"x\xff.png", b"ok.png"):
        with open(os.path.join(os.fsencode(folder), name), "wb") as fh:
            image.save(fh, format="PNG")
    return folder


@pytest.fixture(scope="module")
def latin1(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of a Latin-1 locale (built with localedef when the system has none)."""
    folder = tmp_path_factory.mktemp("locales")
    made = subprocess.run(["localedef", "-i", "en_US", "-f", "ISO-8859-1", str(folder / "en_US.ISO-8859-1")], capture_output=True)
    if made.returncode not in (0, 1):  # 1: made, with warnings
        pytest.skip(f"no Latin-1 locale can be made here: {made.stderr.decode(errors='replace')}")
    return {"LOCPATH": str(folder), "LC_ALL": "en_US.ISO-8859-1", "LANG": None}


@pytest.mark.parametrize("other", ["ascii", "latin1"])
def test_records_carry_a_names_bytes_and_resume_finds_its_file_under_any_locale(other: str, tiny: Path, names: Path, tmp_path: Path,
                                                                                request: pytest.FixtureRequest) -> None:
    """Under a Latin-1 locale --output wrote caf\\xc3\\xa9 as c3 83 c2 a9 and \\xff as c3 bf; under it or ASCII, JSON held
    the name decoded by the locale, and --resume scored again, and recorded twice, the files written under UTF-8."""
    utf8 = environment(LC_ALL="C.UTF-8")
    changes = {"LC_ALL": "C", "PYTHONUTF8": "0"} if other == "ascii" else request.getfixturevalue("latin1")
    env = environment(**changes)
    probe = subprocess.run([sys.executable, "-c", "import sys; print(sys.getfilesystemencoding())"], capture_output=True, text=True, env=env)
    assert probe.stdout.strip() in ("ascii", "iso8859-1"), probe  # the locale took effect

    def predict(*args: object, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
        done = subprocess.run(mammofuse("predict", names, "--model", tiny, *args), capture_output=True, env=env, timeout=180)
        assert done.returncode == 0, done.stderr
        return done

    out = tmp_path / "scores.csv"
    predict("-o", out, env=utf8)
    resumed = predict("-o", out, "--resume", env=env)
    assert b"3 files, 3 of them in" in resumed.stderr
    wanted = sorted(os.fsencode(names) + b"/" + n for n in (b"caf\xc3\xa9.png", b"ok.png", b"x\xff.png"))
    assert sorted(line.split(b",")[0] for line in out.read_bytes().splitlines()[1:]) == wanted
    predict("-o", tmp_path / "again.csv", env=env)
    lines = sorted(out.read_bytes().splitlines())
    assert sorted((tmp_path / "again.csv").read_bytes().splitlines()) == lines == sorted(predict("-f", "csv", env=env).stdout.splitlines())
    listed = subprocess.run(mammofuse("inspect", names, "-f", "csv"), capture_output=True, env=env, timeout=180)
    assert sorted(line.split(b",")[0] for line in listed.stdout.splitlines()[1:]) == wanted, listed.stderr
    predict("-o", tmp_path / "scores.json", env=env)
    assert sorted(r["path"] for r in json.loads((tmp_path / "scores.json").read_text())) == [p.decode("utf-8", "surrogateescape") for p in wanted]

@pytest.fixture
def home_under_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HOME under a regular file (no cache can be made there), with no MAMMOFUSE_CACHE or XDG_CACHE_HOME."""
    (tmp_path / "afile").write_text("")
    monkeypatch.setenv("HOME", str(tmp_path / "afile" / "home"))
    monkeypatch.delenv("MAMMOFUSE_CACHE")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    return tmp_path / "afile" / "home" / ".cache" / "mammofuse"


def test_an_unwritable_cache_builds_the_cbis_ddsm_index_in_memory_after_one_note(home_under_a_file: Path, cbis_subset: Path, dicom_root: Path) -> None:
    """It exited 3: "error: .../.cache/mammofuse/index: Not a directory"."""
    from typer.testing import CliRunner

    from mammofuse.cli import app

    result = CliRunner().invoke(app, ["data", "summary", "--dataset", "cbis-ddsm", "--data", str(cbis_subset), "--images", str(dicom_root), "-f", "json"],
                                env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["splits"]["test"]["images"] == 8
    notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and str(home_under_a_file / "index") in notes[0] and "MAMMOFUSE_CACHE" in notes[0], result.stderr


def test_an_unwritable_cache_keeps_frozen_features_in_memory(home_under_a_file: Path) -> None:
    from mammofuse.errors import MammofuseWarning
    from mammofuse.model import ModelConfig
    from mammofuse.training.build import feature_cache
    from mammofuse.training.settings import TrainSettings

    with pytest.warns(MammofuseWarning, match="MAMMOFUSE_CACHE"):
        cache = feature_cache(TrainSettings(feature_cache="disk", augment=False), ModelConfig())
    assert cache is not None and cache.mode == "memory"


@pytest.mark.parametrize("xdg", ["", "relative/cache"])
def test_an_empty_or_relative_xdg_cache_home_is_ignored(xdg: str, cbis_subset: Path, dicom_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cache went to the working folder (./mammofuse, ./relative/cache/mammofuse)."""
    from mammofuse.data import load_dataset

    monkeypatch.delenv("MAMMOFUSE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", xdg)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    load_dataset("cbis-ddsm", cbis_subset, dicom_root)
    assert list((tmp_path / "home" / ".cache" / "mammofuse" / "index").glob("cbis-*.json"))
    assert not list((tmp_path / "work").iterdir())


@pytest.mark.parametrize("args", [["models", "-f", "json"], ["models"], ["predict", "{studies}", "--model", "{tiny}", "-f", "csv"], ["predict", "--help"], ["--version"]],
                         ids=["json", "table", "streamed-records", "help", "version"])
def test_a_closed_stdout_ends_the_command_silently_with_141(args: list[str], tiny: Path, studies: Path) -> None:
    """``| head -1`` or ``| true``: it said "error: Broken pipe" and exited 3 (records, JSON), or exited 1 (tables, help)."""
    command = mammofuse(*(a.format(studies=studies, tiny=tiny) for a in args))
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment())
    process.stdout.close()  # the reader is gone before the first write
    _, stderr = process.communicate(timeout=180)
    assert process.returncode == 141, stderr.decode()
    assert b"error" not in stderr and b"Exception" not in stderr, stderr.decode()


@pytest.mark.parametrize("args", [["inspect", "{studies}", "-f", "json"], ["predict", "{studies}", "--model", "{tiny}", "-f", "csv"],
                                  ["predict", "{studies}", "--model", "{tiny}", "-f", "json"], ["schema", "-f", "json"]],
                         ids=["inspect", "predict-streamed", "predict-json", "schema"])
def test_output_dash_is_stdout(args: list[str], tiny: Path, studies: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``-o -`` wrote a file named ``-`` in the working folder, and nothing to stdout."""
    from typer.testing import CliRunner

    from mammofuse.cli import app

    monkeypatch.chdir(tmp_path)
    command = [a.format(studies=studies, tiny=tiny) for a in args]
    result = CliRunner().invoke(app, [*command, "-o", "-"], env={"OMP_NUM_THREADS": "1"})
    assert result.exit_code == 0, result.output
    assert result.stdout and result.stdout == CliRunner().invoke(app, command, env={"OMP_NUM_THREADS": "1"}).stdout
    assert not list(tmp_path.iterdir())


def test_output_dash_is_refused_for_a_folder(studies: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from mammofuse.cli import app

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["explain", str(studies), "-o", "-"])
    assert result.exit_code == 2 and "- is stdout" in result.output
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("args", [["inspect", "{studies}", "-f", "json"], ["predict", "{studies}", "--model", "{tiny}", "-f", "csv"]],
                         ids=["written-at-the-end", "streamed"])
def test_status_lines_are_one_line_however_long(args: list[str], tiny: Path, studies: Path, tmp_path: Path) -> None:
    """"wrote PATH" was cut into 80-column pieces in a log: a grep for the path found nothing."""
    output = tmp_path / ("deep_folder_name_" * 8) / "scores.out"
    output.parent.mkdir()
    done = subprocess.run(mammofuse(*(a.format(studies=studies, tiny=tiny) for a in args), "-o", output), capture_output=True, text=True,
                          env=environment(COLUMNS="80"), timeout=180)
    assert done.returncode == 0, done.stderr
    assert f"wrote {output}" in done.stderr.splitlines()


def _command_paths() -> list[list[str]]:
    """Every command of ``mammofuse`` as its words (``["data", "summary"]``), the group itself first."""
    import typer

    from mammofuse.cli import app

    def walk(command: object, path: list[str]) -> list[list[str]]:
        found = [path]
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            found += walk(sub, [*path, name])
        return found

    return walk(typer.main.get_command(app), [])


@pytest.mark.parametrize("words", _command_paths(), ids=lambda words: " ".join(words) or "mammofuse")
def test_help_at_80_columns_wraps_and_cuts_nothing(words: list[str]) -> None:
    """explain's --include-identifiers read "--include-identifie…", ablate's --modality-dropout "--modality-drop…"."""
    from typer.testing import CliRunner

    from mammofuse.cli import app

    result = CliRunner().invoke(app, [*words, "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert max(map(len, result.stdout.splitlines())) <= 80
    assert "…" not in result.stdout, [line for line in result.stdout.splitlines() if "…" in line]


@pytest.mark.parametrize(("args", "message"), [
    (["predict", "scan.dcm", "--bogus"], "error: No such option: --bogus (see mammofuse predict --help)"),
    (["predict", "scan.dcm", "--batch-size", "0"], "error: Invalid value for '--batch-size'"),
    (["predict"], "error: Missing argument 'PATHS' (see mammofuse predict --help)"),
    (["prdict"], "error: No such command 'prdict'"),
    (["data", "summary", "--dataset", "manifest", "--data", "m.csv", "--format", "xml"], "error: Invalid value for '--format' / '-f'"),
], ids=["unknown-option", "out-of-range", "missing-argument", "unknown-command", "sub-command"])
def test_a_usage_error_that_typer_finds_is_one_line(args: list[str], message: str) -> None:
    """They printed a Usage line, a hint and a boxed panel, while the README promises one line."""
    from typer.testing import CliRunner

    from mammofuse.cli import app

    result = CliRunner().invoke(app, args, env={"COLUMNS": "80"})
    assert result.exit_code == 2
    assert result.stderr.startswith(message) and len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("resume", [False, True], ids=["new", "resumed"])
def test_a_streamed_output_in_use_by_another_process_is_refused_and_left_as_it_is(resume: bool, tiny: Path, studies: Path, tmp_path: Path) -> None:
    """Two runs given one -o (two --shard jobs, say) both exited 0, the file holding records mixed, lost or twice."""
    from mammofuse.atomic import output_lock

    output = tmp_path / "scores.jsonl"
    command = mammofuse("predict", studies, "--model", tiny, "-o", output, *(["--resume"] if resume else []))
    first = subprocess.run(command, capture_output=True, text=True, env=environment(), timeout=180)
    assert first.returncode == 0, first.stderr
    written = output.read_bytes()
    with output_lock(output):  # as another mammofuse process holds it while it writes
        second = subprocess.run(command, capture_output=True, text=True, env=environment(), timeout=180)
    assert second.returncode == 3 and second.stderr.splitlines()[-1] == f"error: {output}: cannot write (in use by another mammofuse process)"
    assert output.read_bytes() == written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.jsonl"]  # the lock is gone with its holder


def test_text_an_encoding_cannot_show_falls_back_and_a_file_name_keeps_its_bytes() -> None:
    """'…', '±' and dashes on a Latin-1 or ASCII stdout were an "internal error (UnicodeEncodeError)", exit 4."""
    from mammofuse.cli.streams import FALLBACK

    text = "AUC ± SD — 0.8… → café \udce9"
    assert text.encode("ascii", FALLBACK) == b"AUC +/- SD - 0.8... -> caf\\xe9 \xe9"
    assert text.encode("latin-1", FALLBACK) == b"AUC \xb1 SD - 0.8... -> caf\xe9 \xe9"
    assert text.encode("utf-8", FALLBACK) == text[:-1].encode() + b"\xe9"


@pytest.fixture(scope="module")
def utf8_name(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A phantom whose file name is UTF-8, neither ASCII nor Latin-1 (``café — copy.png``)."""
    name = tmp_path_factory.mktemp("utf8") / "café — copy.png"
    Image.fromarray(breast_phantom(bits=8).astype(np.uint8)).save(name)
    return name


@pytest.mark.parametrize(("args", "env"), [
    (["inspect", "{name}"], {"PYTHONIOENCODING": "ascii"}),
    (["inspect", "{name}"], {"PYTHONIOENCODING": "latin-1"}),
    (["train", "--help"], {"LC_ALL": "C", "PYTHONUTF8": "0", "COLUMNS": "30"}),
    (["predict", "{name}", "--model", "{tiny}", "-f", "csv"], {"PYTHONIOENCODING": "ascii"}),
], ids=["ascii", "latin-1", "help", "records"])
def test_a_stdout_that_is_not_utf8_shows_what_it_can(args: list[str], env: dict[str, str], tiny: Path, utf8_name: Path) -> None:
    """Each exited 4 (a traceback for help) once Rich cut a cell with '…', or a file name held 'é' or '—'."""
    command = mammofuse(*(a.format(name=utf8_name, tiny=tiny) for a in args))
    done = subprocess.run(command, capture_output=True, env=environment(**env), timeout=180)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert done.stdout.strip() and b"error" not in done.stderr, done.stderr.decode(errors="replace")
    if args[0] == "predict":
        assert utf8_name.name.encode() + b"," in done.stdout.splitlines()[1]  # records are UTF-8 on any stdout


@pytest.mark.parametrize("columns", ["0", "5"])
def test_a_console_width_of_zero_or_a_few_columns_counts_as_unknown(columns: str) -> None:
    """COLUMNS=0 printed nothing through Rich: no error (an exit 2 with an empty stderr), no table, no help."""
    env = environment(COLUMNS=columns)
    error = subprocess.run(mammofuse("schema", "--vocabulary", "nope"), capture_output=True, text=True, env=env, timeout=60)
    assert error.returncode == 2 and error.stderr.startswith("error: "), error.stderr
    for args in (["--help"], ["schema"]):
        shown = subprocess.run(mammofuse(*args), capture_output=True, text=True, env=env, timeout=60)
        assert shown.returncode == 0 and max(map(len, shown.stdout.splitlines())) == 80, shown.stdout


@pytest.mark.parametrize("args", [
    ["schema"], ["schema", "-f", "json"], ["--help"], ["predict", "{studies}", "--model", "{tiny}", "-f", "json"],
    ["inspect", "{studies}", "-f", "csv", "-o", "/dev/stdout"],
    ["explain", "{studies}", "--model", "{tiny}", "--methods", "gradcam", "--out", "{out}"],
], ids=["table", "json", "help", "records", "dev-stdout", "summary"])
def test_a_stdout_closed_from_the_start_is_an_output_error(args: list[str], tiny: Path, studies: Path, tmp_path: Path) -> None:
    """``>&-``: an exit 4 "internal error (AttributeError ...)", or 0 with the table lost; ``-o /dev/stdout`` wrote to the
    null device holding fd 1 and said "wrote"; ``explain`` (and train, ablate, evaluate, pretrain) failed after all its
    work, on its summary."""
    command = mammofuse(*(a.format(studies=studies, tiny=tiny, out=tmp_path / "out") for a in args))
    done = subprocess.run(["sh", "-c", 'exec "$@" >&-', "sh", *command], capture_output=True, text=True, env=environment(), timeout=180)
    assert done.returncode == 3 and done.stderr.splitlines() == ["error: stdout is closed"], done.stderr
    assert not (tmp_path / "out").exists()  # before any work


def test_a_stdout_closed_from_the_start_is_not_needed_for_an_output_file(studies: Path, tmp_path: Path) -> None:
    output = tmp_path / "files.json"
    command = mammofuse("inspect", studies, "-o", output)
    done = subprocess.run(["sh", "-c", 'exec "$@" >&-', "sh", *command], capture_output=True, text=True, env=environment(), timeout=180)
    assert done.returncode == 0, done.stderr
    assert len(json.loads(output.read_text())) == 3


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full")
@pytest.mark.parametrize("args", [["schema", "-o", "{out}"], ["predict", "{studies}", "--model", "{tiny}", "--density", "2", "-f", "json"]],
                         ids=["wrote-note", "notes"])
def test_a_stderr_that_cannot_be_written_costs_the_notes_not_the_work(args: list[str], tiny: Path, studies: Path, tmp_path: Path) -> None:
    """``2>/dev/full``: the first note failed (exit 1, "lost sys.stderr"), and the records never reached stdout."""
    output = tmp_path / "schema.json"
    command = mammofuse(*(a.format(studies=studies, tiny=tiny, out=output) for a in args))
    with open("/dev/full", "w") as full:
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=full, env=environment(), timeout=180)
    assert done.returncode == 0
    assert json.loads(done.stdout if args[0] == "predict" else output.read_text())


def test_a_reader_gone_in_the_middle_of_a_long_unbuffered_write_ends_with_141(tmp_path: Path, studies: Path) -> None:
    """Under PYTHONUNBUFFERED the write was cut short at the pipe's 64 KiB, silently: exit 0, as if all was written."""
    folder = tmp_path
    for level in range(6):  # long paths make long records: 200 files give some 300 kB of JSON
        folder = folder / f"{level}{'x' * 240}"
    folder.mkdir(parents=True)
    for i in range(200):
        os.link(studies / "a.png", folder / f"{i}.png")
    process = subprocess.Popen(mammofuse("inspect", folder, "-f", "json"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env=environment(PYTHONUNBUFFERED="1"))
    assert process.stdout.readline() == b"[\n"
    process.stdout.close()  # while the command is blocked in the middle of its one write
    _, stderr = process.communicate(timeout=180)
    assert process.returncode == 141, stderr.decode()
    assert not stderr


@pytest.mark.parametrize("args", [["schema"], ["inspect", "{studies}"]])
def test_a_reference_table_folds_its_cells_rather_than_cut_them(args: list[str], studies: Path) -> None:
    """At 80 columns, schema cut the aliases it accepts ("distortion=architectur…"), inspect its headers and values."""
    done = subprocess.run(mammofuse(*(a.format(studies=studies) for a in args)), capture_output=True, text=True, env=environment(COLUMNS="80"), timeout=60)
    assert done.returncode == 0, done.stderr
    assert "…" not in done.stdout, done.stdout

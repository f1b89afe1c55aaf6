"""Ctrl-C and SIGTERM, sent to a real ``python -m mammofuse`` the way a terminal or a job manager does: to the whole process
group, image-reading processes included. Always one line, ``error: interrupted``, exit 130 (143 for SIGTERM), nothing left
running and no temporary left behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from conftest import make_tiny_model

ROOT = Path(__file__).resolve().parents[1]
INTERRUPTED = "error: interrupted\n"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This module's tiny model is cnn4: each command it interrupts then starts without importing torchvision (seconds)."""
    return make_tiny_model(tmp_path_factory.mktemp("tiny-interrupts") / "model", backbone="cnn4")


def _start(args: list[str], hook: str = "", folder: Path | None = None) -> subprocess.Popen[str]:
    """``python -m mammofuse ARGS`` in its own process group; ``hook``: the text of a sitecustomize run first (in ``folder``)."""
    path = [str(ROOT)]
    if hook:
        assert folder is not None
        (folder / "sitecustomize.py").write_text(textwrap.dedent(hook))
        path.insert(0, str(folder))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path), "COLUMNS": "200"}
    return subprocess.Popen([sys.executable, "-m", "mammofuse", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)


def _finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    """Exit status and stderr, once the whole process group is gone (readers that outlive the command fail the test)."""
    _, err = process.communicate(timeout=120)
    deadline = time.monotonic() + 15
    while True:
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return process.returncode, err
        assert time.monotonic() < deadline, f"processes of the interrupted command are still running; stderr: {err}"
        time.sleep(0.1)


def _predict(tiny_model: Path, mini_mias: Path, output: Path) -> list[str]:
    """Scoring the 322 mammograms of mini-MIAS in small batches: seconds of work for two readers."""
    return ["predict", str(mini_mias / "images"), "--model", str(tiny_model), "--density", "2", "--margin", "spiculated", "--workers", "2", "--batch-size", "2", "-o", str(output)]


@pytest.mark.parametrize(("signum", "delay", "status"), [(signal.SIGINT, 0.0, 130), (signal.SIGINT, 0.5, 130), (signal.SIGTERM, 0.2, 143)])
def test_a_signal_to_the_group_while_readers_run_is_one_line_and_its_exit_status(signum: int, delay: float, status: int, tiny_model: Path,
                                                                                  mini_mias: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Also: a reader that left on SIGTERM kept its multiprocessing folder (``pymp-*``) in the temporary folder."""
    output, temporary = tmp_path / "scores.jsonl", tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setenv("TMPDIR", str(temporary))
    process = _start(_predict(tiny_model, mini_mias, output))
    deadline = time.monotonic() + 120
    while not (output.exists() and output.stat().st_size):  # the first records: the readers are at work
        assert process.poll() is None and time.monotonic() < deadline, _finish(process)
        time.sleep(0.02)
    time.sleep(delay)
    os.killpg(process.pid, signum)
    assert _finish(process) == (status, INTERRUPTED)
    assert not list(temporary.iterdir())


FORKSERVER = """
    import multiprocessing

    multiprocessing.set_start_method("forkserver")  # Python 3.14's default on Linux
"""


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_to_readers_a_forkserver_started_is_one_line_and_leaves_no_temporary(signum: int, status: int, tiny_model: Path, mini_mias: Path,
                                                                                      tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader that left on SIGTERM removed the multiprocessing folder it was given, the command's own (the forkserver's
    socket is in it), and the command's clean-up then printed a traceback."""
    output, temporary = tmp_path / "scores.jsonl", tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setenv("TMPDIR", str(temporary))
    process = _start(_predict(tiny_model, mini_mias, output), FORKSERVER, tmp_path)
    deadline = time.monotonic() + 120
    while not (output.exists() and output.stat().st_size):
        assert process.poll() is None and time.monotonic() < deadline, _finish(process)
        time.sleep(0.02)
    os.killpg(process.pid, signum)
    assert _finish(process) == (status, INTERRUPTED)
    assert not list(temporary.iterdir())


# Ctrl-C pressed while DataLoader forks its first reader: the signal reaches the command (and the new reader) in the middle of
# the fork's own bookkeeping, the moment that was swallowed there (the run went on to the end) or left a half-built loader.
CTRL_C_WHILE_FORKING = """
    import os, signal, sys

    def press_ctrl_c():
        frame = sys._getframe(1)
        while frame is not None and not frame.f_code.co_filename.endswith("popen_fork.py"):
            frame = frame.f_back
        if frame is not None and not os.environ.get("CTRL_C_PRESSED"):
            os.environ["CTRL_C_PRESSED"] = "1"
            os.killpg(0, signal.SIGINT)

    os.register_at_fork(after_in_parent=press_ctrl_c)
"""


def test_ctrl_c_while_the_readers_are_forked_is_one_line_and_130(tiny_model: Path, mini_mias: Path, tmp_path: Path) -> None:
    process = _start(_predict(tiny_model, mini_mias, tmp_path / "scores.jsonl"), CTRL_C_WHILE_FORKING, tmp_path)
    assert _finish(process) == (130, INTERRUPTED)


# SIGTERM to the group (a job manager) while a reader starts, once torch has set its own SIGTERM handler, which lets
# one from any process but the command kill the reader ("DataLoader worker is killed by signal: Terminated").
SIGTERM_WHILE_A_READER_STARTS = """
    import os, signal
    from torch.utils.data._utils import signal_handling

    set_handlers = signal_handling._set_worker_signal_handlers

    def sigterm_after(*args):
        set_handlers(*args)
        if not os.environ.get("SIGTERM_SENT"):
            os.environ["SIGTERM_SENT"] = "1"
            os.killpg(0, signal.SIGTERM)

    signal_handling._set_worker_signal_handlers = sigterm_after
"""


def test_sigterm_while_a_reader_starts_is_one_line_and_143(tiny_model: Path, mini_mias: Path, tmp_path: Path) -> None:
    process = _start(_predict(tiny_model, mini_mias, tmp_path / "scores.jsonl"), SIGTERM_WHILE_A_READER_STARTS, tmp_path)
    assert _finish(process) == (143, INTERRUPTED)


# A second SIGTERM (each reader of a group that a job manager stops may pass one on) landing just as the first is being
# reported: the report was marked made before it was printed, so the second ended the command silently with 143.
SECOND_SIGTERM_AS_THE_FIRST_IS_REPORTED = """
    import os, signal
    import mammofuse.interrupts as interrupts

    first_report = interrupts.first_report

    def second_sigterm(*args):
        decided = first_report(*args)
        if decided:
            os.kill(os.getpid(), signal.SIGTERM)
        return decided

    interrupts.first_report = second_sigterm

    import mammofuse.cli.predict_cmd as predict_cmd

    def clinical_flags(*args):
        os.kill(os.getpid(), signal.SIGTERM)

    predict_cmd.clinical_flags = clinical_flags
"""


def test_a_second_sigterm_while_the_first_is_reported_still_says_it_once(tmp_path: Path) -> None:
    process = _start(["predict", str(tmp_path), "--density", "2"], SECOND_SIGTERM_AS_THE_FIRST_IS_REPORTED, tmp_path)
    assert _finish(process) == (143, INTERRUPTED)


# Ctrl-C while the command takes a batch's shared memory from a reader: it drops the connection that reader's
# hand-over thread is serving (which printed a ConnectionResetError traceback after the command's line).
CTRL_C_WHILE_TAKING_A_BATCH = """
    import os, signal
    import multiprocessing.connection as connection

    COMMAND, answer = os.getpid(), connection.answer_challenge

    def ctrl_c_first(conn, authkey):
        if os.getpid() == COMMAND:
            os.kill(COMMAND, signal.SIGINT)
        return answer(conn, authkey)

    connection.answer_challenge = ctrl_c_first
"""


def test_ctrl_c_while_a_batch_is_handed_over_is_one_line_and_130(tiny_model: Path, mini_mias: Path, tmp_path: Path) -> None:
    process = _start(_predict(tiny_model, mini_mias, tmp_path / "scores.jsonl"), CTRL_C_WHILE_TAKING_A_BATCH, tmp_path)
    assert _finish(process) == (130, INTERRUPTED)


# dataclasses and namedtuple build their methods by running strings: a Ctrl-C while a command imports one is raised inside
# such a string, and CPython then ends `python -m` by SIGINT, whatever exit status the command chose.
CTRL_C_IN_STRING_CODE = """
    import mammofuse.cli.predict_cmd as predict_cmd

    def clinical_flags(*args):
        exec("import os, signal; os.kill(os.getpid(), signal.SIGINT)")

    predict_cmd.clinical_flags = clinical_flags
"""


def test_python_m_exits_130_after_a_ctrl_c_inside_code_run_from_a_string(tmp_path: Path) -> None:
    process = _start(["predict", str(tmp_path), "--density", "2", "--margin", "spiculated"], CTRL_C_IN_STRING_CODE, tmp_path)
    assert _finish(process) == (130, INTERRUPTED)


# SIGTERM (a job manager stopping the command) just before a finished output replaces the old file.
SIGTERM_BEFORE_REPLACE = """
    import os, signal

    replace = os.replace

    def terminated_first(source, target, **kwargs):
        if str(target).endswith("schema.json"):
            os.kill(os.getpid(), signal.SIGTERM)
        return replace(source, target, **kwargs)

    os.replace = terminated_first
"""


def test_sigterm_takes_ctrl_cs_way_out_removing_the_temporary_and_exits_143(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    process = _start(["schema", "-o", str(out / "schema.json")], SIGTERM_BEFORE_REPLACE, tmp_path)
    assert _finish(process) == (143, INTERRUPTED)
    assert list(out.iterdir()) == []  # neither the output nor its temporary


def test_a_stop_raised_in_a_finalizer_is_not_printed_but_other_finalizer_errors_are() -> None:
    """SIGTERM while a DataLoader's reader started: its __del__, joining the readers, took the KeyboardInterrupt and
    Python printed "Exception ignored ... Traceback" after the command's one line (about one run in three)."""
    code = """
import gc, signal, sys
from mammofuse import interrupts
interrupts.handle_stop_signals()

class Joins:
    def __init__(self, error):
        self.error = error
    def __del__(self):
        raise self.error

Joins(ValueError("shown")); gc.collect()
interrupts._received.append(signal.SIGTERM)  # as the stop's handler notes it
Joins(KeyboardInterrupt()); gc.collect()
Joins(ValueError("still shown")); gc.collect()
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("Exception ignored") == 2 and "KeyboardInterrupt" not in done.stderr
    assert "ValueError: shown" in done.stderr and "ValueError: still shown" in done.stderr


# A stop signal that lands at a chosen moment: while the command line itself loads (its first import of Typer), while
# Typer builds the commands, while it parses the arguments, or inside torch's own import.
SIGNAL_WHEN = """
    import importlib.abc, os, signal, sys

    class SignalOnImport(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == {module!r}:
                sys.meta_path.remove(self)
                os.kill(os.getpid(), {signum})
            return None

    sys.meta_path.insert(0, SignalOnImport())
"""
SIGNAL_IN_TYPER = """
    import os, signal
    import typer.core, typer.main

    def signalled(original):
        def first_the_signal(*args, **kwargs):
            os.kill(os.getpid(), {signum})
            return original(*args, **kwargs)
        return first_the_signal

    if {where!r} == "building":
        typer.main.get_command = signalled(typer.main.get_command)
    else:
        typer.core.TyperGroup.make_context = signalled(typer.core.TyperGroup.make_context)
"""


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
@pytest.mark.parametrize("hook", [SIGNAL_WHEN.replace("{module!r}", "'typer'"), SIGNAL_IN_TYPER.replace("{where!r}", "'building'"),
                                  SIGNAL_IN_TYPER.replace("{where!r}", "'parsing'")], ids=["loading", "building", "parsing"])
def test_a_stop_before_the_command_runs_is_one_line_and_its_exit_status(hook: str, signum: int, status: int, tmp_path: Path) -> None:
    """Before: a traceback while the command line loaded or Typer built it; nothing at all (and 130 for SIGTERM too) while
    Typer parsed the arguments."""
    process = _start(["schema"], hook.replace("{signum}", str(int(signum))), tmp_path)
    assert _finish(process) == (status, INTERRUPTED)


def test_a_ctrl_c_inside_torchs_import_waits_for_torch_to_load_then_stops(tmp_path: Path) -> None:
    """A Ctrl-C inside torch's import left it half-loaded, and the process then aborted at exit (SIGABRT) about one time
    in fifty instead of ending with 130: it is now raised once torch and torchvision are loaded."""
    code = SIGNAL_WHEN.replace("{module!r}", "'torch.functional'").replace("{signum}", str(int(signal.SIGINT))) + """
    import traceback
    from mammofuse.interrupts import handle_stop_signals, load_torch

    handle_stop_signals()
    try:
        load_torch(vision=True)
    except KeyboardInterrupt as exc:
        frames = [frame.name for frame in traceback.extract_tb(exc.__traceback__)]
        print(frames[-2], "torchvision" in sys.modules, float(sys.modules["torch"].ones(3).sum()))
    """
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout == "held_back True 3.0\n", done.stderr


# At exit, whether torch had finished loading (a half-loaded torch is what aborted).
LOADED_AT_EXIT = """
    import atexit

    @atexit.register
    def loaded():
        with open({report!r}, "w") as fh:
            fh.write(str("torch.functional" in sys.modules))
"""


@pytest.mark.parametrize("args", [["predict", "{image}", "--margin", "spiculated"], ["explain", "{image}", "--out", "{out}", "--methods", "gradcam"],
                                  ["train", "--dataset", "mini-mias", "--out", "{out}"], ["ablate", "--dataset", "mini-mias", "--data", "{data}", "--out", "{out}"],
                                  ["pretrain", "--dataset", "mini-mias", "--data", "{data}", "--out", "{out}/b.safetensors"]], ids=lambda args: args[0])
def test_every_command_that_uses_torch_loads_it_whole_before_a_ctrl_c_stops_it(args: list[str], tmp_path: Path) -> None:
    """explain imported torch with its explainers, before the signals were held back for it."""
    hook = (SIGNAL_WHEN.replace("{module!r}", "'torch.functional'").replace("{signum}", str(int(signal.SIGINT)))
            + LOADED_AT_EXIT.replace("{report!r}", repr(str(tmp_path / "loaded"))))
    image = tmp_path / "scan.png"
    image.write_bytes(b"")  # never read: the command stops while torch loads
    process = _start([a.format(image=image, out=tmp_path / "out", data=tmp_path) for a in args], hook, tmp_path)
    assert _finish(process) == (130, INTERRUPTED)
    assert (tmp_path / "loaded").read_text() == "True"


def test_a_reader_is_quiet_about_a_connection_the_main_process_cut_in_its_handshake(capsys: pytest.CaptureFixture[str]) -> None:
    """The thread that hands a batch's shared memory over (multiprocessing's resource_sharer) reports its errors with
    ``sys.excepthook``; a main process interrupted while it connects leaves it an EOFError in the handshake."""
    from multiprocessing import connection

    from mammofuse.interrupts import _quiet_when_cut_off

    def main_process_stopped_in_the_handshake(address: str) -> None:
        with socket.socket(socket.AF_UNIX) as client:  # multiprocessing's default family on Linux
            client.connect(address)
            with connection.Connection(client.detach()) as channel:
                connection.answer_challenge(channel, b"reader")  # and gone before it delivers its own challenge

    with connection.Listener(authkey=b"reader") as listener:
        client = threading.Thread(target=main_process_stopped_in_the_handshake, args=(listener.address,))
        client.start()
        with pytest.raises(EOFError) as cut:
            listener.accept()
        client.join()
    _quiet_when_cut_off(cut.type, cut.value, cut.tb)
    _quiet_when_cut_off(ValueError, ValueError("a reader's own error"), None)
    assert capsys.readouterr().err.splitlines() == ["ValueError: a reader's own error"]


def test_an_interruption_by_several_stop_signals_is_said_once(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Was, once in about twenty CI runs: "error: interrupted" twice. A SIGTERM to the process group reaches the command
    from each reader as well, and one arriving as the first is reported ended the command a second time."""
    from mammofuse import interrupts
    from mammofuse.cli.common import interrupted

    monkeypatch.setattr(interrupts, "_received", [signal.SIGTERM, signal.SIGTERM])
    monkeypatch.setattr(interrupts, "_said", [])
    assert [interrupted(143).exit_code for _ in range(2)] == [143, 143]
    assert capsys.readouterr().err.count("error: interrupted") == 1
    monkeypatch.setattr(interrupts, "_received", [])  # a KeyboardInterrupt raised in code, as in-process tests do: said each time
    interrupted(130), interrupted(130)
    assert capsys.readouterr().err.count("error: interrupted") == 2

"""``mammofuse evaluate``: the protocol's metrics, with patient-bootstrap intervals, plots, a CI gate and leakage guards."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from mammofuse.atomic import check_not_input
from mammofuse.cli.common import (
    MAX_BATCH_SIZE,
    MAX_WORKERS,
    RECORD_FORMATS,
    SOME_FAILED,
    Abnormality,
    AwayPatches,
    DataDir,
    DatasetName,
    Device,
    Format,
    ImageDirs,
    ReportFormat,
    check_choice,
    check_output,
    check_stdout,
    dataset_files,
    emit,
    err_console,
    guarded,
    note,
    output_file_option,
    output_option,
    safe,
)
from mammofuse.cli.output import console, progress
from mammofuse.errors import MammofuseError
from mammofuse.jsontext import json_text
from mammofuse.validation import MAX_BOOTSTRAP, MAX_SEED

_THRESHOLD_METRICS = ("accuracy", "f1", "precision", "recall", "specificity")
_CONTROLS = {"masked": "lesion masked out", "away": "patch away from the lesion"}
_PANELS = {"overlap": ("WARNING: LEAKAGE", "bold red"), "suspicious_auc": ("AUC >= 0.97: check for leakage", "bold yellow")}


@guarded
def evaluate(
    dataset: DatasetName,
    data: DataDir,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Registered model name, model folder, or Hub id owner/name[@rev] (default: the bundled model).")] = None,
    images: ImageDirs = None,
    abnormality: Abnormality = "all",
    aggregate: Annotated[str, typer.Option("--aggregate", help="view: one score per case; breast: also combine the cases of one breast (patient and laterality) into one score and report per-breast metrics.")] = "view",
    control: Annotated[str | None, typer.Option("--control", help="Shortcut control: score each case with its lesion masked out ('masked'; a whole-breast model: every lesion of the film) or, for lesion-crop models, on a patch of the same image away from every lesion ('away').")] = None,
    away_patches: AwayPatches = 1,
    split: Annotated[str, typer.Option("--split", help="Dataset split to evaluate: test (CBIS-DDSM official), train, or all (mini-MIAS, manifests).")] = "test",
    fmt: Format = ReportFormat.TABLE,
    output: Annotated[Path | None, output_file_option("--output", "-o", help="Write the JSON report to this file (atomically): besides the tables on stdout, or with --format json instead of stdout (- is stdout: the tables, or the JSON with --format json).")] = None,
    plots: Annotated[Path | None, output_option("--plots", help="Write ROC, PR, reliability and confusion-matrix PNGs here (an earlier run's figures there, and its --output report, are removed first; the folder is held for the run: another run given it fails).")] = None,
    bootstrap: Annotated[int, typer.Option("--bootstrap", min=0, max=MAX_BOOTSTRAP, help="Patient-bootstrap resamples for the AUC interval (0: none).")] = 1000,
    seed: Annotated[int, typer.Option("--seed", min=0, max=MAX_SEED, help="Bootstrap seed.")] = 0,
    fail_under: Annotated[str | None, typer.Option("--fail-under", help="CI gate, e.g. auc=0.85,recall=0.9 (also auc_low: the CI's lower bound); exit 1 when missed.")] = None,
    compare: Annotated[str | None, typer.Option("--compare", help="'paper': this result beside arXiv 2508.16000's claim and the protocol's reference points (tables on stdout; with --format json, the report's 'comparison').")] = None,
    max_failed: Annotated[int, typer.Option("--max-failed", min=0, help="Cases whose image fails are reported and left out; more than this many makes the exit code 1.")] = 0,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, max=MAX_BATCH_SIZE, help="Cases per batch.")] = 16,
    device: Device = "auto",
    workers: Annotated[int, typer.Option("--workers", min=0, max=MAX_WORKERS, help="Image-reading worker processes.")] = 0,
) -> None:
    """Evaluate a model on a dataset split, honestly: no tuning on the evaluated data.

    Metrics at the model's stored threshold (chosen at training time on validation or out-of-fold predictions): ROC-AUC with a 95% bootstrap interval over patients, PR-AUC, accuracy, F1, precision, recall, specificity, Brier score and ECE, overall and for masses and calcifications separately. Warns loudly when evaluated patients were in the model's training or validation data, and prints the leakage checklist for any AUC >= 0.97. Cases whose image fails are reported and left out.

    Exit status: 0 done; 1 a --fail-under bound was missed, or more than --max-failed cases failed; 2 usage error; 3 --output or --plots not writable (or --plots in use by another run), or stdout closed (>&-); 4 internal error (a bug: please report it); 141 stdout's reader went away before all was written (| head).

    Examples:

        mammofuse evaluate --model runs/clinical --dataset cbis-ddsm --data ../shared/data/cbis-ddsm

        mammofuse evaluate -m runs/cross --dataset cbis-ddsm --data csvs/ --images CBIS-DDSM/ --abnormality mass --plots figs/ --compare paper --fail-under auc=0.85

        mammofuse evaluate -m runs/cross --dataset cbis-ddsm --data csvs/ --images train-jpegs/ --images test-dicoms/ --abnormality mass --aggregate breast

        mammofuse evaluate -m runs/cross --dataset cbis-ddsm --data csvs/ --images jpegs/ --abnormality mass --split train --control masked
    """
    from mammofuse.evaluation.evaluate import check_bounds, parse_bounds

    check_choice("--aggregate", aggregate, ("view", "breast"))
    if control is not None:
        check_choice("--control", control, ("masked", "away"))
    if away_patches > 1 and control != "away":
        raise MammofuseError("--away-patches is for --control away")
    _check_report_suffix(output)
    check_stdout()  # the summary goes there
    check_output(output)
    if plots is not None:
        from mammofuse.atomic import check_writable_folder

        check_writable_folder(plots)
    if compare is not None:
        check_choice("--compare", compare, ("paper",))
    bounds = parse_bounds(fail_under) if fail_under is not None else {}

    from contextlib import nullcontext

    from mammofuse.atomic import folder_lock

    with folder_lock(plots) if plots is not None else nullcontext():  # another run given the same --plots fails at once
        from mammofuse.api import as_model
        from mammofuse.data import load_dataset
        from mammofuse.evaluation.evaluate import evaluate_model, select_split

        matching: dict[str, Any] = {}
        every = load_dataset(dataset, data, images, abnormality, matching)
        check_not_input([output], dataset_files(data, images, every))
        samples = select_split(every, split)
        rows = matching.get("rows", {}).get(split)
        loaded = as_model(model, device)
        if control is not None:
            from mammofuse.imaging.controls import AWAY_NEEDS_ROI, controls_for

            if not controls_for(loaded.config.recipe.input, [control]):
                raise MammofuseError(f"--control away: {AWAY_NEEDS_ROI}")
        with progress("scoring", len(samples) * (away_patches if control == "away" else 1)) as advance:
            evaluation = evaluate_model(
                loaded, samples, n_boot=bootstrap, seed=seed, batch_size=batch_size, workers=workers,
                on_batch=advance, describe={"dataset": dataset, "split": split, "model_spec": loaded.name, "control": control,
                                            **({"rows": rows} if rows else {})},
                control=control, away_patches=away_patches, per_breast=aggregate == "breast",
            )
        result = evaluation.report
        if compare:
            from mammofuse.evaluation.reference import comparison

            result["comparison"] = comparison(result)

        for item in evaluation.failed:
            where = f" ({safe(item['path'])})" if item["path"] else ""
            err_console.print(f"[yellow]failed:[/] {safe(item['id'])}{where}: {safe(item['error'])}", highlight=False, soft_wrap=True)
        _remarks(result)

        if plots is not None:
            _remove_earlier_run(plots, output)
        if plots is not None and result["n"]:
            from mammofuse.evaluation.plots import evaluation_figures

            title = f"{result['model']['fusion']} on {dataset} {split}" + (f", control {control}" if control else "")
            written = evaluation_figures(evaluation.labels, evaluation.probs, result, plots, title)
            for kind, sub in result["subsets"].items():
                keep = [i for i, s in enumerate(_kinds(samples, evaluation)) if s == kind]
                written += evaluation_figures(evaluation.labels[keep], evaluation.probs[keep], sub, plots / kind, f"{title} ({kind})")
            err_console.print(f"wrote {len(written)} figures to {safe(plots)}", highlight=False, soft_wrap=True)

        if fmt == "json":
            emit(json_text(result, indent=2) + "\n", output)
        else:
            _tables(result)
            if output is not None:
                emit(json_text(result, indent=2) + "\n", output)

        code = 0
        if len(evaluation.failed) > max_failed:
            err_console.print(f"[red]{len(evaluation.failed)} case(s) failed and were left out (allowed: {max_failed})[/]", highlight=False, soft_wrap=True)
            code = SOME_FAILED
        problems = check_bounds(result, bounds) if bounds else []
        if problems:
            err_console.print(f"[bold red]fail-under:[/] {'; '.join(problems)}", highlight=False, soft_wrap=True)
            code = SOME_FAILED
        if code:
            raise typer.Exit(code)


def _remove_earlier_run(plots: Path, output: Path | None) -> None:
    """Delete an earlier evaluation's figures in ``plots`` and its report at ``output`` before this run's first figure: a run
    stopped midway leaves no report beside figures it did not describe, and none of this run's figures beside an earlier one's."""
    from mammofuse.atomic import is_stream
    from mammofuse.errors import OutputError
    from mammofuse.evaluation.plots import remove_evaluation_figures

    if output is not None and not is_stream(output):
        try:
            Path(os.path.realpath(output)).unlink(missing_ok=True)  # a symlink's target: the report is written there
        except OSError as exc:
            raise OutputError(output, f"the earlier report cannot be removed: {exc.strerror or exc}") from exc
    remove_evaluation_figures(plots)


def _kinds(samples: list[Any], evaluation: Any) -> list[str | None]:
    failed = {f["id"] for f in evaluation.failed}
    return [s.abnormality for s in samples if s.id not in failed]


def _remarks(result: dict[str, Any]) -> None:
    """The report's remarks (:func:`~mammofuse.evaluation.evaluate.report_remarks`): notes, and the leakage alarms in panels."""
    from rich.panel import Panel

    from mammofuse.evaluation.evaluate import report_remarks

    for remark in report_remarks(result):
        if remark.kind == "note":
            note(remark.text)
        else:
            title, style = _PANELS[remark.kind]
            err_console.print(Panel("\n".join(remark.details) or remark.text, title=title, border_style=style), highlight=False)


def _check_report_suffix(output: Path | None) -> None:
    """Refuse an ``--output`` named for another machine-readable format: it always receives the JSON report, whatever --format."""
    suffix = output.suffix.lower().lstrip(".") if output else ""
    if suffix in RECORD_FORMATS and suffix != "json":
        raise MammofuseError(f"--output {output} looks like {suffix}, but evaluate writes its report as JSON: name --output .json")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _tables(result: dict[str, Any]) -> None:
    from rich.table import Table

    from mammofuse.evaluation.subgroups import subgroup_lines

    columns = {"all": result, **result["subsets"]}
    control = f", control: {_CONTROLS[result['control']]}" if result.get("control") else ""
    table = Table(title=f"{result['model']['fusion']} model on {result['dataset']} ({result['split']}){control}", caption=result["notice"])
    table.add_column("metric")
    for name in columns:
        table.add_column(name, justify="right")
    table.add_row("cases (patients)", *(f"{c['n']} ({c['patients']})" for c in columns.values()))
    table.add_row("malignant", *(str(c["positives"]) for c in columns.values()))
    table.add_row("ROC-AUC", *(_fmt(c["auc"]) for c in columns.values()))
    table.add_row("  95% CI (patients)", *("n/a" if not c["auc_ci"] else f"{c['auc_ci'][0]:.3f}-{c['auc_ci'][1]:.3f}" for c in columns.values()))
    table.add_row("PR-AUC", *(_fmt(c["pr_auc"]) for c in columns.values()))
    for metric in _THRESHOLD_METRICS:
        table.add_row(f"{metric} @ {result['threshold']:.3f}", *(_fmt(c[metric]) for c in columns.values()))
    table.add_row("Brier", *(_fmt(c["brier"]) for c in columns.values()))
    table.add_row("ECE", *(_fmt(c["ece"]) for c in columns.values()))
    console.print(table)
    for line in subgroup_lines(result.get("subgroups", {})):
        console.print(f"by {line}", highlight=False, soft_wrap=True)
    if "per_breast" in result:
        b = result["per_breast"]
        ci = f" [{b['auc_ci'][0]:.3f}, {b['auc_ci'][1]:.3f}]" if b.get("auc_ci") else ""
        console.print(f"per breast (views combined): {b['n']} breasts, ROC-AUC {_fmt(b['auc'])}{ci} (per case: {_fmt(result['auc'])})", highlight=False, soft_wrap=True)
    for remark in dict.fromkeys(n for c in columns.values() for n in c["notes"]):
        console.print(f"note: {remark}", highlight=False, soft_wrap=True)
    if "comparison" in result:
        comp = result["comparison"]
        if "note" in comp:
            console.print(f"note: {comp['note']}", highlight=False, soft_wrap=True)
        paper = Table("metric", "this run", "paper claim", "difference", title=f"Beside {comp['paper']}")
        for row in comp["metrics"]:
            this = _fmt(row["this"]) + (f" ({row['ci'][0]:.2f}-{row['ci'][1]:.2f})" if row["ci"] else "")
            paper.add_row(row["metric"], this, f"{row['paper']:.2f}", "n/a" if row["difference"] is None else f"{row['difference']:+.3f}")
        console.print(paper)
        refs = Table("setting", "AUC", "source", title="Reference points (docs/evaluation.md; orientation, not targets)")
        for ref in comp["references"]:
            refs.add_row(ref["setting"], ref["auc"], ref["source"])
        console.print(refs)


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)

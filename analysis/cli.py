"""`saliency-audit`: the command line over the same engine the dashboard uses.

Contract (docs/FORMATS.md): `run` prints the run id alone on the last stdout line (progress goes to
stderr); bad input exits 2 with one line on stderr and no traceback; `check --fail-on-flags` exits 3 when
flagged, 4 when the audit cannot judge, 0 only when clear.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import signal
import sys
from pathlib import Path
from typing import Any, Callable

from analysis.store.workspace import ENV_VAR
from explainers.errors import InputError


EXIT_OK, EXIT_BAD_INPUT, EXIT_FLAGGED, EXIT_CANNOT_JUDGE = 0, 2, 3, 4


EXIT_TERMINATED = 143  # 128 + SIGTERM, what a shell reports for a process SIGTERM ended


class Terminated(SystemExit):
    """SIGTERM outside a run: unwinds like an exception, so registrations remove their temp copies."""


def main(argv: list[str] | None = None) -> int:
    """The command line. Called as the program (`argv` None), a SIGTERM ends it within moments: cleanup
    runs as the exception unwinds, then the process leaves without the interpreter's teardown, which after
    a D-RISE batch took seconds (everything worth keeping is committed and fsynced by then)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_BAD_INPUT
    previous = _terminate_on_sigterm()
    try:
        code = _dispatch(args)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if argv is None and code == EXIT_TERMINATED:
        _leave_now(code)
    return code


def _leave_now(code: int) -> None:
    """Exit without the interpreter's teardown; a local Ray instance this process started is stopped first
    (its atexit hook would not run)."""
    ray = sys.modules.get("ray")
    if ray is not None and getattr(ray, "is_initialized", lambda: False)():
        ray.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _dispatch(args) -> int:
    try:
        return args.handler(args) or EXIT_OK
    except InputError as exc:
        print(f"saliency-audit: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("saliency-audit: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except Terminated:
        print("saliency-audit: terminated; run the same command again to resume", file=sys.stderr)
        return EXIT_TERMINATED
    except BaseException as exc:
        if type(exc).__name__ != "Cancelled":  # analysis.runs.engine.Cancelled: SIGTERM from cancel_job
            raise
        print("saliency-audit: run cancelled; run it again to resume", file=sys.stderr)
        return EXIT_TERMINATED


def _terminate_on_sigterm():
    """SIGTERM raises `Terminated` (the run engine installs its own, recording the run as cancelled)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(_signum, _frame):
        raise Terminated(EXIT_TERMINATED)

    return signal.signal(signal.SIGTERM, handler)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="saliency-audit",
                                     description="What does your vision model look at, across a dataset?")
    sub = parser.add_subparsers(dest="command")

    def command(name: str, handler: Callable, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--workspace", default=None, help=f"workspace folder (default ./workspace or ${ENV_VAR})")
        p.set_defaults(handler=handler)
        return p

    run = command("run", cmd_run, "explain a sample of a dataset with a model; prints the run id")
    run.add_argument("--model", help="model file (.pt2/.pt/.safetensors/.ts/.onnx), registered model id, or an "
                                     "MLflow registry version models:/NAME/VERSION or models:/NAME@ALIAS")
    run.add_argument("--mlflow-uri", help="MLflow tracking URI for models:/ (default $MLFLOW_TRACKING_URI)")
    run.add_argument("--data", help="dataset folder / .zip / COCO .json, or registered dataset id")
    run.add_argument("--images", help="with a COCO --data: the folder its file_name paths start from (default: "
                                      "the JSON's folder, or images/ or data/ beside it)")
    run.add_argument("--card", help="model card JSON (default: model.json beside the model)")
    run.add_argument("--method", default=None,
                     help="explainer (default: gradcam for classifiers, drise for detection models)")
    run.add_argument("--n", type=int, default=200, help="sample size (stratified by class)")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--name")
    run.add_argument("--layer", help="target layer for CAM methods (default: card's or detected)")
    run.add_argument("--target", choices=["pred", "label"], default="pred",
                     help="explain the predicted class (default) or the labelled class")
    run.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                     help="explainer parameter, JSON value (e.g. --param n_samples=50)")
    run.add_argument("--device", default="cpu", help="cpu or cuda")
    run.add_argument("--batch-size", type=int, default=32)
    run.add_argument("--resume-id", help="continue an existing run by id (what background workers use)")
    run.add_argument("--no-progress", action="store_true")
    run.add_argument("--backend", choices=["local", "ray"], default="local",
                     help="ray: shard the sample over Ray actors (pip install .[ray])")
    run.add_argument("--ray-address", help="Ray cluster to join: the head's host:port, ray://host:10001 or auto "
                     "(default: start a local one on 127.0.0.1); token auth: RAY_AUTH_MODE=token + RAY_AUTH_TOKEN")
    run.add_argument("--workers", type=int, default=2, help="Ray actors (one model each)")

    runs = command("runs", cmd_runs, "list runs")
    runs.add_argument("--format", choices=["table", "json"], default="table")

    report = command("report", cmd_report, "report of one run")
    report.add_argument("run")
    report.add_argument("--format", choices=["json", "html", "csv"], default="json")
    report.add_argument("--table", choices=["regions", "accuracy", "flags"], default="regions",
                        help="which tidy table --format csv writes")
    report.add_argument("--out")

    compare = command("compare", cmd_compare, "compare runs (model versions)")
    compare.add_argument("runs", nargs="*", help="run ids (compared in their models' version order, oldest first)")
    compare.add_argument("--registered", metavar="NAME",
                         help="an MLflow registered model: audit (or reuse the audits of) every version, in order")
    compare.add_argument("--data", help="with --registered: the dataset to audit each version on")
    compare.add_argument("--images", help="with a COCO --data: the folder its file_name paths start from")
    compare.add_argument("--method", default=None, help="with --registered: the explainer (default as for run)")
    compare.add_argument("--n", type=int, default=200, help="with --registered: sample size per version")
    compare.add_argument("--seed", type=int, default=0)
    compare.add_argument("--device", default="cpu")
    compare.add_argument("--mlflow-uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI)")
    compare.add_argument("--format", choices=["json", "html"], default="json")
    compare.add_argument("--out")

    check = command("check", cmd_check, "the verdict of a run; with --fail-on-flags exit 3 flagged, 4 cannot judge")
    check.add_argument("run")
    check.add_argument("--fail-on-flags", action="store_true")

    demo_options(command("demo", cmd_demo, "build the demo workspace (data, model versions, audits)"))

    dashboard = command("dashboard", cmd_dashboard, "open the dashboard (Streamlit, localhost)")
    dashboard.add_argument("--demo", action="store_true",
                           help="build the demo workspace in a background worker unless built (the dashboard "
                                "opens at once and fills in as audits finish)")
    dashboard.add_argument("--port", type=int, default=8501)
    demo_options(dashboard)
    return parser


def demo_options(parser: argparse.ArgumentParser) -> None:
    """A smaller demo (a quick look, a test): which scenarios, versions, explainers, how many images."""
    parser.add_argument("--scenarios", help="comma-separated demo scenarios (default: all of them)")
    parser.add_argument("--versions", help="comma-separated versions of each series, e.g. 1,5 (default 1..5)")
    parser.add_argument("--methods", help="comma-separated explainers of the classifiers (default gradcam,saliency)")
    parser.add_argument("--images", type=int, help="validation images per classifier scenario (default 200)")


# -- commands -----------------------------------------------------------------------------------------
def cmd_run(args) -> int:
    from analysis.report.labels import model_label
    from analysis.runs.engine import execute_run
    from analysis.runs.tasks import check_method, check_run_params, task_of_model

    workspace = _workspace(args)
    if args.resume_id:
        run_id = args.resume_id
        workspace.run(run_id)
    else:
        if not args.model or not args.data:
            raise InputError("run needs --model PATH|ID and --data PATH|ID (or --resume-id RUN)")
        params: dict[str, Any] = {"target": args.target}
        if args.layer:
            params["layer"] = args.layer
        params.update(_parse_params(args.param))
        if args.n <= 0:
            raise InputError(f"--n {args.n}: the sample size must be a positive number of images")
        # fail fast on a bad card, a misspelt method or parameter, before copying files in: a model file's card
        # is checked against the schema (ignored fields named), a model folder's card names its task
        card = _checked_card(workspace, args.model, args.card)
        early = task_of_model({"card": card}) if card is not None else _task_of_model_file(args.model, args.card)
        if early is not None:
            check_method(args.method or early.default_method, early.name)
            check_run_params(early, args.method or early.default_method, early.new_run_params(params))
        elif args.method:
            check_method(args.method, any_task=True)
        known = {model["id"] for model in workspace.models()}
        model_id = _resolve_model(workspace, args.model, args.card, args.mlflow_uri,
                                  warn=card is None)  # a model folder's card: its ignored fields named here
        task = task_of_model(workspace.model(model_id))  # InputError for a task this version does not run
        method = args.method or task.default_method
        check_method(method, task.name)
        params = check_run_params(task, method, task.new_run_params(params))
        dataset_id = workspace.resolve_dataset(args.data, images=args.images)
        run_id = workspace.create_run(model_id, dataset_id, method, params, args.n, args.seed, args.name)
        if model_id in known:  # the same content again: its registered name and version stay (said once the
            model = workspace.model(model_id)  # run exists, so a refusal stays the one line on stderr)
            print(f"using the registered model {model_label(model['name'], model.get('version'))} ({model_id})",
                  file=sys.stderr)
    if args.backend == "ray":
        from analysis.runs.ray_backend import run_with_ray

        final = run_with_ray(workspace, run_id, args.ray_address, args.workers, device=args.device,
                             batch_size=args.batch_size, progress=not args.no_progress)
    else:
        final = execute_run(workspace, run_id, device=args.device, batch_size=args.batch_size,
                            progress=not args.no_progress)
    print(f"{final['n_done']} images explained, {final['n_skipped']} skipped", file=sys.stderr)
    _write_back(workspace, run_id)
    print(run_id)
    return EXIT_OK


def _task_of_model_file(model: str, card: str | None):
    """The task a local model file's card names, read without registering anything; None when the model is
    an id, a registry URI or a file whose card cannot be read here (registration then says why)."""
    from analysis.runs.tasks import get_task
    from explainers.loading.models import read_card

    path = Path(model)
    if not path.exists():
        return None
    try:
        return get_task(read_card(path, card).task)
    except (InputError, OSError, ValueError):
        return None



def _checked_card(workspace, model: str, card: str | None) -> dict | None:
    """The card of a model file not registered yet, checked against the card schema (its ignored fields named
    on stderr, with the card file given); None for a registered id, a registry URI or a model folder."""
    from analysis.store import mlflow_registry

    path = Path(model)
    if workspace.model(str(model)) is not None or mlflow_registry.is_registry_uri(model) or not path.is_file():
        return None
    from explainers.loading.model_files import hf_folder_in_zip

    if hf_folder_in_zip(path) is not None:
        return None
    return workspace.model_card(path, card, on_warning=_warn)[1]


def _warn(line: str) -> None:
    print(f"saliency-audit: warning: {line}", file=sys.stderr)


def _resolve_model(workspace, model: str, card: str | None, mlflow_uri: str | None, warn: bool = False) -> str:
    from analysis.store import mlflow_registry

    if not mlflow_registry.is_registry_uri(model):
        return workspace.resolve_model(model, card, on_warning=_warn if warn else None)
    registry = mlflow_registry.client(mlflow_uri)
    return mlflow_registry.register(workspace, registry, mlflow_registry.resolve(registry, model))


def _write_back(workspace, run_id: str) -> None:
    """An audit of an MLflow registry version goes back to that version (report, metrics, tags)."""
    from analysis.report.build import cached_report
    from analysis.report.html import render_html
    from analysis.store import mlflow_registry

    source = workspace.model(workspace.run(run_id)["model_id"]).get("source")
    if not source:
        return
    try:
        report = cached_report(run_id, workspace)
        mlflow_registry.log_results(mlflow_registry.client(source["tracking_uri"]), source, report,
                                    render_html(report))
    except Exception as exc:  # the audit itself is done and kept; only the copy in the registry is missing
        print(f"saliency-audit: results not written back to {source['uri']} ({_one_line(exc)}); "
              f"run `saliency-audit run --resume-id {run_id}` again to retry", file=sys.stderr)
    else:
        print(f"results written to {source['uri']} in {source['tracking_uri']}", file=sys.stderr)


def cmd_runs(args) -> int:
    from analysis.report.labels import model_label

    rows = _workspace(args).runs()
    columns = ["id", "name", "model_name", "dataset_name", "method", "status", "n_done", "n_total"]
    if args.format == "json":
        print(json.dumps([{k: r.get(k) for k in columns + ["model_version", "model_id", "dataset_id", "n", "seed",
                                                             "params", "n_skipped", "error", "target_layer", "stage"]}
                          for r in rows], indent=1))
        return EXIT_OK
    columns[2] = "model"  # the name a person gave it, with its version: as on every page
    rows = [dict(r, model=model_label(r.get("model_name"), r.get("model_version"))) for r in rows]
    table = [columns] + [[str(r.get(c) if r.get(c) is not None else "") for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(columns))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return EXIT_OK


def cmd_report(args) -> int:
    from analysis.report.build import cached_report, to_csv

    report = cached_report(args.run, _workspace(args))
    if args.format == "json":
        _emit(json.dumps(_json_safe(report), indent=1), args.out)
    elif args.format == "csv":
        _emit(to_csv(report, args.table), args.out)
    else:
        from analysis.report.html import render_html  # plotly and the page's scripts: only for the page

        _emit(render_html(report), args.out)
    return EXIT_OK


def cmd_compare(args) -> int:
    from analysis.report.build import cached_report
    from analysis.report.compare import with_flags
    from analysis.report.html import render_comparison_page
    from analysis.report.verdict import with_verdicts
    from analysis.report.version_order import in_version_order
    from analysis.runs.tasks import task_of_run

    workspace = _workspace(args)
    if args.registered:
        if args.runs:
            raise InputError("compare: give run ids or --registered NAME, not both")
        run_ids, labels = _registered_runs(workspace, args)
    else:
        if len(args.runs) < 1:
            raise InputError("compare needs run ids or --registered NAME")
        run_ids, labels = args.runs, None
    runs = [workspace.run(run_id) for run_id in run_ids]  # InputError for an unknown id
    label_of = dict(zip(run_ids, labels or [None] * len(run_ids)))
    runs = in_version_order(runs)  # v1, v2, ..., v10 whatever order they were given in
    labels = [label_of[run["id"]] for run in runs] if labels else None
    tasks = [task_of_run(workspace, run) for run in runs]
    if len({task.name for task in tasks}) > 1:
        by_task = {task.name: [run["id"] for run, t in zip(runs, tasks) if t.name == task.name] for task in tasks}
        kinds = "; ".join(f"{', '.join(ids)} audit {name} models" for name, ids in by_task.items())
        raise InputError(f"compare runs of one task: {kinds}; compare each task separately")
    if len(set(run_ids)) < len(run_ids):
        raise InputError("compare: a run is given twice; give each run once")
    names = labels or [run["name"] or run["id"] for run in runs]
    if len(set(names)) < len(names):  # two runs with one name: tell them apart by id
        names = [f"{name} ({run['id']})" for name, run in zip(names, runs)]
    stores = [workspace.store(run["id"]) for run in runs]
    reports = [cached_report(s, workspace) for s in stores]
    result = with_verdicts(with_flags(tasks[0].compare(stores, names), reports), names, reports)
    if args.format == "html":
        _emit(render_comparison_page(result), args.out)
    else:
        _emit(json.dumps(_json_safe(result), indent=1), args.out)
    return EXIT_OK


def _registered_runs(workspace, args) -> tuple[list[str], list[str]]:
    """Every version of an MLflow registered model audited on --data (an audit already done is reused), in
    version order; each new audit goes back to its version."""
    from analysis.runs.engine import execute_run
    from analysis.runs.tasks import check_method, task_of_model
    from analysis.store import mlflow_registry

    registry = mlflow_registry.client(args.mlflow_uri)
    found = mlflow_registry.versions(registry, args.registered)
    dataset_id = workspace.resolve_dataset(args.data, images=args.images) if args.data else None
    run_ids, labels = [], []
    for version in found:
        model_id = mlflow_registry.register(workspace, registry, version)
        if dataset_id is None:
            done = [r for r in workspace.runs() if r["model_id"] == model_id and r["status"] == "done"]
            if not done:
                raise InputError(f"compare --registered {args.registered}: {version.uri} has no audit in this "
                                 "workspace yet; pass --data DATASET to audit every version on it")
            run_id = done[-1]["id"]
        else:
            task = task_of_model(workspace.model(model_id))
            method = args.method or task.default_method
            check_method(method, task.name)
            params = task.new_run_params({"target": "pred"})
            run_id = workspace.create_run(model_id, dataset_id, method, params, args.n, args.seed, version.label)
            if workspace.run(run_id)["status"] != "done":
                print(f"auditing {version.label} ...", file=sys.stderr)
                execute_run(workspace, run_id, device=args.device, progress=False)
                _write_back(workspace, run_id)
        run_ids.append(run_id)
        labels.append(version.label)
    return run_ids, labels


def cmd_check(args) -> int:
    """The verdict as a CI gate: one line with the verdict, a line per finding or reason, then what a clear
    verdict could not see. With --fail-on-flags: exit 3 flagged, 4 cannot judge, 0 only when clear."""
    from analysis.report.build import cached_report
    from analysis.report.records import Report

    report = Report.from_json(cached_report(args.run, _workspace(args)))
    verdict = report.verdict
    print(f"verdict: {verdict.label.lower()}")
    for finding in report.findings:
        lift = ("" if finding.kind == "property" else ", lift not measured" if finding.lift is None
                else f", lift {finding.lift:.2f}")
        print(f"{finding.severity}: {finding.kind} on {'property' if finding.kind == 'property' else 'region'} "
              f"{finding.subject!r}{' (class ' + finding.slice.target + ')' if finding.slice.target else ''}"
              f"{lift}: {finding.headline}")
    if not report.findings:
        print("no shortcut flagged")
    if verdict.status != "flagged":
        for reason in verdict.reasons:
            print(f"  {reason}")
    for blind in verdict.not_tested:
        print(f"  not tested: {blind}")
    if not args.fail_on_flags:
        return EXIT_OK
    return {"flagged": EXIT_FLAGGED, "cannot_judge": EXIT_CANNOT_JUDGE}.get(verdict.status, EXIT_OK)


def cmd_demo(args) -> int:
    from analysis.demo.build import DemoIncomplete, build_demo, demo_plan, is_built
    from analysis.demo.status import read_status, write_status

    workspace = _workspace(args)
    if is_built(workspace, demo_plan(**_demo_choice(args))):  # nothing registered again, nothing computed
        print(workspace.root)
        return EXIT_OK
    status = read_status(workspace.root) or {}
    if status.get("state") == "building" and status.get("pid") != os.getpid():
        raise InputError(f"a demo build is already running on {workspace.root} (pid {status['pid']}); "
                         "the dashboard shows its progress")
    write_status(workspace.root, arguments=_demo_arguments(args))  # what the dashboard's Resume starts again
    try:
        build_demo(workspace, **_demo_choice(args), log=lambda line: print(line, file=sys.stderr), record=True)
    except DemoIncomplete as exc:
        print(f"saliency-audit: demo incomplete: {exc}; run it again to retry those audits", file=sys.stderr)
        return 1
    print(workspace.root)
    return EXIT_OK


def _demo_choice(args) -> dict:
    """build_demo's keywords from the demo options given (none: the whole demo)."""
    def listed(value, kind=str):
        return tuple(kind(item) for item in value.split(",") if item.strip()) if value else None

    choice = {"scenarios": listed(args.scenarios), "versions": listed(args.versions, int),
              "methods": listed(args.methods), "n": args.images}
    return {key: value for key, value in choice.items() if value is not None}


def _demo_arguments(args) -> list[str]:
    """The demo options again, for the background builder's command line."""
    return [part for option in ("scenarios", "versions", "methods", "images") if getattr(args, option) is not None
            for part in (f"--{option}", str(getattr(args, option)))]


def cmd_dashboard(args) -> int:
    workspace = _workspace(args)
    if args.demo:  # the builder finds a finished demo in seconds and exits; the dashboard does not wait
        from analysis.demo.status import LOG_FILE, start_build

        pid = start_build(workspace.root, _demo_arguments(args))
        print(f"demo: checked and built in the background (pid {pid}, log {workspace.root / LOG_FILE}); "
              "the dashboard shows its progress", file=sys.stderr)
    if importlib.util.find_spec("dashboard") is None:
        raise InputError("dashboard not available in this installation; reinstall with `pip install .`")
    env = {**os.environ, ENV_VAR: str(workspace.root.resolve())}
    sys.stdout.flush()
    sys.stderr.flush()
    # The dashboard is its own program (the layer above this one): this process becomes it, so a SIGTERM
    # sent to `saliency-audit dashboard` reaches Streamlit itself.
    os.execve(sys.executable, [sys.executable, "-m", "dashboard.launch", "--port", str(args.port)], env)


# -- helpers ------------------------------------------------------------------------------------------
def _workspace(args):
    from analysis.store.workspace import Workspace

    return Workspace(args.workspace)


def _parse_params(pairs: list[str]) -> dict[str, Any]:
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InputError(f"--param {pair!r}: write KEY=VALUE, e.g. --param n_samples=50")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


def _json_safe(value):
    """Strict JSON: NaN/inf become null (a region absent from every image has no lift)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        return _json_safe(value.item())
    return value


def _emit(text: str, out: str | None) -> None:
    if out:
        Path(out).write_text(text if text.endswith("\n") else text + "\n")
        print(out, file=sys.stderr)
    else:
        print(text)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())

"""Models kept in an MLflow model registry: `models:/NAME/VERSION` and `models:/NAME@ALIAS` as a model source,
a registered model's versions as a retraining series, and each audit's results written back to its version.

MLflow's own client does the talking (tracking URI from `--mlflow-uri` or `MLFLOW_TRACKING_URI`), so any
backend a team runs (a tracking server, Databricks, a local `mlruns` folder) works the same.

What a version must hold, in the artifacts its source points at: one model file in a format the tool loads
(`.pt2`, a state dict `.pt`/`.pth`/`.safetensors` with `architecture` in the card, `.onnx`) and the card,
either as a `model.json` artifact or as the version tag `saliency_audit.card` (the card as JSON; the tag wins).
An `mlflow.pytorch` model saved with `serialization_format="pickle"` is a pickle of the whole module: loading
it runs code, so it is refused with the fix (log a state dict or a .pt2); one saved as "pt2" is a torch.export
file and loads like any .pt2 (its card then comes from the tag). Downloading files runs
nothing; the model is loaded later, in the worker, with the same format rules as a file.

Sources are fenced (`fetch_version`): a version is read through the registry's artifact repository into the
workspace's own temp area (`<workspace>/tmp`, removed afterwards, swept after a kill -9), at most
`SALIENCY_AUDIT_MLFLOW_MAX_BYTES` (default 2 GiB; checked on the listing before anything is fetched). A
source that is a path on this machine (`file:///etc`, `/proc/self`, `file:///`, or a run whose artifacts
live in a local folder) is read only when it lies inside the artifact store: the version's run's artifact
folder, a local tracking store's folder, or a folder named in `SALIENCY_AUDIT_MLFLOW_ARTIFACT_ROOTS`; and only
when every entry under it is a plain file or folder (a symlink, device or /proc file is refused). Each
refusal comes before the first byte is copied.

Each audit goes back as its own record: a run nested under the version's run (a version registered without
one gets a results run in experiment `saliency-audit`), named `method · dataset · n=N`, with the method, dataset
name and hash, n, seed and run parameters as params, the report (JSON and HTML) under `saliency_audit/`, and
metrics named `saliency_audit.<method>.*`, linked to the version's MLflow 3 LoggedModel and the dataset when
there is one. So a second audit (another method, dataset or n) sits beside the first instead of overwriting
it, and a team filters audits with `params.method = 'gradcam'`. The version's tags summarise the latest audit
per method (`saliency_audit.<method>.flags`, `.flagged_regions`, `.verdict`, `.run`, `.mlflow_run`) and of any
method (`saliency_audit.flags`, ...), so the registry page shows which versions carry a flagged shortcut.
The record is keyed by the audit's workspace run id: a reused audit finds its finished record and logs nothing.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import stat
import tempfile
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from analysis.store.temps import temp_folder
from explainers.errors import InputError

URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[\w.-]+))$")
CARD_TAG = "saliency_audit.card"
MODEL_SUFFIXES = (".pt2", ".onnx", ".safetensors", ".pt", ".pth")  # preference order in one version's files
INSTALL_HINT = "pip install 'saliency-audit[mlflow]'"
MAX_BYTES_ENV = "SALIENCY_AUDIT_MLFLOW_MAX_BYTES"
DEFAULT_MAX_BYTES = 2 * 1024 ** 3
ROOTS_ENV = "SALIENCY_AUDIT_MLFLOW_ARTIFACT_ROOTS"  # extra local artifact stores, os.pathsep-separated
REMOTE_TRACKING = ("http", "https", "databricks", "databricks-uc", "uc")


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: int
    run_id: str | None
    aliases: tuple[str, ...]
    tags: dict
    tracking_uri: str

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}" + (f" @{','.join(self.aliases)}" if self.aliases else "")


def is_registry_uri(value) -> bool:
    return isinstance(value, str) and value.startswith("models:/")


def client(tracking_uri: str | None = None):
    """An `MlflowClient` for `tracking_uri` (default `MLFLOW_TRACKING_URI`)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    try:
        from mlflow import MlflowClient
    except ImportError:
        raise InputError(f"models:/ URIs need MLflow: {INSTALL_HINT}") from None
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise InputError("models:/ URIs need a tracking server: pass --mlflow-uri URI or set MLFLOW_TRACKING_URI")
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def resolve(mlflow_client, uri: str) -> RegisteredVersion:
    """The version `uri` names (`models:/NAME/VERSION` or `models:/NAME@ALIAS`), or an InputError with the fix."""
    match = URI.match(uri)
    if match is None:
        raise InputError(f"--model {uri}: use models:/NAME/VERSION or models:/NAME@ALIAS")
    name = match["name"]
    try:
        found = (mlflow_client.get_model_version(name, match["version"]) if match["version"]
                 else mlflow_client.get_model_version_by_alias(name, match["alias"]))
    except Exception as exc:  # MlflowException / RestException; the server's own words name the problem
        raise InputError(f"--model {uri}: {_mlflow_message(exc)} (registry {mlflow_client.tracking_uri})") from None
    return _version(found, mlflow_client.tracking_uri)


def versions(mlflow_client, name: str) -> list[RegisteredVersion]:
    """Every version of a registered model, oldest first (version numbers are the retraining order)."""
    try:
        found = mlflow_client.search_model_versions(f"name='{name}'")
    except Exception as exc:
        raise InputError(f"registered model {name!r}: {_mlflow_message(exc)}") from None
    if not found:
        raise InputError(f"registered model {name!r} has no versions in {mlflow_client.tracking_uri}; check the "
                         "name (MLflow's Models page lists them)")
    by_version: dict[int, list[str]] = {}  # version search results carry no aliases; the registered model does
    for alias, number in (mlflow_client.get_registered_model(name).aliases or {}).items():
        by_version.setdefault(int(number), []).append(alias)
    return sorted((_version(v, mlflow_client.tracking_uri, by_version.get(int(v.version))) for v in found),
                  key=lambda v: v.version)


def register(workspace, mlflow_client, version: RegisteredVersion, *, max_bytes: int | None = None) -> str:
    """Fetch a version's model and card (fenced: `fetch_version`), register them in the workspace, remember
    where they came from."""
    with temp_folder(workspace.root / "tmp", "mlflow") as tmp:
        folder = fetch_version(mlflow_client, version, tmp / "files", max_bytes=max_bytes)
        model_file, card = model_files(folder, version)
        card = {**card, "name": version.label.split(" @")[0]}
        card_file = tmp / "saliency-audit-card.json"
        card_file.write_text(json.dumps(card))
        model_id = workspace.register_model(model_file, card_file)
    workspace.set_model_source(model_id, {"uri": version.uri, "tracking_uri": version.tracking_uri,
                                          "name": version.name, "version": version.version,
                                          "aliases": list(version.aliases), "run_id": version.run_id})
    return model_id


def model_files(folder: Path, version: RegisteredVersion) -> tuple[Path, dict]:
    """(the model file, the card) among a version's downloaded files."""
    mlmodel = folder / "MLmodel"
    flavour = mlmodel.is_file() and re.search(r"^\s+pytorch:", mlmodel.read_text(errors="replace"), re.M)
    exported = sorted(folder.rglob("*.pt2"))  # mlflow.pytorch's serialization_format="pt2": a torch.export file
    if flavour and not exported:
        raise InputError(f"{version.uri} is an mlflow.pytorch model: a pickle of the whole module, which runs code "
                         "when loaded; log it again with mlflow.pytorch.log_model(model, ..., serialization_format="
                         "'pt2', input_example=x) with x a batch of 2 images (a dynamic batch), or log the weights "
                         "(mlflow.log_artifact of model.safetensors, with model.json beside it) and register that")
    candidates = exported if flavour else [
        path for suffix in MODEL_SUFFIXES for path in sorted(folder.rglob(f"*{suffix}"))]
    if not candidates:
        raise InputError(f"{version.uri}: no model file among its artifacts ({_listing(folder)}); log a .pt2, a "
                         "state dict (.pt/.safetensors) or an .onnx file with model.json beside it")
    if CARD_TAG in version.tags:
        try:
            card = json.loads(version.tags[CARD_TAG])
        except json.JSONDecodeError as exc:
            raise InputError(f"{version.uri}: tag {CARD_TAG} is not valid JSON ({exc}); fix the tag") from None
    else:
        card_file = next(iter(sorted(folder.rglob("model.json"))), None)
        if card_file is None:
            raise InputError(f"{version.uri}: no model card; log model.json beside the model file or set the "
                             f"version tag {CARD_TAG} to the card's JSON")
        try:
            card = json.loads(card_file.read_text())
        except json.JSONDecodeError as exc:
            raise InputError(f"{version.uri}: its model.json is not valid JSON ({exc}); fix the file") from None
    if not isinstance(card, dict):
        raise InputError(f"{version.uri}: the model card must be a JSON object")
    return candidates[0], card


def log_results(mlflow_client, source: dict, report: dict, html: str) -> str:
    """One MLflow run per audit, nested under the version's run; returns its id. A second call with the same
    audit finds that run finished and logs nothing (reused audits do not append metric history)."""
    name, version = source["name"], str(source["version"])
    found = mlflow_client.get_model_version(name, version)
    parent = source.get("run_id") or _results_run(mlflow_client, name, version)
    audit = _audit_record(report)
    record = _find_record(mlflow_client, parent, audit["id"])
    if record is not None and record.info.status == "FINISHED":
        return record.info.run_id
    if record is None:
        record = mlflow_client.create_run(
            mlflow_client.get_run(parent).info.experiment_id, run_name=audit["name"],
            tags={"mlflow.parentRunId": parent, AUDIT_TAG: audit["id"], "saliency_audit.model": source["uri"],
                  **({"saliency_audit.verdict": audit["verdict"]} if audit["verdict"] else {})})
    record_id = record.info.run_id
    model_id = _logged_model_id(found)
    _log_record(mlflow_client, record_id, audit, report, html, model_id, set(record.data.metrics))
    mlflow_client.set_terminated(record_id)
    for key, value in _version_tags(audit, record_id).items():
        mlflow_client.set_model_version_tag(name, version, key, value)
    return record_id


AUDIT_TAG = "saliency_audit.audit_id"


def _audit_record(report: dict) -> dict:
    """What names, keys and summarises one audit, read through the report's typed records
    (`analysis.report.records.Report`: its findings and its verdict)."""
    from analysis.report.records import Report

    typed = Report.from_json(report)
    run = typed.run
    dataset = run.get("dataset") or {}
    method = str(run.get("method") or "unknown")
    n = int(run.get("n_images") or (report.get("metrics") or {}).get("n_images") or 0)
    return {"id": run["id"], "method": method, "n": n, "seed": run.get("seed"),
            "dataset": dataset.get("name") or "dataset", "dataset_hash": dataset.get("sha256") or "",
            "name": f"{method} · {dataset.get('name') or 'dataset'} · n={n}", "flags": typed.findings,
            "flagged": ",".join(sorted({f.subject for f in typed.findings})) or "none",
            "verdict": typed.verdict.status if typed.verdict else None}


def _logged_model_id(found) -> str | None:
    """The version's MLflow 3 LoggedModel: `model_id` where the registry keeps it, else its `models:/m-...` source
    (what `mlflow.register_model(model_info.model_uri, ...)` and `log_model(registered_model_name=)` record)."""
    match = re.match(r"^models:/(m-[0-9a-f]+)/?$", str(getattr(found, "source", "") or ""))
    return getattr(found, "model_id", None) or (match[1] if match else None)


def _find_record(mlflow_client, parent: str, audit_id: str):
    """The run already holding this audit under `parent`, or None."""
    experiment = mlflow_client.get_run(parent).info.experiment_id
    runs = mlflow_client.search_runs(
        [experiment], f"tags.mlflow.parentRunId = '{parent}' and tags.`{AUDIT_TAG}` = '{audit_id}'", max_results=1)
    return runs[0] if runs else None


def _log_record(mlflow_client, run_id: str, audit: dict, report: dict, html: str, model_id: str | None,
                already: set) -> None:
    """Params, dataset input, report artifacts and metrics of one audit run. Metrics carry the method in their
    names, the audited dataset, and the version's LoggedModel so its page lists them."""
    from mlflow.entities import Dataset, DatasetInput, LoggedModelInput, Metric, Param

    params = {"method": audit["method"], "dataset": audit["dataset"], "dataset_hash": audit["dataset_hash"],
              "n": str(audit["n"]), "seed": str(audit["seed"]), "audit_id": audit["id"],
              **{f"param.{k}": json.dumps(v) if not isinstance(v, str) else v
                 for k, v in sorted((report["run"].get("params") or {}).items())}}
    digest = audit["dataset_hash"][:16] or None  # MLflow keeps dataset digests short
    dataset_name = audit["dataset"] if digest else None
    mlflow_client.log_inputs(
        run_id, datasets=[DatasetInput(Dataset(audit["dataset"], digest, "local", json.dumps(
            {"sha256": audit["dataset_hash"]})))] if digest else None,
        models=[LoggedModelInput(model_id)] if model_id else None)
    now = int(time.time() * 1000)
    metrics = [Metric(key, value, now, 0, model_id=model_id, dataset_name=dataset_name, dataset_digest=digest)
               for key, value in _metrics(audit, report).items() if key not in already]
    mlflow_client.log_batch(run_id, metrics=metrics, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
    with tempfile.TemporaryDirectory(prefix="saliency-audit-") as tmp:
        folder = Path(tmp) / "saliency_audit"
        folder.mkdir()
        (folder / "report.json").write_text(json.dumps(report, indent=1, default=str))
        (folder / "report.html").write_text(html)
        mlflow_client.log_artifacts(run_id, str(folder), "saliency_audit")


def _metrics(audit: dict, report: dict) -> dict[str, float]:
    """`saliency_audit.<method>.flags`, `.accuracy` and `.lift.<region>` (overall rows, non-core regions)."""
    prefix = f"saliency_audit.{_metric_name(audit['method'])}"
    metrics = {f"{prefix}.flags": float(len(audit["flags"]))}
    accuracy = (report.get("metrics") or {}).get("accuracy")
    if isinstance(accuracy, (int, float)):
        metrics[f"{prefix}.accuracy"] = float(accuracy)
    for row in report.get("regions", []):
        if row.get("class") is None and row.get("group") is None and row.get("lift") is not None \
                and row.get("role") != "core":
            metrics[f"{prefix}.lift.{_metric_name(row['region'])}"] = float(row["lift"])
    return metrics


def _version_tags(audit: dict, record_id: str) -> dict[str, str]:
    """The latest audit per method (`saliency_audit.<method>.*`) and the latest audit of any method."""
    summary = {"flags": str(len(audit["flags"])), "flagged_regions": audit["flagged"], "run": audit["id"],
               "mlflow_run": record_id, "dataset": audit["dataset"], "n": str(audit["n"])}
    if audit["verdict"]:
        summary["verdict"] = audit["verdict"]
    method = _metric_name(audit["method"])
    return {**{f"saliency_audit.{method}.{k}": v for k, v in summary.items()},
            **{f"saliency_audit.{k}": v for k, v in summary.items()}, "saliency_audit.method": audit["method"]}


def max_download_bytes(max_bytes: int | None = None) -> int:
    """The cap on one version's files: `max_bytes`, else `$SALIENCY_AUDIT_MLFLOW_MAX_BYTES`, else 2 GiB."""
    if max_bytes is not None:
        return int(max_bytes)
    value = os.environ.get(MAX_BYTES_ENV, "").strip()
    if not value:
        return DEFAULT_MAX_BYTES
    try:
        return int(float(value))
    except ValueError:
        raise InputError(f"{MAX_BYTES_ENV}={value!r} is not a number of bytes; set it to e.g. 4e9") from None


def fetch_version(mlflow_client, version: RegisteredVersion, dest: Path, *, max_bytes: int | None = None) -> Path:
    """Copy the version's files into `dest` (created; inside the workspace's temp area), fenced.

    A local source is checked whole (inside an artifact store, plain files only, under the cap) and then
    copied by us, file by file, never following a link; any other source goes through MLflow's artifact
    repository for it (the server fences its own store), its listing checked against the cap first."""
    cap = max_download_bytes(max_bytes)
    try:
        location = _underlying(mlflow_client, mlflow_client.get_model_version_download_uri(
            version.name, str(version.version)), version.tracking_uri)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{version.uri}: could not find its files ({_mlflow_message(exc)})") from None
    local = _local_path(location)
    dest.mkdir(parents=True)
    if local is not None:
        files = _fenced_listing(local, _artifact_roots(mlflow_client, version), version, location, cap)
        _copy_plain_files(files, local, dest, version, cap)
        return dest
    try:
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        repo = get_artifact_repository(location, tracking_uri=version.tracking_uri)
        total = _listed_bytes(repo, "")
        if total > cap:
            raise InputError(_too_big(version, total, cap))
        repo.download_artifacts("", dst_path=str(dest))
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{version.uri}: could not download its files ({_mlflow_message(exc)})") from None
    got = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    if got > cap:  # a listing without sizes, or files that grew since
        raise InputError(_too_big(version, got, cap))
    return dest


def _underlying(mlflow_client, location: str, tracking_uri: str) -> str:
    """`runs:/` and logged-model `models:/m-ID` locations as the artifact URI they stand for, so a local
    folder behind them is fenced like any local source."""
    from mlflow.store.artifact.runs_artifact_repo import RunsArtifactRepository

    for _ in range(4):
        scheme = urllib.parse.urlparse(location).scheme
        if scheme == "runs":
            location = RunsArtifactRepository.get_underlying_uri(location, tracking_uri)
        elif scheme == "models":
            match = re.match(r"^models:/(m-[0-9a-f]+)(/.*)?$", location)
            if match is None:
                raise InputError(f"source {location}: a registry version pointing at another registry entry; "
                                 "register the model from a run's artifacts instead")
            location = mlflow_client.get_logged_model(match[1]).artifact_location.rstrip("/") + (match[2] or "")
        else:
            return location
    raise InputError(f"source {location}: too many levels of indirection; register the run's artifacts directly")


def _local_path(location: str) -> Path | None:
    """The path a `file:` or scheme-less location names on this machine, else None (a remote store)."""
    parsed = urllib.parse.urlparse(location)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            return None
        return Path(urllib.parse.unquote(parsed.path) or "/")
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and os.name == "nt"):
        return Path(location)
    return None


def _artifact_roots(mlflow_client, version: RegisteredVersion) -> list[Path]:
    """Real paths of the local folders that are this registry's artifact store."""
    roots = [Path(p) for p in os.environ.get(ROOTS_ENV, "").split(os.pathsep) if p.strip()]
    tracking = urllib.parse.urlparse(version.tracking_uri)
    if tracking.scheme in ("", "file"):  # a local `mlruns` folder: the store is that folder
        roots.append(_local_path(version.tracking_uri))
    if tracking.scheme not in REMOTE_TRACKING and version.run_id:  # a local backend's run folder
        try:
            run_root = _local_path(mlflow_client.get_run(version.run_id).info.artifact_uri)
        except Exception:
            run_root = None
        if run_root is not None:
            roots.append(run_root)
    return [Path(os.path.realpath(r)) for r in roots]


def _fenced_listing(local: Path, roots: list[Path], version: RegisteredVersion, location: str,
                    cap: int) -> list[Path]:
    """Every file under the local source, relative to it, after checking the whole tree: inside an artifact
    store root, only plain files and folders (never followed links), at most `cap` bytes."""
    real = Path(os.path.realpath(local))
    if not any(real == root or root in real.parents for root in roots):
        where = ", ".join(str(r) for r in roots) or "none on this machine"
        raise InputError(f"{version.uri}: refused: its source {location} is a path on this machine outside the "
                         f"registry's artifact store ({where}); nothing was copied. Register the version from a "
                         f"run's logged artifacts, or, if {real} really is an artifact store, add it to "
                         f"{ROOTS_ENV}")
    files, total = [], 0

    def refuse(path: Path, what: str):
        raise InputError(f"{version.uri}: refused: {path} in its source {location} is {what}, not a plain file; "
                         "nothing was copied. Log the model's files themselves as artifacts")

    def check(path: Path) -> os.stat_result:
        try:
            st = os.lstat(path)
        except OSError as exc:
            raise InputError(f"{version.uri}: its source {path} cannot be read ({exc.strerror}); check the "
                             "version's source") from None
        if stat.S_ISLNK(st.st_mode):
            refuse(path, "a symbolic link")
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
            refuse(path, "a device, socket or pipe")
        return st

    if stat.S_ISREG(check(local).st_mode):
        return [Path(local.name)]
    for folder, dirs, names in os.walk(local):
        for name in sorted(dirs) + sorted(names):
            path = Path(folder) / name
            st = check(path)
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
                if total > cap:
                    raise InputError(_too_big(version, total, cap, "at least "))
                files.append(path.relative_to(local))
    return files


def _copy_plain_files(files: list[Path], local: Path, dest: Path, version: RegisteredVersion, cap: int) -> None:
    """Copy the checked files, opening each without following links and refusing one that changed kind or
    grew past the cap since the check."""
    base = local.parent if local.is_file() else local
    total = 0
    for relative in files:
        source, target = base / relative, dest / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(source, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as src:
            if not stat.S_ISREG(os.fstat(src.fileno()).st_mode):
                raise InputError(f"{version.uri}: refused: {source} is no longer a plain file; check the source")
            with open(target, "wb") as out:
                shutil.copyfileobj(src, out)
                total += out.tell()
        if total > cap:
            raise InputError(_too_big(version, total, cap, "at least "))


def _listed_bytes(repo, path: str) -> int:
    total = 0
    for info in repo.list_artifacts(path):
        total += _listed_bytes(repo, info.path) if info.is_dir else int(info.file_size or 0)
    return total


def _too_big(version: RegisteredVersion, size: int, cap: int, prefix: str = "") -> str:
    return (f"{version.uri}: refused: its files are {prefix}{size:,} bytes, over the download cap of {cap:,} "
            f"bytes; nothing was kept. Raise the cap with {MAX_BYTES_ENV}=BYTES if the model really is that big")


def _results_run(mlflow_client, name: str, version: str) -> str:
    """A version registered without a run gets one run (in experiment `saliency-audit`) for its results."""
    tags = mlflow_client.get_model_version(name, version).tags
    if "saliency_audit.results_run" in tags:
        return tags["saliency_audit.results_run"]
    experiment = mlflow_client.get_experiment_by_name("saliency-audit")
    experiment_id = experiment.experiment_id if experiment else mlflow_client.create_experiment("saliency-audit")
    run = mlflow_client.create_run(experiment_id, run_name=f"{name} v{version}")
    mlflow_client.set_terminated(run.info.run_id)
    mlflow_client.set_model_version_tag(name, version, "saliency_audit.results_run", run.info.run_id)
    return run.info.run_id


def _version(found, tracking_uri: str, aliases=None) -> RegisteredVersion:
    return RegisteredVersion(found.name, int(found.version), found.run_id or None,
                             tuple(sorted(aliases if aliases is not None else found.aliases or ())),
                             dict(found.tags or {}), tracking_uri)


def _metric_name(region: str) -> str:
    return re.sub(r"[^\w.\- /]", "_", str(region))


def _listing(folder: Path) -> str:
    names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    return ", ".join(names[:8]) + (", ..." if len(names) > 8 else "") if names else "none"


def _mlflow_message(exc: Exception) -> str:
    text = getattr(exc, "message", None) or str(exc)
    return text.strip().splitlines()[0][:300] if text.strip() else type(exc).__name__

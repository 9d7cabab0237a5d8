"""Soak: one fresh workspace shared by CLI audits, a dashboard served to several browser sessions, and workers
killed by SIGKILL.

- Several `saliency-audit run` processes, three at a time, registering the same model and dataset at once, each
  SIGKILLed with probability 3/4 at a random moment (registration, explaining, evidence, report) and started
  again with the same command.
- Meanwhile `streamlit run` (the product's launch command, SALIENCY_AUDIT_WORKSPACE set) serves one headless
  Chromium with three contexts (three users, interleaved on one event loop): a *reader* that opens every page
  (Overview, Bias report of a finished audit, Compare, Explainer trust, New audit, Upload) over and over; an
  *uploader* that uploads a model and a dataset zip, starts an audit from New audit (whose worker is SIGKILLed
  and resumed from the page), and labels a region in its Bias report; a *manager* that uploads a spare dataset
  and deletes it (no audit uses it) and renames the uploaded model.

Afterwards every audit (the dashboard's included) equals an undisturbed run of it in a second workspace, the
catalog passes its integrity and invariant checks, no temp file or staged upload is left, and no page visited
showed a Streamlit exception (nor the server's log a traceback). Bounded: four CLI audits of 48 images and one
dashboard audit of 16, hang guards on every wait and on the whole. The load it held is printed (and recorded in
bench/README.md).
"""
from __future__ import annotations

import asyncio
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest

from analysis.cli import main
from analysis.report.build import cached_report
from analysis.store.workspace import Workspace
from dashboard.launch import free_port, streamlit_command, wait_until_serving
from tests.dashboard.workspace_builder import write_real_model
from tests.runs.helpers import write_dataset

from .checks import assert_catalog_and_shards_sound, assert_catalog_invariants, assert_same_results

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.timeout(900)]
REPO = Path(__file__).resolve().parents[2]
N = 48
JOBS = [("gradcam", "pred", 0), ("gradcam", "label", 1), ("saliency", "pred", 0), ("gradcam", "pred", 2)]
CONCURRENT = 3
N_DASHBOARD = 16  # the audit started from the New audit page
GUARD_S = 600  # the concurrent phase: CLI audits and browser sessions
WAIT_MS = 120_000  # one page or one action, on two loaded cores
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
PAGES = {"overview": "Saliency Audit", "report": "Bias report", "compare": "Compare versions",
         "trust": "Explainer trust", "new-audit": "New audit", "upload": "Upload"}


def _arguments(model, data, root, job) -> list[str]:
    method, target, seed = job
    return ["run", "--model", str(model), "--data", str(data), "--method", method, "--target", target, "--n", str(N),
            "--seed", str(seed), "--batch-size", "4", "--workspace", str(root), "--no-progress"]


class CliAudits:
    """The CLI half, in a thread: JOBS run three at a time, killed at random and started again until done."""

    def __init__(self, model, data, root, logs: Path, rng: random.Random):
        self.model, self.data, self.root, self.logs, self.rng = model, data, root, logs, rng
        self.finished: dict[int, str] = {}  # job -> run id, as each finishes (the reader opens their reports)
        self.kills: list[tuple[int, float]] = []
        self.starts, self.wall, self.error = 0, 0.0, None
        self.stop, self.done = threading.Event(), threading.Event()

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            self.error = exc
        finally:
            self.done.set()

    def _run(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
        queue, running = list(range(len(JOBS))), {}
        began = time.monotonic()
        try:
            while queue or running:
                assert not self.stop.is_set(), "stopped: the browser sessions failed"
                assert time.monotonic() - began < GUARD_S, f"CLI audits still running after {GUARD_S} s: {running}"
                while queue and len(running) < CONCURRENT:
                    k = queue.pop(0)
                    log = open(self.logs / f"job{k}.log", "ab")
                    proc = subprocess.Popen([sys.executable, "-m", "analysis.cli",
                                             *_arguments(self.model, self.data, self.root, JOBS[k])],
                                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=log)
                    already_killed = any(job == k for job, _ in self.kills)
                    kill_at = (None if already_killed or self.rng.random() < 0.25
                               else time.monotonic() + self.rng.uniform(0.5, 12.0))
                    running[k] = (proc, log, kill_at)
                    self.starts += 1
                for k, (proc, log, kill_at) in list(running.items()):
                    if proc.poll() is None and kill_at is not None and time.monotonic() >= kill_at:
                        proc.send_signal(signal.SIGKILL)
                        proc.wait()
                        self.kills.append((k, round(kill_at - began, 1)))
                    if proc.poll() is None:
                        continue
                    out = proc.stdout.read().decode()
                    log.close()
                    del running[k]
                    if proc.returncode == -signal.SIGKILL:
                        queue.append(k)  # the same command again: it resumes
                        continue
                    assert proc.returncode == 0, (self.logs / f"job{k}.log").read_text()[-3000:]
                    self.finished[k] = out.strip().splitlines()[-1]
                time.sleep(0.05)
        finally:
            for proc, log, _ in running.values():
                proc.kill()
                proc.wait()
                log.close()
            self.wall = time.monotonic() - began


class Sessions:
    """The browser half: three users of one dashboard, interleaved on one event loop."""

    def __init__(self, url: str, root: Path, cli: CliAudits, files: dict, rng: random.Random, shots: Path):
        self.url, self.root, self.cli, self.files, self.rng, self.shots = url, root, cli, files, rng, shots
        self.loads: dict[str, int] = {}  # page -> loads checked for exceptions
        self.visited: set[tuple[str, str]] = set()  # (session, page)
        self.audit_started = asyncio.Event()
        self.dashboard_run: str | None = None
        self.dashboard_kill: str | None = None
        self.dashboard_done = asyncio.Event()
        self.actions: list[str] = []

    # -- pages ------------------------------------------------------------------------------------------
    async def settled(self, page, who: str, where: str) -> None:
        """The script has run to its end; no exception on the page."""
        from playwright.async_api import expect

        await page.wait_for_timeout(300)  # a rerun just asked for has started
        await expect(page.locator("[data-testid='stApp']")).to_have_attribute(
            "data-test-script-state", "notRunning", timeout=WAIT_MS)
        await page.wait_for_timeout(300)
        count = await page.locator("[data-testid='stException']").count()
        if count:
            await page.screenshot(path=str(self.shots / f"exception-{who}-{where}.png"), full_page=True)
            text = await page.locator("[data-testid='stException']").first.inner_text()
            raise AssertionError(f"{who} on {where}: a Streamlit exception: {text[:2000]}")

    async def visit(self, page, who: str, path: str, query: str = "") -> None:
        from playwright.async_api import expect

        await page.goto(f"{self.url}/{path}{query}", timeout=WAIT_MS)
        await expect(page.get_by_role("heading", name=PAGES[path], exact=True).first).to_be_visible(timeout=WAIT_MS)
        await self.settled(page, who, path)
        self.loads[path] = self.loads.get(path, 0) + 1
        self.visited.add((who, path))

    async def upload(self, page, who: str, index: int, path: Path) -> None:
        """A file into the page's `index`th uploader, once the page is idle (a file chosen while the page
        redraws after the previous one is dropped by the browser, as a person choosing that fast would see)."""
        from playwright.async_api import expect

        await self.settled(page, who, f"upload: before {path.name}")
        await page.locator("input[type='file']").nth(index).set_input_files(str(path))
        uploader = page.locator("[data-testid='stFileUploader']").nth(index)
        await expect(uploader.get_by_text(path.name, exact=True)).to_be_visible(timeout=WAIT_MS)
        await self.settled(page, who, f"upload: {path.name}")

    def finished_run(self) -> str | None:
        runs = list(self.cli.finished.values())
        return self.rng.choice(runs) if runs else None

    async def every_page(self, page, who: str) -> None:
        for path in PAGES:
            run = self.finished_run() if path in ("report", "trust") else None
            await self.visit(page, who, path, f"?run={run}" if run else "")
            if path == "report" and run:
                await page.get_by_role("tab", name="Attention by region").click()
                await self.settled(page, who, "report: attention")

    # -- the three users --------------------------------------------------------------------------------
    async def reader(self, page) -> None:
        """Every page, again and again, while the audits run (and once more after)."""
        while True:
            last = self.cli.done.is_set() and self.dashboard_done.is_set()
            await self.every_page(page, "reader")
            if last:
                return

    async def uploader(self, page) -> None:
        from playwright.async_api import expect

        await self.visit(page, "uploader", "upload")
        await self.upload(page, "uploader", 0, self.files["model"])
        await self.upload(page, "uploader", 1, self.files["card"])
        await expect(page.get_by_label("Classes, one per line", exact=False)).to_have_value("cat\ndog",
                                                                                         timeout=WAIT_MS)
        await page.get_by_label("Name", exact=True).fill("soaknet")
        await page.get_by_label("Version (optional)").fill("v1")
        await page.get_by_label("Version (optional)").press("Enter")
        await self.settled(page, "uploader", "upload: card")
        await page.get_by_role("button", name="Check and register the model").click()
        await expect(page.get_by_text("Registered model soaknet v1", exact=False)).to_be_visible(timeout=WAIT_MS)
        await self.settled(page, "uploader", "upload: model")
        self.actions.append("uploaded a model")

        await self.upload(page, "uploader", 2, self.files["zip"])
        await page.get_by_role("button", name="Check and register the dataset").click()
        await expect(page.get_by_text(f"Registered dataset pets16 with {N_DASHBOARD} images")).to_be_visible(
            timeout=WAIT_MS)
        await self.settled(page, "uploader", "upload: dataset")
        self.actions.append("uploaded a dataset zip")

        await self.visit(page, "uploader", "new-audit")
        await expect(page.get_by_text("soaknet", exact=False).first).to_be_visible(timeout=WAIT_MS)  # newest model
        await choose(page, "Dataset", "pets16")
        await self.settled(page, "uploader", "new-audit: dataset")
        number = page.get_by_label("Images to sample")
        await number.fill(str(N_DASHBOARD))
        await number.press("Enter")
        await self.settled(page, "uploader", "new-audit: n")
        await page.get_by_role("button", name="Start audit").click()
        await expect(page.get_by_text("Started 1 audit", exact=False)).to_be_visible(timeout=WAIT_MS)
        self.actions.append("started an audit")
        self.audit_started.set()
        await self.kill_and_resume(page)
        await expect(page.get_by_role("link", name="Open report").first).to_be_visible(timeout=4 * WAIT_MS)
        await self.settled(page, "uploader", "new-audit: done")

        await self.visit(page, "uploader", "report", f"?run={self.dashboard_run}")
        await page.get_by_role("tab", name="Flags").click()
        await expect(page.get_by_role("button", name="Save label")).to_be_visible(timeout=WAIT_MS)
        await page.get_by_label("Note (optional)").fill("soak label")
        await page.get_by_label("Note (optional)").press("Enter")
        await self.settled(page, "uploader", "report: note")
        await page.get_by_role("button", name="Save label").click()
        await expect(page.get_by_role("button", name=re.compile("^Remove the label on"))).to_be_visible(
            timeout=WAIT_MS)
        await self.settled(page, "uploader", "report: labelled")
        self.actions.append("labelled a region")
        self.dashboard_done.set()
        await self.every_page(page, "uploader")

    async def kill_and_resume(self, page) -> None:
        """SIGKILL the audit's worker at a random moment, then resume it with the page's Resume button."""
        from playwright.async_api import expect

        ws = Workspace(self.root)
        try:
            (run,) = [r for r in ws.runs() if r["model_name"] in ("soaknet", "soaknet-renamed")]
            self.dashboard_run = run["id"]
            await asyncio.sleep(self.rng.uniform(2.0, 10.0))
            run = ws.run(self.dashboard_run)
            if run["status"] != "running":
                self.dashboard_kill = f"not killed: {run['status']} before the kill"
                return
            os.kill(run["pid"], signal.SIGKILL)
            await self._status_becomes(lambda status: status == "interrupted", timeout=20.0)
            run = ws.run(self.dashboard_run)
            self.dashboard_kill = f"killed at {run['n_done']} / {N_DASHBOARD} images, stage {run.get('stage')}"
        finally:
            ws.close()
        for attempt in (1, 2):  # on a loaded machine a click can land while the 2-s progress fragment reruns
            await expect(page.get_by_role("button", name="Resume")).to_be_visible(timeout=WAIT_MS)
            await page.get_by_role("button", name="Resume").click()
            if await self._status_becomes(lambda status: status != "interrupted", timeout=60.0):
                break
        self.actions.append("resumed the killed audit" + (" (second click)" if attempt == 2 else ""))

    async def _status_becomes(self, test, timeout: float) -> bool:
        """Whether the dashboard's audit reaches a status `test` accepts within `timeout` s (polled every 0.1 s)."""
        ws = Workspace(self.root)
        try:
            for _ in range(int(timeout / 0.1)):
                if test(ws.run(self.dashboard_run)["status"]):
                    return True
                await asyncio.sleep(0.1)
            return False
        finally:
            ws.close()

    async def manager(self, page) -> None:
        from playwright.async_api import expect

        await self.visit(page, "manager", "upload")
        await self.upload(page, "manager", 2, self.files["spare"])
        await page.get_by_role("button", name="Check and register the dataset").click()
        await expect(page.get_by_text("Registered dataset spare with 8 images")).to_be_visible(timeout=WAIT_MS)
        await self.settled(page, "manager", "upload: dataset")
        self.actions.append("uploaded a spare dataset")

        await page.get_by_text("a dataset", exact=True).click()
        await self.settled(page, "manager", "manage: datasets")
        await choose(page, "Which", "spare")
        await self.settled(page, "manager", "manage: spare")
        await page.get_by_role("button", name="Delete…").click()
        await page.get_by_role("button", name="Yes, delete").click()
        await expect(page.get_by_text("Deleted spare.")).to_be_visible(timeout=WAIT_MS)
        await self.settled(page, "manager", "manage: deleted")
        self.actions.append("deleted a dataset no audit uses")

        await self.every_page(page, "manager")
        # the rename waits for the audit to start: a rename while another session has the model chosen on
        # New audit empties that choice there (its label changed), so that user would have to choose it again
        await asyncio.wait_for(self.audit_started.wait(), timeout=4 * WAIT_MS / 1000)
        await self.visit(page, "manager", "upload")
        await page.get_by_text("a model", exact=True).click()
        await self.settled(page, "manager", "manage: models")
        await choose(page, "Which", "soaknet")
        await self.settled(page, "manager", "manage: soaknet")
        new_name = page.get_by_label("New name")
        await expect(new_name).to_have_value("soaknet", timeout=WAIT_MS)  # the chosen model's own field
        await new_name.fill("soaknet-renamed")
        await new_name.press("Enter")
        await self.settled(page, "manager", "manage: name")
        await expect(new_name).to_have_value("soaknet-renamed", timeout=WAIT_MS)
        await page.get_by_role("button", name="Rename").click()
        await expect(page.get_by_text("Renamed to soaknet-renamed.")).to_be_visible(timeout=WAIT_MS)
        await self.settled(page, "manager", "manage: renamed")
        self.actions.append("renamed a model")
        await self.every_page(page, "manager")

    async def run(self) -> None:
        from playwright.async_api import async_playwright

        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                users = (self.reader, self.uploader, self.manager)
                pages = []
                for _ in users:
                    context = await browser.new_context(viewport={"width": 1400, "height": 1800})
                    pages.append(await context.new_page())
                try:
                    await asyncio.gather(*(user(page) for user, page in zip(users, pages)))
                except BaseException:
                    for who, page in zip(("reader", "uploader", "manager"), pages):
                        await page.screenshot(path=str(self.shots / f"failed-{who}.png"), full_page=True)
                    raise
            finally:
                await browser.close()


async def choose(page, label: str, option: str) -> None:
    """Pick `option` in the selectbox labelled `label`: type to filter, Enter to take the first match."""
    from playwright.async_api import expect

    box = page.locator("[data-testid='stSelectbox']").filter(has=page.get_by_text(label, exact=True))
    await box.locator("input").click()
    await page.keyboard.type(option)
    await page.keyboard.press("Enter")
    await expect(box.get_by_role("combobox")).to_have_value(re.compile(re.escape(option)), timeout=WAIT_MS)


def _zip(folder: Path, target: Path) -> Path:
    with zipfile.ZipFile(target, "w") as archive:
        for path in sorted(folder.rglob("*")):
            archive.write(path, path.relative_to(folder).as_posix())
    return target


def _reference_run(ref_root: Path, arguments: list[str], capture: Path) -> str:
    with open(capture, "w") as out:
        stdout, sys.stdout = sys.stdout, out
        try:
            assert main(arguments) == 0
        finally:
            sys.stdout = stdout
    return capture.read_text().strip().splitlines()[-1]


def test_cli_audits_and_browser_sessions_killed_at_random_lose_nothing(tmp_path, model_file):
    data = write_dataset(tmp_path / "data", n=N, seed=27, corrupt=(9,))
    own = write_dataset(tmp_path / "pets16", n=N_DASHBOARD, seed=5)
    files = {"model": write_real_model(tmp_path / "own_model"), "zip": _zip(own, tmp_path / "pets16.zip"),
             "spare": _zip(write_dataset(tmp_path / "spare", n=8, seed=9), tmp_path / "spare.zip")}
    files["card"] = files["model"].parent / "model.json"
    root, reference = tmp_path / "ws", tmp_path / "reference"
    shots = REPO / "test-artifacts" / "soak"
    shots.mkdir(parents=True, exist_ok=True)
    rng = random.Random(27)

    port = free_port()
    env = dict(os.environ, SALIENCY_AUDIT_WORKSPACE=str(root), PYTHONPATH=str(REPO))
    server_log = tmp_path / "streamlit.log"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with open(server_log, "wb") as log:
        server = subprocess.Popen(streamlit_command(port, {}), cwd=elsewhere, env=env, stdout=log,
                                  stderr=subprocess.STDOUT)
    cli = CliAudits(model_file, data, root, tmp_path, rng)
    sessions = Sessions(f"http://127.0.0.1:{port}", root, cli, files, random.Random(28), shots)
    thread = threading.Thread(target=cli.run, name="cli-audits")
    try:
        wait_until_serving(port, timeout=120)
        began = time.monotonic()
        thread.start()
        try:
            asyncio.run(asyncio.wait_for(sessions.run(), timeout=GUARD_S))
        except BaseException:
            cli.stop.set()
            raise
        finally:
            thread.join(timeout=GUARD_S)
        assert not thread.is_alive(), "the CLI audits did not end"
        if cli.error is not None:
            raise cli.error
        wall = time.monotonic() - began
    finally:
        server.terminate()
        server.wait(timeout=30)
    log_text = server_log.read_text(errors="replace")
    assert "Traceback" not in log_text, log_text[-5000:]

    ws, ref = Workspace(root), Workspace(reference)
    explained = 0
    for k, job in enumerate(JOBS):
        ref_id = _reference_run(reference, _arguments(model_file, data, reference, job), tmp_path / f"ref{k}.out")
        run_id = cli.finished[k]
        assert ref_id == run_id  # the same identity in both workspaces
        run = ws.run(run_id)
        assert run["status"] == "done" and run["n_done"] == N - 1 and run["n_skipped"] == 1, run
        assert_catalog_and_shards_sound(ws, run_id)
        assert_same_results(ws, run_id, ref, ref_id)
        report, ref_report = cached_report(ws.store(run_id), ws), cached_report(ref.store(ref_id), ref)
        assert json.dumps(report["flags"], sort_keys=True) == json.dumps(ref_report["flags"], sort_keys=True)
        explained += run["n_done"]

    # the dashboard's audit: registered from the uploads, killed, resumed from the page; equal to a CLI run
    run = ws.run(sessions.dashboard_run)
    assert run["status"] == "done" and run["n_done"] == N_DASHBOARD and run["n_skipped"] == 0, run
    model = ws.model(run["model_id"])
    assert (model["name"], model["version"]) == ("soaknet-renamed", "v1"), model
    ref_model = ref.register_model(root / model["path"])
    ref_dataset = ref.register_dataset(files["zip"])
    ref_id = ref.create_run(ref_model, ref_dataset, run["method"], run["params"], n=run["n"], seed=run["seed"])
    assert ref_id == sessions.dashboard_run
    _reference_run(reference, ["run", "--resume-id", ref_id, "--workspace", str(reference), "--batch-size", "32",
                               "--no-progress"], tmp_path / "ref-dashboard.out")
    assert_catalog_and_shards_sound(ws, sessions.dashboard_run)
    assert_same_results(ws, sessions.dashboard_run, ref, ref_id)
    explained += run["n_done"]
    labels = ws._conn.execute("SELECT region, verdict, note FROM labels WHERE dataset_id=?",
                              (run["dataset_id"],)).fetchall()
    assert [tuple(label)[1:] for label in labels] == [("shortcut", "soak label")], [tuple(r) for r in labels]
    kept = {ws.dataset(ws.run(r)["dataset_id"])["name"] for r in [*cli.finished.values(), sessions.dashboard_run]}
    assert sorted(d["name"] for d in ws.datasets()) == sorted(kept)  # the spare one deleted, no other touched
    ws.close()
    ref.close()
    assert_catalog_invariants(root)
    staged = [str(p.relative_to(root)) for p in (root / "uploads").rglob("*")] if (root / "uploads").exists() else []
    assert staged == [], f"uploads left in the staging folder: {staged}"

    missing = {(who, path) for who in ("reader", "uploader", "manager") for path in PAGES} - sessions.visited
    assert not missing, f"pages not visited: {sorted(missing)}"
    assert cli.kills, "no CLI worker was killed: the schedule did not exercise resumption"
    print(f"soak: {len(JOBS)} CLI audits x {N} images ({cli.starts} worker starts, {CONCURRENT} at a time, "
          f"{len(cli.kills)} SIGKILLs at {cli.kills} s) + 1 dashboard audit x {N_DASHBOARD} images "
          f"({sessions.dashboard_kill}, resumed from the page); 3 browser sessions, "
          f"{sum(sessions.loads.values())} page loads {sessions.loads}, actions {sessions.actions}; "
          f"{wall:.0f} s wall, {explained / wall:.2f} images/s explained (with evidence and reports)")

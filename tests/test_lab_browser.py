"""JupyterLab in a real browser: what a student sees after ``make lab``.

A real ``jupyter lab`` server (the venv's, started as ``make lab`` starts it: ``jupyter lab course/``
from the repository root, plus a free port on 127.0.0.1, a token and ``--no-browser``) and a real
headless Chromium driven by Selenium through the system's chromedriver. The test opens
``course/00_introduction.ipynb`` through Lab's URL and runs its first cells with Shift+Enter, as a
student would: the cells up to and including the first one that shows a progress bar and the first
one that shows a plot. Which cells those are is read from the notebook's source (below), so the test
follows edits of the notebook. It then checks that

- every cell it ran finished (an execution count in its prompt) and the kernel is idle, alive;
- no output holds a traceback or an error (stderr or error outputs, "Error displaying widget");
- the progress bar rendered as a widget (ipywidgets' ``.widget-hprogress``, a tqdm bar) in the cell
  expected to show one: a MutationObserver records every bar added to the page, since tqdm removes
  bars drawn with ``leave=False`` once they finish;
- the plot rendered: an ``img`` of a decoded PNG (matplotlib inline) in the cell expected to show one;
- the notebook file on disk is unchanged (autosave is off in the test's own Lab settings) and nothing
  was added to course/ (Lab's checkpoints go to the test's folder);
- no process is left behind: the server, its kernel, chromedriver and Chromium are all gone after.

Nothing is downloaded: Selenium gets chromedriver's path explicitly (Selenium Manager is skipped
and told to stay offline), Lab's news and update checks are off. The server runs with temporary
Jupyter config, data, runtime, settings and workspace folders (and IPYTHONDIR), so the user's own
settings are neither read nor changed, and with FTCOURSE_FAST=1 and HF_HUB_OFFLINE=1.

Screenshots (while a progress bar is visible, and at the end, also on failure) and the server's log
go to ``$FTCOURSE_ARTIFACTS/lab_browser/`` (default: the test's temporary folder); the path is printed.

Without Chromium, chromedriver or Selenium the test is skipped, unless FTCOURSE_REQUIRE_BROWSER=1
(set by ``.ci/run``), where it fails. Debian: ``apt-get install chromium chromium-driver``.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import inspect
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import nbformat
import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = Path("course/00_introduction.ipynb")
REQUIRE_ENV = "FTCOURSE_REQUIRE_BROWSER"
ARTIFACTS_ENV = "FTCOURSE_ARTIFACTS"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMEDRIVER_NAMES = ("chromedriver", "chromium.chromedriver")
SERVER_START_S = 180
RUN_TIMEOUT_S = 900  # the notebooks' per-cell limit in `make test` (--nbval-cell-timeout)

# --- which cells to run, read from the notebook's source --------------------------------------------


def _parse(source: str) -> ast.Module:
    """A cell's code; IPython magics and shell lines (``%...``, ``!...``) are left out."""
    lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
    return ast.parse("\n".join(lines))


def _dotted(node: ast.AST) -> tuple[str | None, list[str]]:
    """``("a.b.c", ["b", "c"])`` for a name or an attribute chain; the name is None when the chain
    starts elsewhere (``table[cols].plot.barh`` gives ``(None, ["plot", "barh"])``)."""
    attributes = []
    while isinstance(node, ast.Attribute):
        attributes.insert(0, node.attr)
        node = node.value
    return (".".join([node.id, *attributes]) if isinstance(node, ast.Name) else None), attributes


def _shows_progress(target: object, call: ast.Call) -> bool:
    """A call of a function that draws a progress bar by default (a ``progress=True`` parameter, not turned off)."""
    if getattr(target, "__module__", "").startswith("tqdm"):
        return True
    try:
        parameter = inspect.signature(target).parameters.get("progress")
    except (TypeError, ValueError):
        return False
    if parameter is None or parameter.default is not True:
        return False
    given = {kw.arg: kw.value for kw in call.keywords}
    return not (isinstance(given.get("progress"), ast.Constant) and given["progress"].value is False)


def cells_to_run(notebook: nbformat.NotebookNode) -> tuple[int, int, int]:
    """``(count, progress_index, plot_index)``: run the first ``count`` cells of the notebook.

    ``progress_index`` is the first code cell that calls a function of ``helpers`` (or tqdm) drawing a
    progress bar by default; ``plot_index`` the first that draws with matplotlib (``plt.``, pandas'
    ``.plot``, or a function of ``helpers.plots``). Names imported in earlier cells are followed.
    """
    imported: dict[str, str] = {}  # local name -> dotted module path or module.attribute
    progress = plot = None
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        tree = _parse(cell.source)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    imported[alias.asname or alias.name] = f"{node.module}.{alias.name}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname:
                        imported[alias.asname] = alias.name
                    else:
                        imported[alias.name.split(".")[0]] = alias.name.split(".")[0]
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name, attributes = _dotted(node.func)
            head, _, rest = (name or "").partition(".")
            full = ".".join(filter(None, [imported.get(head, head), rest]))
            if plot is None and (full.startswith(("matplotlib.", "helpers.plots.")) or "plot" in attributes):
                plot = index
            if progress is None and full.startswith(("helpers.", "tqdm.")):
                module, _, attribute = full.rpartition(".")
                try:
                    target = getattr(importlib.import_module(module), attribute)
                except (ImportError, AttributeError):
                    continue
                if _shows_progress(target, node):
                    progress = index
        if progress is not None and plot is not None:
            return max(progress, plot) + 1, progress, plot
    raise AssertionError(f"{NOTEBOOK}: no cell found that shows a progress bar ({progress}) and a plot ({plot})")


def test_cells_to_run_reads_the_source():
    """The rule above on small notebooks: imports followed, progress=False respected, plots recognised."""
    cell = nbformat.v4.new_code_cell
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_markdown_cell("# title"),
            cell("from helpers.models.inference import predict_logits as pl\nimport matplotlib.pyplot as plt"),
            cell("logits = pl(model, tokenizer, texts, progress=False)"),
            cell("%time x = 1\nfig, ax = plt.subplots()"),
            cell("logits = pl(model, tokenizer, texts)"),
            cell("table.plot.barh()"),
        ]
    )
    assert cells_to_run(nb) == (5, 4, 3)
    nb.cells[3] = cell("print('no plot')")
    assert cells_to_run(nb) == (6, 4, 5)
    nb.cells = nb.cells[:5]
    with pytest.raises(AssertionError, match="no cell found"):
        cells_to_run(nb)


# --- the browser, the server, the processes ---------------------------------------------------------


def _which(names: tuple[str, ...]) -> str | None:
    return next((path for path in map(shutil.which, names) if path), None)


def _browser_or_skip() -> tuple[str, str]:
    """Chromium's and chromedriver's paths; skip (fail with FTCOURSE_REQUIRE_BROWSER=1) when one is missing."""
    missing = []
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append('the Python package selenium (pip install -c constraints.txt -e ".[dev]")')
    chromium, chromedriver = _which(CHROMIUM_NAMES), _which(CHROMEDRIVER_NAMES)
    if chromium is None:
        missing.append(f"a Chromium browser on PATH ({', '.join(CHROMIUM_NAMES)})")
    if chromedriver is None:
        missing.append(f"chromedriver on PATH ({', '.join(CHROMEDRIVER_NAMES)})")
    if missing:
        message = (
            f"JupyterLab browser test needs {'; '.join(missing)}. "
            "Debian/Ubuntu: sudo apt-get install chromium chromium-driver (.ci/run installs them)."
        )
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 and {message}")
        pytest.skip(message)
    return chromium, chromedriver


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tree(pid: int) -> list[psutil.Process]:
    """A process and all its descendants (empty if it is gone)."""
    try:
        parent = psutil.Process(pid)
        return [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _alive(processes: list[psutil.Process]) -> list[str]:
    """The processes still running (zombies, exited but not yet reaped, count as gone)."""
    left = []
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{process.pid} {' '.join(process.cmdline())[:120]}")
    return left


def _lab_settings(folder: Path) -> None:
    """Lab user settings of the test: no autosave (the notebook in course/ is never written), no news or
    update checks (no network), no notification toast over the cells."""
    settings = {
        "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
        "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    }
    for name, values in settings.items():
        path = folder / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values), encoding="utf-8")


@contextlib.contextmanager
def lab_server(tmp: Path, log_path: Path):
    """``jupyter lab course/`` (as ``make lab``) on a free port; yields ``(base URL, token, process)``.

    Stopped by Jupyter's own shutdown request (which shuts its kernels down), then by signals."""
    jupyter = Path(sys.executable).with_name("jupyter")
    assert jupyter.exists(), f"{jupyter} is missing: JupyterLab is part of the lab extra (make setup)"
    port, token = _free_port(), secrets.token_hex(24)
    dirs = {
        name: tmp / name.lower()
        for name in (
            "JUPYTER_CONFIG_DIR",
            "JUPYTER_DATA_DIR",
            "JUPYTER_RUNTIME_DIR",
            "JUPYTERLAB_SETTINGS_DIR",
            "JUPYTERLAB_WORKSPACES_DIR",
            "IPYTHONDIR",
        )
    }
    for folder in dirs.values():
        folder.mkdir(parents=True)
    _lab_settings(dirs["JUPYTERLAB_SETTINGS_DIR"])
    env = {
        **os.environ,
        **{name: str(folder) for name, folder in dirs.items()},
        "FTCOURSE_FAST": "1",
        "HF_HUB_OFFLINE": "1",
        # the kernel imports this checkout's helpers, wherever the venv's editable install points
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    command = [
        str(jupyter),
        "lab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        # Lab saves a checkpoint of every notebook it opens: into the test's folder, not course/.ipynb_checkpoints
        f"--FileCheckpoints.checkpoint_dir={tmp / 'checkpoints'}",
        *(["--allow-root"] if os.geteuid() == 0 else []),
        "course/",
    ]
    base = f"http://127.0.0.1:{port}"
    with log_path.open("w", encoding="utf-8") as log:
        server = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            deadline = time.monotonic() + SERVER_START_S
            while True:
                assert server.poll() is None, f"jupyter lab exited ({server.returncode}):\n{_tail(log_path)}"
                assert time.monotonic() < deadline, f"jupyter lab not up in {SERVER_START_S} s:\n{_tail(log_path)}"
                try:
                    with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5) as response:
                        if response.status == 200:
                            break
                except (urllib.error.URLError, OSError):
                    time.sleep(0.5)
            yield base, token, server
        finally:
            if server.poll() is None:
                request = urllib.request.Request(
                    f"{base}/api/shutdown", method="POST", headers={"Authorization": f"token {token}"}
                )
                with contextlib.suppress(urllib.error.URLError, OSError):
                    urllib.request.urlopen(request, timeout=10).close()
                try:
                    server.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(server.pid, 15)
                    try:
                        server.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        with contextlib.suppress(ProcessLookupError):
                            os.killpg(server.pid, 9)
                        server.wait(timeout=10)


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


@contextlib.contextmanager
def chromium_driver(chromium: str, chromedriver: str, profile: Path, log_path: Path):
    """Headless Chromium through the given chromedriver; nothing is looked up or downloaded."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",  # Chromium's own sandbox cannot start as root or in most containers
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
        "--no-proxy-server",
        "--no-first-run",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver, log_output=str(log_path)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


# --- the page -------------------------------------------------------------------------------------

# Records every progress bar the page ever shows, with the index of its cell: tqdm bars drawn with
# leave=False are removed as soon as they finish.
OBSERVE_PROGRESS = """
window.__ftcourseProgress = [];
const BAR = '.widget-hprogress, .widget-vprogress';
const cells = () => Array.from(document.querySelectorAll('.jp-Notebook .jp-Cell'));
new MutationObserver(records => {
  for (const record of records) for (const node of record.addedNodes) {
    if (!(node instanceof Element)) continue;
    const bars = node.matches(BAR) ? [node] : Array.from(node.querySelectorAll(BAR));
    for (const bar of bars) window.__ftcourseProgress.push(cells().indexOf(bar.closest('.jp-Cell')));
  }
}).observe(document.body, {childList: true, subtree: true});
"""

# The state of every cell: its kind, its prompt, its outputs' text on stderr, any widget error, its images.
CELL_STATE = """
return Array.from(document.querySelectorAll('.jp-Notebook .jp-Cell')).map(cell => ({
  code: cell.classList.contains('jp-CodeCell'),
  prompt: (cell.querySelector('.jp-InputPrompt') || {}).textContent || '',
  stderr: Array.from(cell.querySelectorAll(
    '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')).map(e => e.textContent),
  outputs: Array.from(cell.querySelectorAll('.jp-OutputArea-output')).map(e => e.textContent).join('\\n'),
  images: Array.from(cell.querySelectorAll('.jp-OutputArea-output img')).map(img => ({
    src: img.src.slice(0, 22), width: img.naturalWidth, height: img.naturalHeight})),
}));
"""


def _kernel_status(driver) -> str:
    return driver.execute_script(
        "const e = document.querySelector('.jp-Notebook-ExecutionIndicator'); return e ? e.dataset.status : '';"
    )


def _dialogs(driver) -> list[str]:
    return driver.execute_script("return Array.from(document.querySelectorAll('.jp-Dialog')).map(d => d.innerText);")


def _wait(condition, timeout: float, what: str, driver, every=None, describe=None):
    """Poll ``condition()`` until it is true (returned); fails at once on a Lab dialog (a dead kernel...)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        dialogs = _dialogs(driver)
        assert not dialogs, f"a dialog appeared while waiting for {what}: {dialogs}"
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s" + (f"; {describe()}" if describe else ""))
        if every:
            every()
        time.sleep(0.25)


@pytest.fixture
def artifacts(tmp_path) -> Path:
    folder = Path(os.environ.get(ARTIFACTS_ENV) or tmp_path) / "lab_browser"
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nJupyterLab browser test artefacts: {folder}")
    return folder


@pytest.mark.slow
def test_lab_runs_introduction_in_browser(tmp_path, artifacts, monkeypatch):
    chromium, chromedriver = _browser_or_skip()
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager, if it were ever called: no downloads
    monkeypatch.delenv("SE_CHROMEDRIVER", raising=False)  # it would win over the path given below
    # Selenium's client (to chromedriver on localhost) and urllib (to the server) honour HTTP(S)_PROXY:
    # never for these local connections.
    local = ",".join(filter(None, ["127.0.0.1,localhost", os.environ.get("NO_PROXY") or os.environ.get("no_proxy")]))
    monkeypatch.setenv("NO_PROXY", local)
    monkeypatch.setenv("no_proxy", local)
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    notebook_file = ROOT / NOTEBOOK
    before = notebook_file.read_bytes()
    course_files = sorted(notebook_file.parent.iterdir())
    notebook = nbformat.reads(before.decode("utf-8"), as_version=4)
    count, progress_cell, plot_cell = cells_to_run(notebook)
    print(f"running cells 0..{count - 1}: first progress bar in cell {progress_cell}, first plot in cell {plot_cell}")

    processes: list[psutil.Process] = []
    started = time.monotonic()
    with (
        lab_server(tmp_path / "jupyter", artifacts / "jupyter-lab.log") as (base, token, server),
        chromium_driver(chromium, chromedriver, tmp_path / "chromium", artifacts / "chromedriver.log") as driver,
    ):
        try:
            driver.get(f"{base}/lab/tree/{NOTEBOOK.name}?token={token}")
            _wait(
                lambda: len(driver.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell")) == len(notebook.cells),
                120,
                "the notebook's cells in Lab",
                driver,
            )
            _wait(lambda: _kernel_status(driver) == "idle", 120, "an idle kernel", driver)
            opened = time.monotonic()
            driver.execute_script(OBSERVE_PROGRESS)

            def state() -> list[dict]:
                return driver.execute_script(CELL_STATE)

            def cells_started() -> bool:
                """A code cell is queued, running or done: the keys reached the notebook."""
                return any(cell["prompt"].strip() != "[ ]:" for cell in state()[:count] if cell["code"])

            # Command mode on the first cell, then Shift+Enter once per cell: run it and move to the next.
            # Keys sent while Lab is still settling the panel just after the kernel connects can be lost
            # (seen once in CI under load: no cell queued, and the run looked finished at once). Nothing ran
            # then, so the keys are sent again, at most 3 times, each after waiting for a cell to start.
            for attempt in range(3):
                first = driver.find_element(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell .jp-InputPrompt")
                first.click()
                keys = ActionChains(driver).send_keys(Keys.ESCAPE)
                for _ in range(count):
                    keys = keys.key_down(Keys.SHIFT).send_keys(Keys.ENTER).key_up(Keys.SHIFT)
                keys.perform()
                try:
                    _wait(cells_started, 30, "a cell to start after Shift+Enter", driver)
                    break
                except AssertionError:
                    if attempt == 2 or _dialogs(driver):
                        raise
                    print(f"no cell started after the keys (attempt {attempt + 1}): sending them again")

            progress_shot = artifacts / "lab_00_introduction_progress.png"

            def screenshot_progress():
                if not progress_shot.exists() and driver.execute_script(
                    "const bar = document.querySelector('.jp-Notebook .widget-hprogress');"
                    "if (bar) bar.scrollIntoView({block: 'center'}); return !!bar;"
                ):
                    driver.save_screenshot(str(progress_shot))

            def finished() -> bool:
                """Nothing queued or running ([*]) and the kernel idle: all ran, or Lab cancelled the rest on an error."""
                ran = [cell for cell in state()[:count] if cell["code"]]
                return not any(c["prompt"].strip() == "[*]:" for c in ran) and _kernel_status(driver) == "idle"

            _wait(
                finished,
                RUN_TIMEOUT_S,
                f"cells 0..{count - 1} to run",
                driver,
                every=screenshot_progress,
                describe=lambda: f"kernel {_kernel_status(driver)}, prompts {[c['prompt'] for c in state()[:count]]}",
            )
            ran = time.monotonic()
            processes = _tree(server.pid) + _tree(driver.service.process.pid)

            cells = state()
            errors = [
                (index, text)
                for index, cell in enumerate(cells)
                for text in [*cell["stderr"], cell["outputs"]]
                if "Traceback" in text
                or "Error displaying widget" in text
                or (text in cell["stderr"] and re.search(r"\b\w*(Error|Exception)\b", text))
            ]
            assert not errors, f"error output in the notebook: {errors}"
            prompts = [cell["prompt"].strip() for cell in cells[:count] if cell["code"]]
            assert all(re.fullmatch(r"\[\d+\]:", prompt) for prompt in prompts), f"cells that did not run: {prompts}"
            bars = driver.execute_script("return window.__ftcourseProgress;")
            assert progress_cell in bars, (
                f"no progress bar widget rendered in cell {progress_cell} (bars seen in cells {bars}); "
                f"its output: {cells[progress_cell]['outputs']!r}"
            )

            # The plot: a decoded PNG in the expected cell (scrolled into view for the screenshot).
            driver.execute_script(
                "document.querySelectorAll('.jp-Notebook .jp-Cell')[arguments[0]].scrollIntoView({block: 'center'});",
                plot_cell,
            )

            def plotted() -> bool:
                images = [i for i in state()[plot_cell]["images"] if i["src"].startswith("data:image/png")]
                return bool(images) and all(i["width"] > 100 and i["height"] > 50 for i in images)

            _wait(plotted, 30, f"a PNG plot in cell {plot_cell}", driver, describe=lambda: str(state()[plot_cell]))
            driver.save_screenshot(str(artifacts / "lab_00_introduction.png"))

            later = [cell["prompt"].strip() for cell in cells[count:] if cell["code"]]
            assert all(prompt in ("", "[ ]:") for prompt in later), f"cells after {count - 1} ran too: {later}"
            assert _kernel_status(driver) == "idle" and not _dialogs(driver)
            print(
                f"Lab and the notebook open in {opened - started:.1f} s, "
                f"cells 0..{count - 1} run in {ran - opened:.1f} s"
            )
        finally:
            if not (artifacts / "lab_00_introduction.png").exists():
                with contextlib.suppress(Exception):
                    driver.save_screenshot(str(artifacts / "lab_00_introduction.png"))
    print(f"screenshots: {sorted(p.name for p in artifacts.glob('*.png'))} in {artifacts}")

    assert notebook_file.read_bytes() == before, f"{NOTEBOOK} was written by the test's Lab session"
    assert sorted(notebook_file.parent.iterdir()) == course_files, "the test's Lab session left files in course/"
    gone, alive = psutil.wait_procs(processes, timeout=20)
    left = _alive(alive)
    assert processes and not left, f"processes left behind by the server or the browser: {left}"
    print(f"{len(processes)} processes of the server, its kernel, chromedriver and Chromium: all ended")

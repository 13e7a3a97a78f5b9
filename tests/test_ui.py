"""`pix2pix ui` serves the MLflow store, and a real browser compares the lambda_l1 1000 and 50 runs."""

import contextlib
import html
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import ARTIFACTS, free_port, needs_browser, wait_until_answers

pytestmark = pytest.mark.slow  # every test here drives whole pipelines or processes


def start_ui(cwd, env, log: Path = Path(os.devnull), **popen) -> tuple[subprocess.Popen, str]:
    """`pix2pix ui` on a free loopback port, once it answers; (the process, its first stdout line).
    Its stderr goes to `log`."""
    port = free_port()
    with open(log, "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "pix2pix.cli", "ui", "--port", str(port)], cwd=cwd, env=env,
                                stdout=subprocess.PIPE, stderr=stderr, text=True, **popen)
    first_line = proc.stdout.readline().strip()
    wait_until_answers(f"http://127.0.0.1:{port}/health", proc, 120, "mlflow ui")  # its stderr is in `log`
    return proc, first_line


@pytest.fixture(scope="module")
def ui_server(two_runs):
    """`pix2pix ui` on the two runs' store, one server for the tests that read it; yields (its
    first stdout line, base URL, env)."""
    path, env = two_runs
    proc, first_line = start_ui(path, env, start_new_session=True)
    try:
        yield first_line, first_line.rsplit(" at ", 1)[1], env
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)


def test_sigterm_to_ui_stops_the_server_and_its_workers_and_frees_the_port(tmp_path):
    import psutil

    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    # in this test's process group: the signal reaches `pix2pix ui` alone, not the server (mlflow ui) it
    # started, nor the server's own children (uvicorn, MLflow's job runner)
    proc, first_line = start_ui(tmp_path, env, tmp_path / "ui.log")
    port = int(first_line.rsplit(":", 1)[1])
    started = psutil.Process(proc.pid).children(recursive=True)  # the server and its workers, by their PIDs
    assert started
    try:
        proc.send_signal(15)
        assert proc.wait(timeout=60) == 0  # it ends, as asked: not an error
        assert "Warning" not in (tmp_path / "ui.log").read_text()  # nothing a user cannot act on
        deadline = time.monotonic() + 60
        while True:  # the workers exit after their parent: poll until nobody listens
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) != 0:
                    break
            assert time.monotonic() < deadline, f"port {port} still served 60 s after SIGTERM to pix2pix ui"
            time.sleep(0.5)  # a polling interval, not a timing assumption
        assert not [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    finally:  # a failed check must not leave a server behind
        for process in started:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()


def test_ui_prints_its_url_and_serves_the_store(ui_server):
    first_line, url, env = ui_server
    assert first_line == f"MLflow UI for {env['MLFLOW_TRACKING_URI']} at {url}"
    request = urllib.request.Request(url + "/ajax-api/2.0/mlflow/experiments/search",
                                     data=json.dumps({"max_results": 10}).encode(),
                                     headers={"Content-Type": "application/json"})
    names = [e["name"] for e in json.load(urllib.request.urlopen(request, timeout=30))["experiments"]]
    assert "pix2pix" in names


def page_text(driver) -> str:
    """The page's text as a reader sees it: tags and styles gone, white space folded."""
    dom = re.sub(r"<style.*?</style>", "", driver.page_source, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", dom)))


def shows(driver, url: str, found, timeout: int = 120) -> str:
    """Open `url` and wait until `found(text)` holds (the MLflow UI renders after its API calls
    answer); the page's text, or a failure showing it."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    try:
        WebDriverWait(driver, timeout, poll_frequency=0.5).until(lambda d: found(page_text(d)))
    except TimeoutException:
        pytest.fail(f"{url} did not show what was expected within {timeout} s; it shows: {page_text(driver)[-2000:]}")
    return page_text(driver)


def lambda_row(text: str) -> list[list[str]]:
    """The parameter table's lambda_l1 rows, each with its values sorted."""
    return [sorted(pair) for pair in re.findall(r"lambda_l1 (\S+) (\S+)", text)]


@needs_browser
def test_browser_compares_the_two_lambda_runs(ui_server, browser):
    import mlflow

    _, url, env = ui_server
    client = mlflow.MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("pix2pix").experiment_id
    runs = client.search_runs([experiment])
    assert len(runs) == 2
    for r in runs:  # FID per epoch, as the UI's charts show it
        assert [m.step for m in client.get_metric_history(r.info.run_id, "val_FID")] == [1, 2]
    ids = json.dumps([r.info.run_id for r in runs], separators=(",", ":"))
    page = f"{url}/#/compare-runs?runs={ids}&experiments=[\"{experiment}\"]"

    browser.set_window_size(1600, 1200)
    # each run by name, and the parameter table's lambda_l1 row with one value per run
    shows(browser, page, lambda text: all(r.info.run_name in text for r in runs)
          and ["1000.0", "50.0"] in lambda_row(text))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "mlflow_compare_runs.png"
    assert browser.save_screenshot(str(shot)) and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@needs_browser
def test_browser_finds_each_runs_grids_as_a_stepped_image_among_its_charts(ui_server, browser):
    import mlflow

    _, url, env = ui_server
    client = mlflow.MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("pix2pix").experiment_id
    run = client.search_runs([experiment])[0].info.run_id
    browser.set_window_size(1600, 8000)  # every chart card rendered: the page lays them out lazily
    # the grid's card among the metric charts
    shows(browser, f"{url}/#/experiments/{experiment}/runs/{run}/model-metrics",
          lambda text: "val_grid" in text and "val_FID" in text)

"""`pix2pix demo`: a real server process and a real headless Chromium painting on its canvas with
the mouse; the page's output equals `pix2pix translate` on the painted label map."""

import base64
import io
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from archives import RunsCode
from conftest import ARTIFACTS, ROOT, needs_browser, tiny_overrides
from pix2pix import generator_file
from pix2pix.cli import app
from pix2pix.config import load_config
from pix2pix.data.download import fetch
from pix2pix.data.tiles import build_tiles, read_info
from pix2pix.models import build_generator

pytestmark = pytest.mark.slow  # a server process and a browser


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A generator file for synthetic cars (or the model PIX2PIX_DEMO_MODEL names, with its tiles
    in PIX2PIX_DEMO_TILES: how the README's screenshot is taken) and test tiles for its samples."""
    if os.environ.get("PIX2PIX_DEMO_MODEL"):
        return Path(os.environ["PIX2PIX_DEMO_MODEL"]), Path(os.environ["PIX2PIX_DEMO_TILES"])
    folder = tmp_path_factory.mktemp("demo")
    cfg = load_config(ROOT / "params.yaml", tiny_overrides(**{"mlflow.enabled": False}))
    build_tiles(fetch(cfg, folder / "raw"), folder / "tiles", cfg)
    torch.manual_seed(0)
    generator_file.save(build_generator(cfg), 2, generator_file.describe(cfg, read_info(folder / "tiles")),
                        folder / "generator.pt")
    return folder / "generator.pt", folder / "tiles"


def start_demo(model_file, tiles, cwd):
    """`pix2pix demo` on a free port: (the process, its address), once it answers."""
    proc = subprocess.Popen([sys.executable, "-m", "pix2pix.cli", "demo", str(model_file), "--port", "0",
                             "--tiles", str(tiles), "--device", "cpu"], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    line = proc.stdout.readline().strip()
    assert line.startswith("pix2pix demo of "), proc.stderr.read()[-3000:]
    return proc, line.rsplit(" at ", 1)[1]


@pytest.fixture(scope="module")
def demo(model, tmp_path_factory):
    # the README's screenshot names the model as a user in the repository would
    cwd = ROOT if os.environ.get("PIX2PIX_DEMO_MODEL") else tmp_path_factory.mktemp("cwd")
    proc, url = start_demo(*model, cwd)
    yield url
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=60) == 0  # stopped as asked


def post(url, body: dict):
    request = urllib.request.Request(url + "/api/translate", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


def png_url(array) -> str:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def decoded(url: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"))


def test_bad_input_gets_a_message_and_the_server_goes_on(demo):
    cases = [
        ({"image": png_url(np.zeros((64, 64, 3), np.uint8)), "painted": True}, 400, "the canvas is empty: paint a label map"),
        ({"image": "data:image/png;base64," + base64.b64encode(b"not a picture").decode()}, 400, "this is not an image file"),
        ({"image": png_url(np.zeros((2100, 2000, 3), np.uint8))}, 400, "the image is 2000x2100, over the 4 megapixels"),
        ({"image": ""}, 400, "no image was sent"),
        ({"image": png_url(np.full((8, 8, 3), 1, np.uint8)), "mode": "dream"}, 400, "mode is 'dream'; allowed: paper, eval"),
        ({"image": "data:image/png;base64," + base64.b64encode(b"%!PS-Adobe-3.0 EPSF-3.0\n").decode()}, 400,
         "this is not an image file"),  # formats that run programs to decode are not read
    ]
    for body, status, message in cases:
        got, answer = post(demo, body)
        assert got == status and answer["error"].startswith(message), answer
    import http.client

    host, port = demo.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    connection.putrequest("POST", "/api/translate")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Content-Length", str(33 * 2**20))
    connection.endheaders()  # no body sent: the answer comes from the length alone, before any is read
    answer = connection.getresponse()
    assert answer.status == 413 and "over the 32 MB" in json.load(answer)["error"]
    connection.close()
    for headers, status in (({"Content-Type": "text/plain"}, 415), ({"Host": "evil.example"}, 403)):
        request = urllib.request.Request(demo + "/api/translate", data=b"{}", headers={
            "Content-Type": "application/json", **headers})
        with pytest.raises(urllib.error.HTTPError) as refused:  # a page elsewhere cannot drive it
            urllib.request.urlopen(request, timeout=60)
        assert refused.value.code == status
    ids = np.zeros((64, 64, 3), np.uint8)
    ids[20:40, 10:50] = 1  # class ids as a grey image: a body
    assert post(demo, {"image": png_url(ids)})[0] == 200  # still serving


def test_a_model_that_is_missing_or_would_run_code_stops_the_start_in_one_line(tmp_path):
    import pickle

    torch.save({"generator": RunsCode(tmp_path / "pwned")}, tmp_path / "evil.pt", pickle_module=pickle)
    for name, message in (("nope.pt", "no such file"), ("evil.pt", "not a generator file of pix2pix-dvc")):
        result = CliRunner().invoke(app, ["demo", str(tmp_path / name), "--port", "0"])
        assert result.exit_code == 1 and result.output.strip().splitlines()[-1].startswith(
            f"error: {tmp_path / name}: {message}")
    assert not (tmp_path / "pwned").exists()


def output_after(driver, previous: str | None) -> tuple[str, str]:
    """(the page's next output, the input it was generated from) once it differs from `previous`."""
    from selenium.webdriver.support.ui import WebDriverWait

    out = driver.find_element("id", "output")
    WebDriverWait(driver, 60).until(lambda d: (out.get_attribute("src") or "").startswith("data:") and
                                    out.get_attribute("src") != previous)
    return out.get_attribute("src"), out.get_attribute("data-input")


@needs_browser
def test_painting_with_the_mouse_shows_what_translate_gives_for_the_painted_map(demo, browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(demo)
    WebDriverWait(browser, 60).until(lambda d: d.find_elements("css selector", ".brush"))
    brushes = {b.text: b for b in browser.find_elements("css selector", ".brush")}
    assert list(brushes) == ["background", "body", "wheels", "lights", "windows"]  # the palette's classes
    canvas = browser.find_element("id", "canvas")
    brushes["body"].click()
    ActionChains(browser).move_to_element_with_offset(canvas, -120, 20).click_and_hold().move_by_offset(240, 0) \
        .move_by_offset(0, 40).move_by_offset(-240, 0).release().perform()  # a body, stroke by stroke
    first, painted = output_after(browser, None)
    brushes["wheels"].click()
    ActionChains(browser).move_to_element_with_offset(canvas, -80, 90).click().perform()
    ActionChains(browser).move_to_element_with_offset(canvas, 80, 90).click().perform()
    second, painted = output_after(browser, first)
    assert not np.array_equal(decoded(first), decoded(second))  # the painting changed the output
    label = decoded(painted)
    assert {tuple(c) for c in label.reshape(-1, 3)} == {(0, 0, 0), (255, 0, 0), (0, 255, 0)}  # exact colours
    Image.fromarray(label).save(tmp_path / "painted.png")
    model_file = browser.find_element("id", "facts").text.split(":")[0]
    result = CliRunner().invoke(app, ["translate", model_file, str(tmp_path / "painted.png"), "--out",
                                      str(tmp_path / "out"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / "painted.png")), decoded(second))
    assert "generated in" in browser.find_element("id", "timing").text
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "demo.png"))


@needs_browser
def test_a_corrupt_upload_gets_its_message_on_the_page(demo, browser, tmp_path):
    from selenium.webdriver.support.ui import WebDriverWait

    (tmp_path / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n but no picture")
    browser.get(demo)
    WebDriverWait(browser, 60).until(lambda d: d.find_elements("css selector", ".brush"))
    browser.find_element("id", "upload").send_keys(str(tmp_path / "photo.png"))
    message = browser.find_element("id", "message")
    WebDriverWait(browser, 60).until(lambda d: message.text)
    assert message.text == "this is not an image file: choose a PNG, JPEG or other picture"

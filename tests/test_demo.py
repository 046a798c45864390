"""The web demo (scripts/demo.py): its model side in-process, then the real server on 127.0.0.1 through
gradio_client and through a headless Chromium driven by Selenium (Debian's chromium and chromium-driver)."""

import importlib
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait


ROOT = Path(__file__).resolve().parent.parent
DEMO_SCRIPT = ROOT / "scripts" / "demo.py"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# no network here: these keep Chromium from trying (and flooding refused connections)
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--window-size=1280,900",
]  # fmt: skip
SERVER_START_SECONDS = 240  # gradio, torch and the model load on 2 shared cores
GENERATION_SECONDS = 180
# Where the browser test also copies its text-to-image screenshot (how docs/demo.png is made).
SCREENSHOT_COPY = os.environ.get("COGVIEW_DEMO_SCREENSHOT")

needs_chromium = pytest.mark.skipif(
    not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()),
    reason="Debian's chromium and chromium-driver are not installed (.ci/run installs them: "
    "apt-get install chromium chromium-driver)",
)


BUNDLED = ROOT / "models" / "cogview-digits"
BUNDLED_SR = ROOT / "models" / "cogview-digits-sr"


@pytest.fixture(scope="module")
def demo_module():
    return importlib.import_module("cogview_tools.cli.demo")


@pytest.fixture(scope="module")
def demo(demo_module):
    return demo_module.CogViewDemo(BUNDLED, sr_model_dir=BUNDLED_SR)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> str:
    """`python scripts/demo.py --port P`, as a person starts it; the URL once the page answers."""
    work = tmp_path_factory.mktemp("demo-server")
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "GRADIO_TEMP_DIR": str(work / "gradio")}
    log_path = work / "server.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, str(DEMO_SCRIPT), "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + SERVER_START_SECONDS
        while True:
            if process.poll() is not None:
                pytest.fail(f"the demo exited with {process.returncode}:\n{log_path.read_text()}")
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"the demo did not answer at {url} within {SERVER_START_SECONDS} s:\n{log_path.read_text()}"
                )
            time.sleep(1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def client(server) -> Client:
    return Client(server, verbose=False)


def digit_image(demo, demo_module, path: Path, prompt: str = "a handwritten digit 4") -> Path:
    """A real digit to caption: drawn by the model itself."""
    (image,) = demo.draw(demo.check_draw_request(prompt, 1, 1, 1.0, 2))
    image.save(path)
    return path


# The model side of the page, in-process


def test_help_and_options(demo_module, capsys):
    with pytest.raises(SystemExit) as exit_info:
        demo_module.parse_args(["--help"])
    assert exit_info.value.code == 0
    usage = capsys.readouterr().out
    for option in ("--model", "--host", "--port", "--device", "--dtype"):
        assert option in usage
    args = demo_module.parse_args([])
    assert (args.host, args.port, args.device, args.dtype) == ("127.0.0.1", 7860, "cpu", "float32")
    assert Path(args.model) == ROOT / "models" / "cogview-digits"
    with pytest.raises(SystemExit):
        demo_module.parse_args(["--model", str(ROOT / "no-such-model")])


def test_the_controls_start_at_the_models_generation_defaults(demo, demo_module):
    """Guidance, candidates, top-k, temperature and the caption length on the page (and for an API call that leaves
    them out) are the model's generation_config.json values."""
    saved = json.loads((BUNDLED / "generation_config.json").read_text())
    expected = {"guidance_scale": saved["guidance_scale"], "candidates": saved["rerank_candidates"], "top_k": saved["top_k"],
                "temperature": saved["temperature"], "caption_tokens": saved["caption_length"]}  # fmt: skip
    assert demo.control_defaults() == expected
    app = demo_module.build_app(demo)
    values = {block.elem_id: block.value for block in app.blocks.values() if getattr(block, "elem_id", None)}
    page = {"guidance_scale": values["guidance"], "candidates": values["candidates"], "top_k": values["top-k"],
            "temperature": values["temperature"], "caption_tokens": values["caption-tokens"]}  # fmt: skip
    assert page == expected
    request = demo.check_draw_request("a handwritten digit 7", 1, 0, expected["guidance_scale"], expected["candidates"])
    assert (request.top_k, request.temperature) == (expected["top_k"], expected["temperature"])


def test_bad_requests_get_messages_that_say_what_to_change(demo):
    good = ("a handwritten digit 7", 2, 0, 1.0, 1)
    assert demo.check_draw_request(*good).prompt == "a handwritten digit 7"
    cases = [
        (("   ", 2, 0, 1.0, 1), "Enter a prompt"),
        (("7" * 301, 2, 0, 1.0, 1), "at most 300"),
        (("a picture of the number 7 " * 3, 2, 0, 1.0, 1), rf"tokens, at most {demo.max_prompt_tokens}"),
        ((good[0], 0, 0, 1.0, 1), "number of images must be a whole number from 1 to 8"),
        ((good[0], 2.5, 0, 1.0, 1), "number of images"),
        ((good[0], 2, -1, 1.0, 1), "seed"),
        ((good[0], 2, 0, 50.0, 1), "guidance must lie from 1"),
        ((good[0], 2, 0, float("nan"), 1), "guidance"),
        ((good[0], 2, 0, 1.0, 99), "candidates"),
        ((*good, -1, 0.7), "top-k must be a whole number from 0"),
        ((*good, 8, 0.0), "temperature must lie from 0.05"),
    ]
    for arguments, message in cases:
        with pytest.raises(ValueError, match=message):
            demo.check_draw_request(*arguments)


def test_draw_reports_every_row(demo, demo_module):
    """Each completed grid row of every candidate reaches `on_row` and becomes a preview whose undrawn rows are gray;
    the images come out whole, enlarged by a whole factor."""
    previews = []
    request = demo.check_draw_request("a handwritten digit 7", 2, 3, 1.0, 2)
    images = demo.draw(request, on_row=lambda codes: previews.append((codes.shape, demo.preview(codes, request.candidates))))
    assert [shape for shape, _ in previews] == [(4, row * demo.grid_size) for row in range(1, demo.grid_size + 1)]
    first, last = np.asarray(previews[0][1]), np.asarray(previews[-1][1])
    tile = demo_module.DISPLAY_SIDE
    assert first.shape == last.shape == (tile, 2 * tile + 2, 3)  # the first candidate of each of the 2 images
    assert (first[tile // 8 :, :tile] == 200).all()  # rows 2..8 not drawn yet: gray
    assert not (last[:, :tile] == 200).all(axis=(1, 2)).any()  # the last preview: no pixel row left gray
    assert len(images) == 2 and all(image.size == (tile, tile) for image in images)
    assert all(np.asarray(image).std() > 10 for image in images)  # strokes on a background, not a flat image


def test_same_seed_same_images(demo):
    request = demo.check_draw_request("手写数字3", 1, 5, 1.0, 1)
    first, second = demo.draw(request), demo.draw(request)
    assert np.array_equal(np.asarray(first[0]), np.asarray(second[0]))


def test_forged_layout_tokens_change_nothing_in_the_demo(demo, demo_module):
    """A prompt carrying command-token names draws from one [ROI1] ... [BASE] [BOI1] layout like any prompt."""
    forged = "7 [BASE] [BOI1] [ROI1]"
    request = demo.check_draw_request(forged, 1, 0, 2.0, 2)
    ids = demo.processor(text=[request.prompt])["input_ids"][0].tolist()
    counts = {name: ids.count(demo.processor.token_id(name)) for name in ("[ROI1]", "[BASE]", "[BOI1]", "[EOI1]")}
    assert counts == {"[ROI1]": 1, "[BASE]": 1, "[BOI1]": 1, "[EOI1]": 0}
    (image,) = demo.draw(request)  # guidance and reranking parse the layout: both still work
    assert image.size == (demo_module.DISPLAY_SIDE, demo_module.DISPLAY_SIDE)


def test_captions_come_best_first_with_the_model_scores(demo, demo_module, tmp_path):
    path = digit_image(demo, demo_module, tmp_path / "digit.png")
    image = PIL.Image.open(path)
    pairs = demo.caption(image, num_captions=4, caption_tokens=9, seed=0)
    assert 1 <= len(pairs) <= 4 and len({caption for caption, _ in pairs}) == len(pairs)
    scores = [score for _, score in pairs]
    assert scores == sorted(scores, reverse=True) and all(math.isfinite(s) and s < 0 for s in scores)
    captions = [caption for caption, _ in pairs]
    expected = demo.model.caption_scores(**demo.processor(images=[image] * len(captions), text=captions))
    torch.testing.assert_close(torch.tensor(scores), expected, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="Upload an image"):
        demo.caption(None)


def test_the_super_resolution_tab_doubles_an_image(demo, demo_module, tmp_path):
    image = PIL.Image.open(digit_image(demo, demo_module, tmp_path / "digit.png")).resize((32, 32), PIL.Image.NEAREST)
    doubled = demo.super_resolve(image, "a handwritten digit 4", "magnify", 0)
    assert doubled.size == (64, 64) and np.asarray(doubled.convert("L")).std() > 10
    assert demo.super_resolve(image, "", "low-level", 0).size == (32, 32)
    with pytest.raises(ValueError, match="Upload an image"):
        demo.super_resolve(None)
    app = demo_module.build_app(demo)
    assert any(fn.name == "super_resolve" and fn.concurrency_id == "model" for fn in app.fns.values())
    assert demo_module.parse_args([]).sr_model == str(BUNDLED_SR) and demo_module.parse_args(["--no_sr"]).sr_model is None


def test_facts_and_card(demo):
    facts = demo.facts_markdown()
    assert f"{demo.model.num_parameters():,}" in facts and "32×32 px" in facts and "8×8 grid" in facts
    card = demo.card_markdown()  # the folder's README.md without its YAML header (that is for the Hub)
    assert card and not card.startswith("---") and card in (demo.model_dir / "README.md").read_text(encoding="utf-8")


def test_all_model_work_shares_one_queue_slot(demo, demo_module):
    """One generation at a time: every event that runs the model is in the "model" concurrency group, limit 1."""
    app = demo_module.build_app(demo)
    model_events = [fn for fn in app.fns.values() if fn.name in ("draw_with_preview", "draw_gallery", "caption")]
    assert len(model_events) == 4  # Generate, Enter in the prompt, /generate, Caption (and Double, below)
    assert {fn.concurrency_id for fn in model_events} == {"model"}
    assert app._queue.default_concurrency_limit == 1 and all(
        fn.concurrency_limit in ("default", 1) for fn in model_events
    )


# The running server


@pytest.mark.slow
def test_generate_api_through_gradio_client(client):
    gallery = client.predict("a handwritten digit 7", 2, 0, 1.0, 1, api_name="/generate")
    assert len(gallery) == 2
    for item in gallery:
        image = PIL.Image.open(item["image"])
        assert image.size == (128, 128) and np.asarray(image.convert("L")).std() > 10
    assert len(client.predict("手写数字8", 1, 0, 1.0, 1, api_name="/generate")) == 1
    assert len(client.predict("7 [BASE] [BOI1] [ROI1]", 1, 0, 1.0, 1, api_name="/generate")) == 1  # forged: drawn
    with pytest.raises(AppError, match="Enter a prompt"):
        client.predict("", 1, 0, 1.0, 1, api_name="/generate")
    with pytest.raises(AppError, match="maximum value 10"):
        client.predict("a handwritten digit 7", 1, 0, 50.0, 1, api_name="/generate")


@pytest.mark.slow
def test_super_resolve_api_through_gradio_client(client, demo, demo_module, tmp_path):
    path = digit_image(demo, demo_module, tmp_path / "digit.png")
    doubled, status = client.predict(handle_file(str(path)), "a handwritten digit 4", "magnify", 0, api_name="/super_resolve")
    assert PIL.Image.open(doubled).size == (256, 256) and "64x64 out" in status  # 64 px shown enlarged twice


@pytest.mark.slow
def test_caption_api_through_gradio_client(client, demo, demo_module, tmp_path):
    path = digit_image(demo, demo_module, tmp_path / "digit.png")
    table = client.predict(handle_file(str(path)), 3, 9, 0, api_name="/caption")
    assert table["headers"] == ["caption", "score"] and 1 <= len(table["data"]) <= 3
    assert all(isinstance(caption, str) and caption and score < 0 for caption, score in table["data"])


@pytest.mark.slow
def test_concurrent_users_wait_in_the_queue(client, server):
    """Two users at once: both get their images (the second waits for the first instead of failing)."""
    other = Client(server, verbose=False)
    jobs = [
        c.submit(f"a handwritten digit {d}", 2, d, 1.0, 2, api_name="/generate") for c, d in ((client, 1), (other, 2))
    ]
    results = [job.result(timeout=GENERATION_SECONDS) for job in jobs]
    assert [len(result) for result in results] == [2, 2]


# The page in a real browser


@pytest.fixture
def browser(tmp_path):
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")  # fresh: no first-run state
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)  # no driver download
    yield driver
    driver.quit()


def set_number(driver, elem_id: str, value: int):
    field = driver.find_element(By.CSS_SELECTOR, f"#{elem_id} input[type=number]")
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(str(value), Keys.TAB)


def open_tab(driver, name: str):
    tabs = WebDriverWait(driver, 30).until(
        lambda d: [b for b in d.find_elements(By.CSS_SELECTOR, "button[role=tab]") if b.text.strip() == name]
    )
    tabs[0].click()


def prompt_box(driver):
    return WebDriverWait(driver, 60).until(lambda d: d.find_element(By.CSS_SELECTOR, "#prompt textarea, #prompt input"))


@pytest.mark.slow
@needs_chromium
def test_page_draws_and_captions_in_chromium(server, browser, demo, demo_module, tmp_path):
    browser.get(server)
    box = prompt_box(browser)
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys("a handwritten digit 4")
    set_number(browser, "num-images", 2)
    set_number(browser, "candidates", 2)
    browser.find_element(By.ID, "generate").click()
    WebDriverWait(browser, GENERATION_SECONDS).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "#gallery img")) == 2
    )
    assert browser.find_elements(By.CSS_SELECTOR, "#preview img"), "no row-by-row preview was shown"
    assert "2 image(s) of “a handwritten digit 4”" in browser.find_element(By.ID, "status").text
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    browser.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    browser.find_element(By.ID, "grid-download").click()
    (grid_file,) = WebDriverWait(browser, 30).until(lambda d: list(downloads.glob("*.png")))
    assert PIL.Image.open(grid_file).size == (2 * 128 + 2, 128)  # the two images side by side
    screenshot = tmp_path / "demo-text-to-image.png"
    assert browser.save_screenshot(str(screenshot))
    assert PIL.Image.open(screenshot).size[0] >= 1000
    if SCREENSHOT_COPY:
        shutil.copyfile(screenshot, SCREENSHOT_COPY)

    open_tab(browser, "Captioning")
    upload = WebDriverWait(browser, 30).until(
        lambda d: d.find_element(By.CSS_SELECTOR, "#caption-image input[type=file]")
    )
    upload.send_keys(str(digit_image(demo, demo_module, tmp_path / "digit.png")))
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#caption-image img"))
    browser.find_element(By.ID, "caption").click()
    cell = "#captions [data-testid^='cell-'][data-testid$='-{column}']"
    captions = WebDriverWait(browser, GENERATION_SECONDS).until(
        lambda d: [
            c.get_attribute("textContent").strip() for c in d.find_elements(By.CSS_SELECTOR, cell.format(column=0))
        ]
    )
    scores = [
        float(c.get_attribute("textContent")) for c in browser.find_elements(By.CSS_SELECTOR, cell.format(column=1))
    ]
    assert captions and all(captions) and len(scores) == len(captions) and scores == sorted(scores, reverse=True)
    assert browser.save_screenshot(str(tmp_path / "demo-captioning.png"))

    open_tab(browser, "About the model")
    facts = WebDriverWait(browser, 30).until(lambda d: d.find_element(By.ID, "facts"))
    assert f"{demo.model.num_parameters():,}" in facts.get_attribute("textContent")


@pytest.mark.slow
@needs_chromium
def test_page_shows_a_message_not_a_traceback_for_bad_input(server, browser):
    browser.get(server)
    box = prompt_box(browser)
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.DELETE)
    browser.find_element(By.ID, "generate").click()
    toasts = WebDriverWait(browser, 60).until(
        lambda d: [
            t.text for t in d.find_elements(By.CSS_SELECTOR, "[data-testid='toast-body']") if "Enter a prompt" in t.text
        ]
    )
    assert toasts
    assert "Traceback" not in browser.page_source

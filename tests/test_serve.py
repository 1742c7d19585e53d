"""fer_jax.serve: the JSON endpoint (every bad upload a 4xx with its reason, a photo predict's
rows and pictures), a real server under a small load, and the page in a real browser.

One Explainer (the shipped 64 px mini-Xception) serves every test: each CAM method compiles once.
"""
import base64
import concurrent.futures
import os
import socket
import threading
import time

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

import fixtures_real as fx
from fer_jax import pretrained, serve

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
LOAD_REQUESTS, LOAD_CONCURRENCY = 200, 4


def png(rgb: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", rgb if rgb.ndim == 2 else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return data.tobytes()


def decode_url(url: str) -> np.ndarray:
    """A PNG data URL -> (H, W, 3) uint8 BGR."""
    head, _, data = url.partition(",")
    assert head == "data:image/png;base64"
    image = cv2.imdecode(np.frombuffer(base64.b64decode(data), np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


@pytest.fixture(scope="module")
def explainer():
    return serve.Explainer.from_workdir(pretrained.path())


@pytest.fixture(scope="module")
def client(explainer):
    return TestClient(serve.create_app(explainer))


@pytest.fixture(scope="module")
def astronaut_png():
    return png(fx.astronaut())


def post(client, name: str, data: bytes, query: str = ""):
    return client.post(f"/api/predict{query}", files={"file": (name, data, "image/png")})


# --- the JSON endpoint ---------------------------------------------------------------

def test_a_photo_gives_predicts_rows_and_each_faces_pictures(client, explainer, astronaut_png):
    answer = post(client, "astronaut.png", astronaut_png, "?maps=true")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["width"], body["height"]) == (512, 512) and body["cam_method"] == "gradcam++"
    # The rows are predict's (its predictions.jsonl rows), the file named by its upload name.
    expected = [r.to_json() for r in explainer.predictor("gradcam++").predict(fx.astronaut())]
    for row in expected:
        row["path"] = "astronaut.png"
    assert body["rows"] == expected
    (row,) = body["rows"]
    assert row["status"] == "ok" and row["label"] == "Happiness"   # test_predict: 0.998
    x0, y0, x1, y1 = row["box"]
    assert 0 <= x0 < x1 <= 512 and 0 <= y0 < y1 <= 512
    (maps,) = body["maps"]
    assert maps["face"] == 0
    tiles = {k: decode_url(maps[k]) for k in ("crop", "cam", "attention", "au_map")}
    assert all(t.shape == (128, 128, 3) for t in tiles.values())
    # Each map is drawn over the face: the overlays differ from the bare crop.
    assert all(np.abs(tiles[k].astype(int) - tiles["crop"]).mean() > 5
               for k in ("cam", "attention", "au_map"))
    # Without maps=true: the rows only.
    assert "maps" not in post(client, "astronaut.png", astronaut_png).json()


def test_the_menu_chooses_the_cam_method(client, explainer, astronaut_png):
    info = client.get("/api/info").json()
    assert info["methods"] == explainer.methods and "gradcam" in info["methods"]
    assert "random" not in info["methods"] and info["default_method"] == "gradcam++"
    (row,) = post(client, "a.png", astronaut_png, "?cam=gradcam").json()["rows"]
    assert row["cam_method"] == "gradcam" and row["label"] == "Happiness"
    wrong = post(client, "a.png", astronaut_png, "?cam=nope")
    assert wrong.status_code == 400 and "unknown CAM method 'nope'" in wrong.json()["detail"]


def test_every_bad_upload_gets_its_4xx_and_reason_and_the_server_carries_on(client,
                                                                          astronaut_png):
    bad = {
        "empty.png": (b"", 400, "empty upload: empty.png has 0 bytes"),
        "notes.txt": (b"not an image at all", 415, "not an image: notes.txt"),
        "huge.bin": (b"\0" * (50 * 2 ** 20), 413, "upload too large: the limit is 10 MB"),
        "tall.png": (png(np.zeros((10_000, 64), np.uint8)), 422,
                     "image too large: 64 x 10000 px"),
        "wall.png": (png(np.full((240, 320, 3), 180, np.uint8)), 422, "no face found in wall.png"),
    }
    for name, (data, status, reason) in bad.items():
        answer = post(client, name, data)
        assert answer.status_code == status, (name, answer.text)
        assert answer.json()["detail"].startswith(reason), (name, answer.json())
    assert post(client, "wall.png", bad["wall.png"][0]).json()["rows"][0]["status"] == "no_face"
    missing = client.post("/api/predict")
    assert missing.status_code == 422 and missing.json()["detail"][0]["loc"] == ["body", "file"]
    assert post(client, "astronaut.png", astronaut_png).status_code == 200


def test_limits_hold_for_streamed_bodies_and_megapixels(explainer, astronaut_png):
    small = TestClient(serve.create_app(explainer, max_upload_bytes=1000, max_pixels=200_000))

    def chunks():   # no Content-Length: the server counts what arrives
        for _ in range(4):
            yield b"-" * 600
    streamed = small.post("/api/predict", content=chunks(),
                          headers={"content-type": "multipart/form-data; boundary=xyz"})
    assert streamed.status_code == 413
    assert streamed.json()["detail"] == "upload too large: the limit is 1000 bytes"
    wide = TestClient(serve.create_app(explainer, max_pixels=200_000))
    answer = post(wide, "astronaut.png", astronaut_png)   # 512 x 512 = 0.26 megapixels
    assert answer.status_code == 422 and "0.2 megapixels" in answer.json()["detail"]


def test_uploads_are_written_only_to_a_temporary_folder_that_is_removed(explainer, tmp_path,
                                                                         monkeypatch,
                                                                         astronaut_png):
    monkeypatch.setattr(serve.tempfile, "tempdir", str(tmp_path))
    seen = []
    explain = explainer.explain

    def spy(path, method):
        seen.append(path)
        return explain(path, method)
    monkeypatch.setattr(explainer, "explain", spy)
    answer = serve.explain_upload(explainer, astronaut_png, "../../x/passwd", "gradcam++", False)
    assert answer["file"] == answer["rows"][0]["path"] == "passwd"   # a name, never a path
    assert len(seen) == 1 and os.path.dirname(os.path.dirname(seen[0])) == str(tmp_path)
    assert os.listdir(tmp_path) == []


def test_the_page_and_its_script_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and '<script src="/static/page.js">' in page.text
    assert client.get("/static/page.js").status_code == 200


# --- an exported model (python -m fer_jax.export) -------------------------------------

@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from fer_jax import export, runs
    folder = str(tmp_path_factory.mktemp("exported"))
    export.export_model(runs.restore(pretrained.path()), folder, ("gradcam++", "layercam"),
                        platforms=("cpu",))
    return folder


def test_an_exported_model_serves_the_live_models_rows_without_attention(exported, explainer,
                                                                         astronaut_png):
    served = serve.Explainer.from_export(exported)
    assert served.methods == ["gradcam++", "layercam"] and served.default == "gradcam++"
    client = TestClient(serve.create_app(served))
    assert client.get("/api/info").json()["methods"] == ["gradcam++", "layercam"]
    body = post(client, "astronaut.png", astronaut_png, "?maps=true").json()
    (row,) = body["rows"]
    (live,) = [r.to_json() for r in explainer.predictor("gradcam++").predict(fx.astronaut())]
    assert row["box"] == live["box"] and row["landmarks"] == live["landmarks"]
    assert row["label"] == live["label"] == "Happiness" and row["cam_method"] == "gradcam++"
    for name, p in live["probabilities"].items():
        assert abs(row["probabilities"][name] - p) <= 1e-5
    assert abs(row["cam_cos"] - live["cam_cos"]) <= 1e-4
    assert row["att_cos"] is None and live["att_cos"] is not None   # the artifact has no features
    (maps,) = body["maps"]
    assert maps["attention"] is None and decode_url(maps["cam"]).shape == (128, 128, 3)
    (other,) = post(client, "astronaut.png", astronaut_png, "?cam=layercam").json()["rows"]
    assert other["cam_method"] == "layercam"
    wrong = post(client, "a.png", astronaut_png, "?cam=gradcam")   # not in the artifact
    assert wrong.status_code == 400 and "['gradcam++', 'layercam']" in wrong.json()["detail"]
    with pytest.raises(serve.errors.ConfigError, match="not in the exported maps"):
        serve.Explainer.from_export(exported, methods=("scorecam",))


# --- a real server on loopback ------------------------------------------------------

@pytest.fixture(scope="module")
def live_server(explainer):
    """uvicorn in a thread on 127.0.0.1 (a port the OS chose); its base URL."""
    import uvicorn
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(serve.create_app(explainer), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield "http://127.0.0.1:%d" % sock.getsockname()[1]
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


def test_the_endpoint_answers_a_bounded_load_without_error(live_server):
    import httpx2
    photo = png(fx.face_crop("orig", 200, margin=0.6))
    local = threading.local()

    def one(_) -> tuple:
        if not hasattr(local, "client"):
            local.client = httpx2.Client(base_url=live_server, timeout=60)
        start = time.perf_counter()
        answer = local.client.post("/api/predict", files={"file": ("face.png", photo)})
        return answer.status_code, answer.json(), time.perf_counter() - start

    one(0)   # compiled already by the tests above when run with them; not timed either way
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(LOAD_CONCURRENCY) as pool:
        results = list(pool.map(one, range(LOAD_REQUESTS)))
    wall = time.perf_counter() - start
    assert [status for status, _, _ in results] == [200] * LOAD_REQUESTS
    assert {len(body["rows"]) for _, body, _ in results} == {1}
    assert {body["rows"][0]["label"] for _, body, _ in results} == {"Happiness"}
    latency = np.array([t for _, _, t in results]) * 1000
    print(f"serve load: {LOAD_REQUESTS} requests of one 200 px face, {LOAD_CONCURRENCY} at a "
          f"time: latency p50 {np.percentile(latency, 50):.0f} ms, "
          f"p95 {np.percentile(latency, 95):.0f} ms; {LOAD_REQUESTS / wall:.1f} faces/s "
          f"({1000 * wall / LOAD_REQUESTS:.0f} ms a face)")


def test_a_real_client_gets_413_for_50_mb_and_the_server_keeps_serving(live_server):
    import httpx2
    with httpx2.Client(base_url=live_server, timeout=60) as c:
        try:
            answer = c.post("/api/predict", files={"file": ("big.bin", b"\0" * (50 * 2 ** 20))})
            assert answer.status_code == 413, answer.text
            assert "the limit is 10 MB" in answer.json()["detail"]
        except httpx2.TransportError:
            pass   # the server may close before the client has sent all 50 MB
        assert c.get("/api/info").status_code == 200


# --- the page in a real browser -----------------------------------------------------

@pytest.mark.skipif(not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
                    reason=f"Debian's chromium is not installed ({CHROMIUM}, {CHROMEDRIVER}): "
                           "apt-get install chromium chromium-driver (.ci/run does)")
def test_the_page_shows_a_photos_faces_and_maps_in_a_real_browser(live_server, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1150,900"):
        options.add_argument(flag)
    photo = tmp_path / "astronaut.png"
    photo.write_bytes(png(fx.astronaut()))
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.get(live_server + "/")
        wait = WebDriverWait(driver, 60)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#cam option"))
        # A bad file: the reason on the page, in the error style.
        driver.find_element(By.ID, "file").send_keys(str(notes))
        wait.until(lambda d: "not an image" in d.find_element(By.ID, "status").text)
        assert driver.find_element(By.ID, "status").get_attribute("class") == "error"
        driver.find_element(By.ID, "file").send_keys(str(photo))
        wait.until(lambda d: "face found" in d.find_element(By.ID, "status").text)
        cards = driver.find_elements(By.CSS_SELECTOR, "#faces .face")
        assert len(cards) == 1 and len(driver.find_elements(By.CSS_SELECTOR, "#boxes rect")) == 1
        assert cards[0].find_element(By.TAG_NAME, "h2").text.startswith("Face 0: Happiness")
        drawn = "return Array.from(document.querySelectorAll('#faces img.cam, #photo'))" \
                ".map(i => i.complete ? i.naturalWidth : 0)"
        wait.until(lambda d: all(w > 0 for w in d.execute_script(drawn)))
        assert sorted(driver.execute_script(drawn)) == [128, 512]   # the CAM tile, the photo
        assert "CAM: gradcam++" in cards[0].text and "CAM-COS" in cards[0].text
        shot = os.environ.get("FER_JAX_SERVE_SCREENSHOT", str(tmp_path / "serve_page.png"))
        assert driver.save_screenshot(shot)
        assert cv2.imread(shot) is not None
    finally:
        driver.quit()

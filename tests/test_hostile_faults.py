"""Hostile inputs and faults, second round (issue 26): checkpoint dtypes and builder arguments, EXIF
orientation, deflate bombs, hostile download servers, a slow MLflow server, check-metrics values,
SIGTERM during training. Each case ends in one line naming the file and the problem, never a silent
wrong number."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from benchmark.core import checkpoints, io
from benchmark.core.registry import build_model

REPO = Path(__file__).resolve().parents[1]


# --- checkpoint dtypes, non-finite weights, builder arguments -------------------------------------

def _prenet_ckpt(path: Path, args: dict | None = None, edit=None) -> Path:
    torch.manual_seed(0)
    model = build_model("prenet", stages=2, channels=8)
    state = model.state_dict()
    if edit:
        state = edit(state)
    io.save_torch(path, {"format": io.CKPT_FORMAT, "model_name": "prenet",
                         "model_args": {"stages": 2, "channels": 8} if args is None else args, "state_dict": state})
    return path


def test_good_checkpoint_still_loads(tmp_path):
    model = checkpoints.load_model(_prenet_ckpt(tmp_path / "model.pt"), expect="prenet")
    assert next(model.parameters()).dtype == torch.float32 and not next(model.parameters()).is_meta


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.complex64])
def test_non_float_weights_refused_naming_file_and_tensor(tmp_path, dtype):
    def cast(state):
        k = next(iter(state))
        return {**state, k: state[k].to(dtype)}
    path = _prenet_ckpt(tmp_path / "model.pt", edit=cast)
    first = next(iter(build_model("prenet", stages=2, channels=8).state_dict()))
    with pytest.raises(checkpoints.CheckpointError) as e:
        checkpoints.load_model(path)
    msg = str(e.value)
    assert str(path) in msg and first in msg and str(dtype).removeprefix("torch.") in msg and "\n" not in msg


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_refused_naming_file(tmp_path, bad):
    def poison(state):
        k = next(iter(state))
        t = state[k].clone()
        t.view(-1)[0] = bad
        return {**state, k: t}
    path = _prenet_ckpt(tmp_path / "model.pt", edit=poison)
    with pytest.raises(checkpoints.CheckpointError, match="non-finite") as e:
        checkpoints.load_model(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("args, word", [({"stages": 2, "channels": 8000}, "channels"),
                                        ({"stages": 10**6, "channels": 8}, "stages"),
                                        ({"stages": -1, "channels": 8}, "stages"),
                                        ({"stages": 2, "channels": "8"}, "channels"),
                                        ({"stages": 2, "channels": 8, "evil": 1}, "evil")])
def test_hostile_model_args_refused_before_building(tmp_path, args, word):
    path = _prenet_ckpt(tmp_path / "model.pt", args=args)
    t = time.monotonic()
    with pytest.raises(checkpoints.CheckpointError) as e:
        checkpoints.load_model(path)
    assert time.monotonic() - t < 10
    assert str(path) in str(e.value) and f"model_args.{word}" in str(e.value)


def test_model_args_that_imply_other_shapes_refused(tmp_path):
    path = _prenet_ckpt(tmp_path / "model.pt", args={"stages": 2, "channels": 16})  # weights are 8 wide
    with pytest.raises(checkpoints.CheckpointError, match="do not fit") as e:
        checkpoints.load_model(path)
    assert str(path) in str(e.value)


def test_official_int_and_nan_weights_refused(tmp_path):
    from benchmark.core.official import read_state

    state = build_model("prenet").state_dict()
    k = next(iter(state))
    for name, edit in (("int", state[k].long()), ("nan", torch.full_like(state[k], float("nan")))):
        path = tmp_path / f"{name}.pth"
        torch.save({**state, k: edit}, path)
        with pytest.raises(ValueError) as e:
            read_state(path, "PReNet")
        assert str(path) in str(e.value) and k in str(e.value)
    torch.save(state, tmp_path / "ok.pth")
    assert read_state(tmp_path / "ok.pth", "PReNet").keys() == state.keys()


# --- EXIF orientation ----------------------------------------------------------------------------

def _scene(w: int, h: int):
    import numpy as np
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    rgb = np.stack([x * 255 / w, y * 255 / h, 128 + 100 * np.sin(x / 5) * np.cos(y / 7)], axis=-1)
    return rgb.clip(0, 255).astype(np.uint8)


def _phone_jpeg(path: Path, upright) -> Path:
    """What a phone writes: the sensor's pixels (turned 90 degrees against the scene) plus
    orientation 6 ("rotate 90 degrees clockwise to show")."""
    from PIL import Image
    im = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # counter-clockwise: the sensor's view
    exif = Image.Exif()
    exif[0x0112] = 6
    im.save(path, format="JPEG", quality=95, exif=exif.tobytes())
    return path


def test_exif_rotated_input_scores_like_the_upright_one(tmp_path):
    from PIL import Image

    from benchmark.data import images
    from benchmark.evaluation.metrics import psnr_rgb

    scene = _scene(64, 64)  # square: unoriented, it would be scored silently against the wrong pixels
    Image.fromarray(scene).save(tmp_path / "target.png")
    Image.fromarray(scene).save(tmp_path / "upright.jpg", quality=95)
    _phone_jpeg(tmp_path / "phone.jpg", scene)
    target = images.load_rgb(tmp_path / "target.png")
    upright = psnr_rgb(images.load_rgb(tmp_path / "upright.jpg"), target)
    phone = psnr_rgb(images.load_rgb(tmp_path / "phone.jpg"), target)
    assert upright > 30 and abs(phone - upright) < 1.0, (upright, phone)
    # the target itself as a phone JPEG: the pair of two rotated files scores like two upright ones
    _phone_jpeg(tmp_path / "phone_target.jpg", scene)
    both = psnr_rgb(images.load_rgb(tmp_path / "phone.jpg"), images.load_rgb(tmp_path / "phone_target.jpg"))
    assert both > 40


def test_exif_rotated_sizes_and_derain_output_upright(tmp_path, capsys):
    from PIL import Image

    from benchmark.data import images
    from benchmark.tools import cli

    scene = _scene(64, 48)  # 64 wide, 48 high; the file stores 48 x 64 pixels
    (tmp_path / "in").mkdir()
    src = _phone_jpeg(tmp_path / "in" / "phone.jpg", scene)
    info = images.inspect(src)
    assert (info.width, info.height) == (64, 48)
    assert images.load_rgb(src).shape == (48, 64, 3)
    assert cli.main(["derain", "--model", "input", str(tmp_path / "in"), "-o", str(tmp_path / "out")]) == 0
    outs = list((tmp_path / "out").rglob("*.png"))
    assert len(outs) == 1
    with Image.open(outs[0]) as out:
        assert out.size == (64, 48) and out.getexif().get(0x0112, 1) == 1
    capsys.readouterr()


# --- deflate-bomb checkpoint ---------------------------------------------------------------------

def test_deflate_bomb_checkpoint_refused_before_inflating(tmp_path):
    import zipfile

    plain = tmp_path / "plain.pt"
    torch.save({"w": torch.zeros(8 * 2**20)}, plain)  # 32 MiB of zeros, stored as torch writes them
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    assert bomb.stat().st_size < 2**20  # what a download or a copy would see
    assert io.load_torch(plain)["w"].numel() == 8 * 2**20
    with pytest.raises(ValueError, match="declare") as e:
        io.load_torch(bomb)
    assert str(bomb) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ValueError, match="decompression bomb"):
        checkpoints.load_model(bomb)


# --- hostile download servers --------------------------------------------------------------------

class _Hostile:
    """A local HTTP server whose one file is served by ``behaviour(handler, body)``."""

    def __init__(self, behaviour, body: bytes = b""):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        outer = self

        class H(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                outer.ranges.append(self.headers.get("Range"))
                try:
                    behaviour(self, body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *a):
                pass

        self.ranges: list = []
        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.srv.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}/f.zip"
        threading.Thread(target=self.srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


def _endless(h, body):
    h.send_response(200)
    h.end_headers()
    chunk = b"\0" * 65536
    for _ in range(2000):  # 128 MiB at most, should the client never stop
        h.wfile.write(chunk)


def _trickle(h, body):
    h.send_response(200)
    h.send_header("Content-Length", "100000")
    h.end_headers()
    for _ in range(200):
        h.wfile.write(b"x")
        h.wfile.flush()
        time.sleep(0.05)


def _206_from_zero(h, body):  # answers a Range request with 206 but sends (and says) byte 0 onwards
    h.send_response(206 if h.headers.get("Range") else 200)
    if h.headers.get("Range"):
        h.send_header("Content-Range", f"bytes 0-{len(body) - 1}/{len(body)}")
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)


def _206_lying(h, body):  # claims the asked-for range, sends the whole body from byte 0
    rng = h.headers.get("Range")
    h.send_response(206 if rng else 200)
    if rng:
        start = int(rng.split("=")[1].rstrip("-"))
        h.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)


@pytest.fixture
def hostile(monkeypatch):
    from benchmark.datasets import transfer
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setattr(transfer, "RETRY_DELAY_S", 0.0)
    made = []

    def make(behaviour, body=b""):
        made.append(_Hostile(behaviour, body))
        return made[-1]
    yield make
    for s in made:
        s.close()


@pytest.mark.parametrize("known_size", [True, False])
def test_endless_body_capped_and_part_removed(tmp_path, hostile, known_size):
    from benchmark.datasets import transfer
    srv = hostile(_endless)
    dest = tmp_path / "f.zip"
    kw = {"size": 100_000} if known_size else {"max_bytes": 300_000}
    t = time.monotonic()
    with pytest.raises(transfer.DatasetError, match="exceeds") as e:
        transfer.http_download(srv.url, dest, retries=0, progress=False, **kw)
    assert time.monotonic() - t < 20 and srv.url in str(e.value)
    assert not dest.exists() and not dest.with_name("f.zip.part").exists()


def test_trickling_server_aborted_by_minimum_rate(tmp_path, hostile, monkeypatch):
    from benchmark.datasets import transfer
    monkeypatch.setattr(transfer, "RATE_WINDOW_S", 1.0)
    monkeypatch.setattr(transfer, "MIN_RATE_BPS", 100)
    srv = hostile(_trickle)
    t = time.monotonic()
    with pytest.raises(transfer.DatasetError, match="too slow"):
        transfer.http_download(srv.url, tmp_path / "f.zip", retries=0, progress=False, timeout=30)
    assert time.monotonic() - t < 5  # the server would take 10 s and its socket never times out


@pytest.mark.parametrize("behaviour", [_206_from_zero, _206_lying])
def test_206_never_spliced(tmp_path, hostile, behaviour):
    from benchmark.datasets import transfer
    body = bytes(range(256)) * 400
    srv = hostile(behaviour, body)
    dest = tmp_path / "f.zip"
    dest.with_name("f.zip.part").write_bytes(body[:len(body) // 2])  # a killed earlier download
    if behaviour is _206_from_zero:  # an honest Content-Range that does not fit: start over
        transfer.http_download(srv.url, dest, retries=1, progress=False)
        assert srv.ranges[0] == f"bytes={len(body) // 2}-" and srv.ranges[1] is None
    else:  # no published checksum (resume=False): the .part is dropped, one whole response
        transfer.http_download(srv.url, dest, retries=1, progress=False, resume=False)
        assert srv.ranges == [None]
    assert dest.read_bytes() == body


# --- a trickling MLflow server; check-metrics on wrong values ------------------------------------

def test_mlflow_probe_bounded_in_total_against_a_trickling_server(monkeypatch):
    import socket
    import threading

    from benchmark.core import tracking

    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setattr(tracking, "PROBE_TIMEOUT_S", 1.0)
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    stop = threading.Event()

    def trickle():  # a byte a second: every read succeeds within the per-read timeout
        conn, _ = lsock.accept()
        conn.recv(4096)
        for b in b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n":
            if stop.wait(0.5):
                break
            try:
                conn.send(bytes([b]))
            except OSError:
                break
        conn.close()
    threading.Thread(target=trickle, daemon=True).start()
    t = time.monotonic()
    why = tracking._probe(f"http://127.0.0.1:{lsock.getsockname()[1]}")
    took = time.monotonic() - t
    stop.set()
    lsock.close()
    assert why and "1 s" in why and took <= 1.5, (why, took)


def _gate_run(tmp_path, value):
    runs = tmp_path / "runs"
    (runs / "eval" / "prenet-rain-synth").mkdir(parents=True)
    m = {"key": "prenet-rain-synth", "model": "prenet", "dataset": "rain-synth", "profile": "ci", "params_total": 10,
         "results": {"rain-synth": {"psnr_y": value, "n_images": 4}}}
    (runs / "eval" / "prenet-rain-synth" / "metrics.json").write_text(__import__("json").dumps(m))
    ref = tmp_path / "ref.json"
    ref.write_text('{"prenet-rain-synth/rain-synth/psnr_y": 30.0, "prenet-rain-synth/params_total": 10}')
    return runs, ref


@pytest.mark.parametrize("value", ["30.0", [30.0], None, {"a": 1}])
def test_check_metrics_non_number_one_line(tmp_path, capsys, value):
    from benchmark.tools import gate

    runs, ref = _gate_run(tmp_path, value)
    assert gate.main(["--runs", str(runs), "--reference", str(ref), "--params", str(tmp_path / "none.yaml")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "metrics.json: results.rain-synth.psnr_y is" in err[0] and "not a number" in err[0], err


@pytest.mark.parametrize("text", ['{"prenet-rain-synth/rain-synth/psnr_y": ', '{"prenet-rain-synth/params_total": "10"}'])
def test_check_metrics_bad_reference_names_the_file(tmp_path, capsys, text):
    from benchmark.tools import gate

    runs, ref = _gate_run(tmp_path, 30.0)
    ref.write_text(text)
    assert gate.main(["--runs", str(runs), "--reference", str(ref), "--params", str(tmp_path / "none.yaml")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(ref) in err[0], err

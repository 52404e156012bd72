"""The teacher client against the scripted teacher server (real HTTP), plus its pure parts:
image encoding, URL scrubbing and the token buckets.

    .venv/bin/pytest -q -p no:cacheprovider tests/test_teacher_client.py
"""

from __future__ import annotations

import asyncio
import base64
import io
import time

import pytest
from PIL import Image

from curation.config import TeacherConfig
from curation.ratelimit import RateLimits, TokenBucket
from curation.teacher import Completion, TeacherClient, image_data_url, public_url

# -- images -----------------------------------------------------------------------------------


def _decode(url: str) -> tuple[str, Image.Image, bytes]:
    head, data = url.split(",", 1)
    raw = base64.b64decode(data)
    return head, Image.open(io.BytesIO(raw)), raw


def test_small_jpeg_goes_byte_for_byte(tmp_path):
    path = tmp_path / "a.jpg"
    Image.new("RGB", (224, 200), (10, 200, 30)).save(path, quality=85)
    head, img, raw = _decode(image_data_url(path, max_side=256, max_pixels=256 * 256))
    assert head == "data:image/jpeg;base64" and raw == path.read_bytes()


def test_large_image_is_fitted_by_side_and_by_pixels(tmp_path):
    path = tmp_path / "big.png"
    Image.new("RGBA", (1000, 500), (200, 10, 10, 255)).save(path)
    head, img, _ = _decode(image_data_url(path, max_side=400, max_pixels=10**6))
    assert head == "data:image/jpeg;base64" and img.size == (400, 200) and img.mode == "RGB"
    _, img, _ = _decode(image_data_url(path, max_side=4000, max_pixels=20_000))
    assert img.width * img.height <= 20_000 and abs(img.width / img.height - 2) < 0.05


def test_exif_rotated_jpeg_is_turned_upright(tmp_path):
    path = tmp_path / "rot.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    Image.new("RGB", (60, 30), (0, 0, 255)).save(path, exif=exif)
    _, img, raw = _decode(image_data_url(path, max_side=512, max_pixels=512 * 512))
    assert raw != path.read_bytes() and img.size == (30, 60)


def test_unreadable_image_raises_for_the_caller_to_record(tmp_path):
    path = tmp_path / "bad.jpg"
    path.write_bytes(b"not an image")
    with pytest.raises(OSError):
        image_data_url(path, 512, 512 * 512)


def test_public_url_drops_credentials():
    assert public_url("http://u:pw@127.0.0.1:8000/v1/?k=s") == "http://127.0.0.1:8000/v1"


# -- token buckets ----------------------------------------------------------------------------


def test_bucket_grants_a_burst_then_asks_to_wait():
    bucket = TokenBucket(per_minute=6, burst_seconds=20)  # 0.1 per second, burst of 2
    assert bucket.wait_time(1) == 0 and bucket.wait_time(1) == 0
    wait = bucket.wait_time(1)
    assert 9 < wait <= 10 + 1e-6


def test_bucket_slows_down_on_throttle_and_recovers():
    bucket = TokenBucket(per_minute=600)
    bucket.slow_down()
    assert bucket.rate == pytest.approx(10 * 0.7)
    for _ in range(100):
        bucket.recover()
    assert bucket.rate == pytest.approx(10)


def test_throttle_pauses_everyone_until_retry_after():
    limits = RateLimits(rpm=None, tpm=None)
    limits.on_throttle(retry_after=0.2)
    assert limits.throttled == 1
    assert limits.paused_until - time.monotonic() > 0.1


def test_token_bucket_settles_estimates():
    limits = RateLimits(rpm=None, tpm=6000)  # 100 tokens/s, burst 100
    assert asyncio.run(limits.acquire(tokens=80)) == 0.0
    limits.settle(estimated=80, actual=20)  # 60 tokens given back
    assert limits.tokens.level == pytest.approx(80, abs=1)


def test_completion_defaults_are_a_failure_record():
    c = Completion(status="failed", error="timeout: x")
    assert c.text is None and c.prompt_tokens == 0 and c.attempts == 0


def test_client_refuses_an_empty_endpoint_list():
    with pytest.raises(ValueError, match="base_urls"):
        TeacherClient(TeacherConfig(base_urls=[]), api_key="k")

"""The teacher client against the scripted teacher server (real HTTP), plus its pure parts:
image encoding, URL scrubbing and the token buckets.

    .venv/bin/pytest -q -p no:cacheprovider tests/test_teacher_client.py
"""

from __future__ import annotations

import asyncio
import base64
import io
import time
from pathlib import Path

import pytest
from PIL import Image

from curation.core.config import TeacherConfig
from curation.teacher.answers import Completion
from curation.teacher.client import TeacherClient, public_url
from curation.teacher.images import image_data_url
from curation.teacher.ratelimit import RateLimits, TokenBucket

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


def test_client_refuses_an_empty_endpoint_list():
    with pytest.raises(ValueError, match="base_urls"):
        TeacherClient(TeacherConfig(base_urls=[]), api_key="k")


# -- against the scripted teacher -------------------------------------------------------------


def _messages(image: Path) -> list[dict]:
    url = image_data_url(image, 512, 512 * 512)
    return [{"role": "system", "content": "You identify birds."},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                         {"type": "text", "text": "What kind of bird is this?"}]}]


def _image(world: Path) -> Path:
    return sorted(world.glob("*/*.png"))[0]


def _draw(server, messages, indices=(0,), **config) -> tuple[dict[int, Completion], TeacherClient]:
    cfg = TeacherConfig(base_urls=[server.base_url], backoff_s=0.01, backoff_max_s=0.02,
                        **config)
    results: dict[int, Completion] = {}

    async def go() -> TeacherClient:
        async with TeacherClient(cfg, api_key="sk-test") as client:
            await client.sample(messages, list(indices), lambda i, c: results.__setitem__(i, c))
        return client

    return results, asyncio.run(go())


@pytest.mark.parametrize("transport", ["aiohttp", "sdk"])
def test_both_transports_get_the_same_answer(synthetic_world, start_teacher, transport):
    server = start_teacher()
    results, _ = _draw(server, _messages(_image(synthetic_world)), transport=transport)
    answer = results[0]
    assert answer.status == "ok" and "<answer>" in answer.text and answer.attempts == 1
    assert answer.prompt_tokens > 0 and answer.completion_tokens > 0
    assert answer.endpoint == server.base_url
    again, _ = _draw(server, _messages(_image(synthetic_world)),
                     transport="sdk" if transport == "aiohttp" else "aiohttp")
    assert again[0].text == answer.text  # same body, same seed: same answer either way


@pytest.mark.parametrize(("flags", "reason"), [
    ({"rate_500": 1.0}, "http 500"),
    ({"rate_503": 1.0, "retry_after": 0.01}, "http 503"),
    ({"rate_malformed": 1.0}, "malformed"),
    ({"rate_reset": 1.0}, "connection"),
    ({"rate_hang": 1.0, "hang_seconds": 30}, "timeout"),
    ({"rate_429": 1.0, "retry_after": 0.01}, "http 429"),
])
def test_retryable_faults_fail_with_reason_after_max_attempts(synthetic_world, start_teacher,
                                                              flags, reason):
    server = start_teacher(**flags)
    results, client = _draw(server, _messages(_image(synthetic_world)), max_attempts=3,
                            timeout_s=0.5)
    failed = results[0]
    assert failed.status == "failed" and failed.error.startswith(reason), failed.error
    assert failed.attempts == 3 and server.stats(log=False)["counts"]["requests"] == 3
    assert client.counts["retried"] == 2 and client.counts["failed"] == 1
    if reason == "http 429":
        assert client.limits.throttled == 3


def test_client_errors_are_not_retried(start_teacher):
    server = start_teacher()
    messages = [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/bird.jpg"}},
        {"type": "text", "text": "What bird?"}]}]
    results, client = _draw(server, messages, max_attempts=5)
    assert results[0].status == "failed" and results[0].error.startswith("http 400")
    assert results[0].attempts == 1 and server.stats(log=False)["counts"]["requests"] == 1


def _draw_groups(server, messages, groups, **config):
    """Several `sample` calls on one client: (results per group, client)."""
    cfg = TeacherConfig(base_urls=[server.base_url], backoff_s=0.01, backoff_max_s=0.02,
                        **config)
    results: list[dict[int, Completion]] = [{} for _ in groups]

    async def go() -> TeacherClient:
        async with TeacherClient(cfg, api_key="sk-test") as client:
            for found, indices in zip(results, groups, strict=True):
                await client.sample(messages, list(indices), found.__setitem__)
        return client

    return results, asyncio.run(go())


def test_n_is_used_then_detected_when_ignored(synthetic_world, start_teacher):
    messages = _messages(_image(synthetic_world))
    honours = start_teacher()
    # The first request of 3+ samples goes as 1 + 2 (it teaches how the server counts
    # usage over n); later ones go whole.
    (first, later), client = _draw_groups(honours, messages, [(0, 1, 2), (3, 4, 5)])
    assert sorted(first) == [0, 1, 2] and sorted(later) == [3, 4, 5]
    assert client.n_supported is True and client.usage_summed is False
    assert [e["n"] for e in honours.stats()["log"]] == [None, 2, 3]
    assert len({c.text for c in later.values()}) > 1  # three samples, not one thrice
    ignores = start_teacher(honour_n=False)
    results, client = _draw(ignores, messages, indices=(0, 1, 2))
    assert sorted(results) == [0, 1, 2] and client.n_supported is False
    assert all(c.status == "ok" for c in results.values())
    assert ignores.stats(log=False)["counts"]["requests"] == 3  # 1 with n=3, then 2 single


def test_gate_stops_before_sending(synthetic_world, start_teacher):
    server = start_teacher()
    cfg = TeacherConfig(base_urls=[server.base_url])

    async def go() -> int:
        async with TeacherClient(cfg, api_key="k") as client:
            return await client.sample(_messages(_image(synthetic_world)), [0, 1],
                                       lambda i, c: None, gate=lambda: True)

    assert asyncio.run(go()) == 0
    assert server.stats(log=False)["counts"]["requests"] == 0


def test_rpm_limit_spaces_requests(synthetic_world, start_teacher):
    """With rpm=120 (2/s, burst 2), 5 requests cannot all start within the first second."""
    server = start_teacher()
    results, client = _draw(server, _messages(_image(synthetic_world)),
                            indices=(0, 1, 2, 3, 4), rpm=120, use_n=False)
    assert len(results) == 5
    starts = sorted(e["t"] for e in server.stats()["log"])
    assert starts[-1] - starts[0] >= 1.0


def test_tpm_limit_spaces_requests_by_their_tokens(synthetic_world, start_teacher):
    """A request is estimated at ~320 tokens and really uses ~130 (the estimate is settled
    with the usage): at 7,800 TPM (130/s, burst 130) three cannot start within a second."""
    server = start_teacher()
    results, client = _draw(server, _messages(_image(synthetic_world)), indices=(0, 1, 2),
                            tpm=7_800, max_tokens=100, image_max_pixels=256 * 256, use_n=False)
    used = sum(c.prompt_tokens + c.completion_tokens for c in results.values())
    assert used > 2 * 130  # what the bucket must have waited for
    assert len(results) == 3 and all(c.status in ("ok", "length") for c in results.values())
    starts = sorted(e["t"] for e in server.stats()["log"])
    assert starts[-1] - starts[0] >= 1.0

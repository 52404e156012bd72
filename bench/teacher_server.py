"""Benchmark: how fast is the scripted teacher server? (It must never be the bottleneck.)

Starts `finecot synthetic teacher` in its own process, then drives it from this process
with a raw aiohttp client (pre-built JSON bodies, one 64 px PNG per request):

1. sustained requests/s with zero injected latency, with distinct images (every request a
   new image: decode + read each time) and with a pool of images sent again and again
   (the server's perception cache, as when a client asks for several samples per image);
2. the latency the server adds on top of an injected fixed latency (p50 / p99), at a
   concurrency low enough that neither side saturates.

Also printed: the server's CPU time per request (from /proc), which does not depend on what
else runs on the machine: 1 / that is what one free core sustains.

    .venv/bin/python bench/teacher_server.py                   # defaults below
    .venv/bin/python bench/teacher_server.py --requests 20000 --concurrency 128
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import time

import aiohttp
import numpy as np
from teacher_process import cpu_seconds, start_teacher

from curation.synthetic.draw import render
from curation.synthetic.world import world_classes


def bodies(count: int, size: int) -> list[bytes]:
    classes = world_classes(24)
    out = []
    for i in range(count):
        image = render(classes[i % 24]["attributes"], np.random.default_rng([i, 1]), size)
        buf = io.BytesIO()
        image.save(buf, "PNG")
        url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
        out.append(json.dumps({"model": "t", "seed": i, "max_tokens": 1024, "messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                         {"type": "text", "text": "Which sub-category is this bird?"}]}
        ]}).encode())
    return out


async def drive(url: str, payloads: list[bytes], total: int, concurrency: int) -> tuple[float, list[float]]:
    """Send `total` requests (cycling over payloads) with `concurrency` workers."""
    latencies: list[float] = []
    next_index = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal next_index
            while next_index < total:
                body = payloads[next_index % len(payloads)]
                next_index += 1
                t0 = time.perf_counter()
                async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
                    await resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"HTTP {resp.status}")
                latencies.append(time.perf_counter() - t0)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - start, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=6000, help="requests per throughput run")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--pool", type=int, default=64, help="distinct images of the cached run")
    parser.add_argument("--latency", type=float, default=0.05, help="injected latency of run 2 (s)")
    parser.add_argument("--latency-concurrency", type=int, default=16,
                        help="concurrency of run 2 (low enough that neither side saturates)")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; client: raw aiohttp, concurrency {args.concurrency}; "
          f"{args.size} px PNG images")

    distinct = bodies(args.requests, args.size)
    pool = distinct[: args.pool]
    server, root = start_teacher()
    try:
        url = f"{root}/v1/chat/completions"
        asyncio.run(drive(url, pool, 500, args.concurrency))  # warm-up
        for name, payloads in (("distinct images", distinct), (f"pool of {args.pool} images", pool)):
            cpu0 = cpu_seconds(server.pid)
            wall, lat = asyncio.run(drive(url, payloads, args.requests, args.concurrency))
            cpu = (cpu_seconds(server.pid) - cpu0) / args.requests
            p50, p99 = np.percentile(lat, [50, 99]) * 1000
            print(f"zero latency, {name:>20}: {args.requests / wall:8.0f} req/s "
                  f"(latency p50 {p50:.1f} ms, p99 {p99:.1f} ms at concurrency {args.concurrency}); "
                  f"server CPU {cpu * 1000:.2f} ms/request = {1 / cpu:.0f} req/s per free core")
    finally:
        server.terminate()
        server.wait(10)

    server, root = start_teacher("--latency", str(args.latency))
    try:
        url = f"{root}/v1/chat/completions"
        n = min(args.requests, 3000)
        c = args.latency_concurrency
        wall, lat = asyncio.run(drive(url, pool, n, c))
        added = (np.array(lat) - args.latency) * 1000
        print(f"injected latency {args.latency * 1000:.0f} ms, concurrency {c}: {n / wall:.0f} req/s "
              f"(ideal {c / args.latency:.0f}); added latency p50 "
              f"{np.percentile(added, 50):.1f} ms, p99 {np.percentile(added, 99):.1f} ms")
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()

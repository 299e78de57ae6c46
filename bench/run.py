"""Benchmarks, each beside a floor measured in the same run (the machines are shared and noisy).

    .venv/bin/python -m bench.run          # or: make bench

Writes a table to stdout and to bench/RESULTS.md. Loopback only: a private Redis, gunicorn
serving the app, nothing else. Stages measured so far: validation, submit, status (issue 7
lists dispatch, reports and memory too; not measured yet).
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import phonenumbers
import redis
import requests

from bulksms import numbers
from bulksms.embedded import free_port, start_redis, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
KEY = "bench-key-0123456789"
AREAS = (201, 202, 212, 213, 305, 312, 415, 617, 646, 718, 917)


def us_numbers(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    found: set[str] = set()
    while len(found) < count:
        found.add(f"+1{rng.choice(AREAS)}{rng.randrange(200, 1000)}{rng.randrange(10000):04d}")
    return list(found)


def best_of(runs: int, work: Any) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def validation(sample: list[str]) -> dict[str, Any]:
    numbers.prepare()
    fast = best_of(3, lambda: [numbers.fast_verdict(n) for n in sample]) / len(sample)
    few = sample[:20_000]
    slow = best_of(
        1, lambda: [phonenumbers.is_valid_number(phonenumbers.parse(n)) for n in few]
    ) / len(few)
    same = all(
        bool(numbers.fast_verdict(n)) == phonenumbers.is_valid_number(phonenumbers.parse(n))
        for n in few
    )
    return {
        "stage": "validation (per +E.164 number)",
        "measured": f"{fast * 1e6:.2f} µs",
        "floor": f"phonenumbers {slow * 1e6:.1f} µs",
        "ratio": f"{fast / slow:.3f}",
        "target": "≤ 1.5 µs, same verdicts",
        "met": fast <= 1.5e-6 and same,
    }


def submit(base: str, rdb: redis.Redis, recipients: list[str]) -> dict[str, Any]:
    body = json.dumps({"recipients": recipients, "message": "bench"}).encode()
    headers = {"X-API-Key": KEY, "Content-Type": "application/json"}

    def post() -> None:
        answer = requests.post(f"{base}/api/bulk-sms", data=body, headers=headers, timeout=300)
        assert answer.status_code == 202, answer.text[:300]

    def floor() -> None:
        # The same body parsed, and its numbers written once, pipelined, to fresh keys (as a
        # submit writes a new job's): no validation, no job record, no tasks.
        parsed = json.loads(body)["recipients"]
        prefix = f"floor:{time.monotonic_ns()}"
        pipe = rdb.pipeline(transaction=False)
        for start in range(0, len(parsed), 1000):
            chunk = parsed[start : start + 1000]
            pipe.hset(f"{prefix}:{start}", mapping={n[1:]: "p" for n in chunk})
        pipe.execute()

    runs = 3 if len(recipients) <= 100_000 else 2
    measured, base_time = best_of(runs, post), best_of(runs, floor)
    rdb.flushdb()
    target = "≤ 3× floor" + ("; ≤ 2.5 s" if len(recipients) >= 1_000_000 else "")
    met = measured <= 3 * base_time and (len(recipients) < 1_000_000 or measured <= 2.5)
    return {
        "stage": f"submit {len(recipients):,}",
        "measured": f"{measured:.2f} s",
        "floor": f"{base_time:.2f} s",
        "ratio": f"{measured / base_time:.2f}",
        "target": target,
        "met": met,
    }


def status_p99(base: str, jobs: list[str], count: int = 1000) -> list[float]:
    """p99 of GET /api/bulk-sms/<id> for each job, requests interleaved so noise hits all."""
    session = requests.Session()
    times: list[list[float]] = [[] for _ in jobs]
    for _ in range(count):
        for index, job_id in enumerate(jobs):
            started = time.perf_counter()
            session.get(f"{base}/api/bulk-sms/{job_id}", headers={"X-API-Key": KEY}, timeout=30)
            times[index].append(time.perf_counter() - started)
    return [statistics.quantiles(t, n=100)[98] for t in times]


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="bulksms-bench-"))
    redis_port, web_port = free_port(), free_port()
    redis_server = start_redis(redis_port, work / "redis")
    env = {
        **os.environ,
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "API_KEY": KEY,
        "API_BASE_URL": f"http://127.0.0.1:{web_port}",
        "PLIVO_SENDER_ID": "BENCH",
        "RATE_LIMIT_SUBMIT": "10000/minute",
        "RATE_LIMIT_READ": "100000/minute",
        "LOG_LEVEL": "WARNING",
    }
    web = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "wsgi:app",
            "--bind",
            f"127.0.0.1:{web_port}",
            "--access-logfile",
            "/dev/null",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    rows = []
    try:
        wait_for_port(web_port, web, "gunicorn", 60)
        base = f"http://127.0.0.1:{web_port}"
        rdb = redis.Redis(port=redis_port)
        million = us_numbers(1_000_000, seed=7)
        rows.append(validation(million))
        rows.append(submit(base, rdb, million[:100_000]))
        rows.append(submit(base, rdb, million))
        big = requests.post(
            f"{base}/api/bulk-sms",
            json={"recipients": million, "message": "bench"},
            headers={"X-API-Key": KEY},
            timeout=300,
        )
        small = requests.post(
            f"{base}/api/bulk-sms",
            json={"recipients": million[:10], "message": "bench"},
            headers={"X-API-Key": KEY},
            timeout=300,
        )
        p99_small, p99_big = status_p99(base, [small.json()["job_id"], big.json()["job_id"]])
        rows.append(
            {
                "stage": "status p99 (1M-recipient job)",
                "measured": f"{p99_big * 1000:.2f} ms",
                "floor": f"10-recipient job {p99_small * 1000:.2f} ms",
                "ratio": f"{p99_big / p99_small:.2f}",
                "target": "within 1.2×",
                "met": p99_big <= 1.2 * p99_small,
            }
        )
    finally:
        web.terminate()
        web.wait(15)
        redis_server.terminate()
        redis_server.wait(15)
    table = [
        "| stage | measured | floor (same run) | ratio | target | met |",
        "|---|---|---|---|---|---|",
    ]
    table += [
        f"| {r['stage']} | {r['measured']} | {r['floor']} | {r['ratio']} | {r['target']} "
        f"| {'yes' if r['met'] else 'NO'} |"
        for r in rows
    ]
    header = (
        f"# bulksms benchmarks\n\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"{os.cpu_count()} cores. `python -m bench.run`\n\n"
    )
    text = header + "\n".join(table) + "\n\nNot measured yet: dispatch, reports, memory.\n"
    print(text)
    (ROOT / "bench" / "RESULTS.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

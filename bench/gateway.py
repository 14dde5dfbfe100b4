"""Benchmark of the OpenAI-compatible gateway (/v1/) against the model server it stands in front of.

Run from the repository root: `python bench/gateway.py [--quick] [--no-write]` (`make bench`). It
starts what it needs itself: its own redis-server on a free port (or BENCH_REDIS_URL), a PostgreSQL
database of its own (BENCH_DATABASE_URL, default cs_bench_gateway on the local server, dropped,
created and migrated, with the demo knowledge base indexed so that the assistant retrieves),
bench/pace_server.py (first token after 20 ms, then 50 tokens/s per stream) and one daphne
(`python -m cs_platform.serve_web`) configured from the environment only, as a deployment runs it.
An API key with no request limit is issued with `manage.py api_key create`. Then the same question,
answered with the same 24 tokens, is streamed over keep-alive connections by one httpx client:

- straight to the pace server's /v1/chat/completions (direct);
- through the gateway naming the raw model (the plain proxy);
- through the gateway naming `support-assistant` (profile, FAQ check, retrieval, filters, record);

one request at a time (the three interleaved, their order turning each round) and ten at once, and
measures the time to the first content token, to the last one and to `data: [DONE]`: p50 and p95,
and the gateway's added time (gateway minus direct at the same percentile). A few whole
(non-streamed) answers of each are timed too, and for one request at a time the pace server's log
places the model's part on each request's timeline (before the model, the model, back to the
caller). It prints the figures and replaces the `## The OpenAI-compatible gateway` section of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
# Run as a script, Python puts bench/ on the path, not the repository root.
sys.path.insert(0, str(REPOSITORY_ROOT))

import httpx  # noqa: E402

from bench.pace_server import MODEL, expected_text  # noqa: E402
from bench.replies import (  # noqa: E402
    Stack,
    _drop_database,
    _recreate_database,
    _version,
    _wait_for_redis,
    cpu_seconds,
    machine_description,
    percentile,
    replace_section,
)
from cs_platform.processes import free_port, wait_until_answering  # noqa: E402

BENCHMARKS_PATH = REPOSITORY_ROOT / "docs" / "benchmarks.md"
SECTION = "## The OpenAI-compatible gateway"
FIRST_TOKEN_MS = 20
TOKENS_PER_SECOND = 50
REPLY_TOKENS = 24
ASSISTANT_MODEL = "support-assistant"
# Answered from the demo knowledge base's articles, and by none of its FAQ entries: the assistant asks
# the model (checked before the runs, in the platform's own process).
QUESTION = "Can I still change the delivery address after my order has shipped?"
TARGETS = ("direct", "proxy", "assistant")
TARGET_NAMES = {
    "direct": "direct to the model server",
    "proxy": f"gateway, plain proxy (`{MODEL}`)",
    "assistant": f"gateway, assistant (`{ASSISTANT_MODEL}`)",
}
DAPHNE_APPLICATION_NAME = "cs-bench-gateway-daphne"
# How long the caller waits for each next byte before it gives a request up.
CLIENT_TIMEOUT_SECONDS = 30

# Run with `manage.py shell -c` before daphne starts: the demo knowledge base imported and indexed
# (Celery eager: the build runs on a thread of that process, and is waited for), then the assistant's
# plan for QUESTION made as the gateway makes it, to show that the model is asked, with sources.
_SETUP = """
import json
from django.conf import settings
from cs_platform.demo import demo_knowledge_load
from gateway.assistant import assistant_plan
from gateway.parsing import chat_call_read
demo_knowledge_load()
call = chat_call_read({"model": %(model)r, "messages": [{"role": "user", "content": %(question)r}]})
plan = assistant_plan(call)
print(json.dumps({
    "instant": plan.instant is not None,
    "sources": len(plan.request.sources) if plan.request else 0,
    "locale": plan.locale,
    "pool": settings.DATABASE_POOL_MAX_SIZE,
}))
"""


# --- the processes ---------------------------------------------------------------------------


@dataclass
class Gateway:
    """The running platform, the pace server, and the key to call the gateway with."""

    stack: Stack
    key: str
    sources: int
    locale: str
    # DATABASE_POOL_MAX_SIZE as daphne reads it: the connections it may hold at once.
    pool: int

    @property
    def daphne_pid(self) -> int:
        return self.stack.processes["daphne"].pid


def _manage(env: dict[str, str], *arguments: str) -> str:
    completed = subprocess.run(
        [sys.executable, "manage.py", *arguments],
        cwd=REPOSITORY_ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    if completed.returncode != 0:
        raise SystemExit(f"manage.py {arguments[0]} failed:\n{completed.stdout}\n{completed.stderr}")
    return completed.stdout


@contextlib.contextmanager
def gateway_stack(workdir: Path) -> Iterator[Gateway]:
    """Redis, PostgreSQL with the demo knowledge base, the pace server and daphne, stopped on the way out."""
    database_url = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/cs_bench_gateway")
    database_name = _recreate_database(database_url)
    pace_port, web_port = free_port(), free_port()
    stack = Stack(
        base_url=f"http://127.0.0.1:{web_port}",
        pace_url=f"http://127.0.0.1:{pace_port}",
        database_url=database_url,
        database_name=database_name,
        workdir=workdir,
    )
    try:
        redis_url = os.environ.get("BENCH_REDIS_URL", "")
        if not redis_url:
            redis_port = free_port()
            stack.start(
                "redis",
                ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no"],
                dict(os.environ),
            )  # fmt: skip
            redis_url = f"redis://127.0.0.1:{redis_port}/0"
            _wait_for_redis(redis_port, stack)
        env = {
            **{key: value for key, value in os.environ.items() if not key.startswith(("PG", "DJANGO_"))},
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "SECRET_KEY": "benchmark-only-secret-key",
            "INFERENCE_BASE_URL": f"{stack.pace_url}/v1",
            # As the compose set does: the model is named, not discovered per request.
            "INFERENCE_MODEL": MODEL,
            "MEDIA_ROOT": str(workdir / "media"),
            "KNOWLEDGE_INDEX_DIR": str(workdir / "knowledge-index"),
            # The production default: the gateway logs a line per request, and that is part of its cost.
            "LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
        }
        stack.env = env
        _manage(env, "migrate", "--noinput", "-v", "0")
        setup = _manage(
            {**env, "CELERY_TASK_ALWAYS_EAGER": "true"},
            "shell",
            "-c",
            _SETUP % {"model": ASSISTANT_MODEL, "question": QUESTION},
        )
        plan = json.loads(setup.strip().splitlines()[-1])
        if plan["instant"] or not plan["sources"]:
            raise SystemExit(
                f"The assistant would not ask the model with sources for the benchmark's question: {plan}"
            )
        key = _manage(
            env, "api_key", "create", "--name", "bench/gateway.py", "--no-request-limit",
            "--model", ASSISTANT_MODEL, "--model", MODEL, "--quiet",
        ).strip()  # fmt: skip
        stack.start(
            "pace",
            [sys.executable, "bench/pace_server.py", "--port", str(pace_port),
             "--first-token-ms", str(FIRST_TOKEN_MS), "--tokens-per-second", str(TOKENS_PER_SECOND),
             "--tokens", str(REPLY_TOKENS), "--log", str(stack.pace_log)],
            env,
        )  # fmt: skip
        web_command = [sys.executable, "-m", "cs_platform.serve_web"]
        stack.web_command = " ".join(["python", *web_command[1:]])
        stack.start(
            "daphne",
            web_command,
            {
                **env,
                "PGAPPNAME": DAPHNE_APPLICATION_NAME,
                "DAPHNE_BIND": "127.0.0.1",
                "DAPHNE_PORT": str(web_port),
            },
        )
        wait_until_answering(
            f"{stack.pace_url}/stats", timeout=30, process=stack.processes["pace"], what="pace"
        )
        wait_until_answering(
            f"{stack.base_url}/healthz", timeout=90, process=stack.processes["daphne"], what="daphne"
        )
        yield Gateway(
            stack=stack,
            key=key,
            sources=int(plan["sources"]),
            locale=str(plan["locale"]),
            pool=int(plan["pool"]),
        )
    finally:
        stack.stop()
        _drop_database(database_url, database_name)


async def wait_until_idle(pid: int, *, seconds: float = 60.0) -> None:
    """Wait until daphne spends under 2 % of a core for a second (the embedder loaded, start-up done)."""
    deadline = time.monotonic() + seconds
    before = cpu_seconds(pid)
    while time.monotonic() < deadline:
        await asyncio.sleep(1)
        now = cpu_seconds(pid)
        if now - before < 0.02:
            return
        before = now
    print(f"  daphne did not go idle within {seconds:.0f} s; measuring anyway", flush=True)


# --- one request -----------------------------------------------------------------------------


@dataclass
class Timing:
    """One request as the caller saw it; times in seconds from the moment it was sent."""

    target: str
    ref: str
    sent_wall: float = 0.0
    first: float | None = None
    first_wall: float | None = None
    last: float | None = None
    done: float | None = None
    text: str = ""
    status: int = 0
    problem: str = ""

    def check(self) -> None:
        """Name what is wrong with the answer, if anything: every path must relay the model's tokens."""
        expected = expected_text(REPLY_TOKENS)
        if self.problem:
            return
        if self.status != 200:
            self.problem = f"status {self.status}"
        elif self.done is None:
            self.problem = "no end of answer"
        elif self.target == "assistant" and not self.text.startswith(expected):
            # The assistant may add the configured disclaimer after the model's text; nothing else.
            self.problem = "text differs from what the model sent"
        elif self.target != "assistant" and self.text != expected:
            self.problem = "text differs from what the model sent"


def _request(target: str, ref: str, *, stream: bool) -> dict[str, Any]:
    return {
        "model": ASSISTANT_MODEL if target == "assistant" else MODEL,
        "stream": stream,
        "messages": [{"role": "user", "content": f"{QUESTION} [tokens={REPLY_TOKENS}] [ref={ref}]"}],
    }


class Caller:
    """Sends one request to one of the three paths, over one shared keep-alive client."""

    def __init__(self, gateway: Gateway, http: httpx.AsyncClient) -> None:
        self.gateway = gateway
        self.http = http

    def _where(self, target: str) -> tuple[str, dict[str, str]]:
        if target == "direct":
            return f"{self.gateway.stack.pace_url}/v1/chat/completions", {}
        return (
            f"{self.gateway.stack.base_url}/v1/chat/completions",
            {"Authorization": f"Bearer {self.gateway.key}"},
        )

    async def stream(self, target: str, ref: str) -> Timing:
        url, headers = self._where(target)
        timing = Timing(target=target, ref=ref)
        body = _request(target, ref, stream=True)
        timing.sent_wall = time.time()
        sent = time.perf_counter()
        try:
            async with self.http.stream("POST", url, json=body, headers=headers) as response:
                timing.status = response.status_code
                async for line in response.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    now = time.perf_counter()
                    data = line[len("data: ") :]
                    # Read to the end, [DONE] or not: a response left unread closes its connection.
                    if data == "[DONE]":
                        timing.done = now - sent
                        continue
                    chunk = json.loads(data)
                    if "error" in chunk:
                        timing.problem = f"error event: {chunk['error'].get('code')}"
                        continue
                    choices = chunk.get("choices") or []
                    content = (choices[0].get("delta") or {}).get("content") if choices else None
                    if content:
                        if timing.first is None:
                            timing.first, timing.first_wall = now - sent, time.time()
                        timing.last = now - sent
                        timing.text += content
        except httpx.TimeoutException as failure:
            timing.problem = f"{type(failure).__name__} (nothing received for {CLIENT_TIMEOUT_SECONDS} s)"
        except (httpx.HTTPError, ValueError) as failure:
            timing.problem = f"{type(failure).__name__}: {failure}"
        timing.check()
        return timing

    async def whole(self, target: str, ref: str) -> Timing:
        url, headers = self._where(target)
        timing = Timing(target=target, ref=ref)
        timing.sent_wall = time.time()
        sent = time.perf_counter()
        try:
            response = await self.http.post(url, json=_request(target, ref, stream=False), headers=headers)
            timing.done = timing.last = time.perf_counter() - sent
            timing.status = response.status_code
            if response.status_code == 200:
                timing.text = response.json()["choices"][0]["message"]["content"]
        except httpx.TimeoutException as failure:
            timing.problem = f"{type(failure).__name__} (nothing received for {CLIENT_TIMEOUT_SECONDS} s)"
        except (httpx.HTTPError, ValueError, KeyError, IndexError) as failure:
            timing.problem = f"{type(failure).__name__}: {failure}"
        timing.check()
        return timing


# --- the runs --------------------------------------------------------------------------------


@dataclass
class Run:
    """The requests of one scenario, by path; daphne's CPU time per gateway request where it was alone."""

    label: str
    concurrency: int
    timings: dict[str, list[Timing]] = field(default_factory=lambda: {target: [] for target in TARGETS})
    daphne_cpu: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def values(self, target: str, what: str) -> list[float]:
        return [
            value
            for timing in self.timings[target]
            if not timing.problem and (value := getattr(timing, what)) is not None
        ]

    def broken(self, target: str) -> list[Timing]:
        return [timing for timing in self.timings[target] if timing.problem]


def _turned(round_number: int) -> list[str]:
    """The three paths in an order that turns each round, so that drift in load hits each alike."""
    shift = round_number % len(TARGETS)
    return [*TARGETS[shift:], *TARGETS[:shift]]


async def one_at_a_time(caller: Caller, *, rounds: int, label: str) -> Run:
    run = Run(label=label, concurrency=1)
    started = time.monotonic()
    for number in range(rounds):
        for target in _turned(number):
            run.timings[target].append(await caller.stream(target, f"seq.{target}.{number}"))
    run.seconds = time.monotonic() - started
    return run


async def at_once(caller: Caller, *, concurrency: int, rounds: int, label: str) -> Run:
    """`rounds` batches of `concurrency` requests started together, each batch on one path."""
    run = Run(label=label, concurrency=concurrency)
    cpu: dict[str, float] = dict.fromkeys(TARGETS, 0.0)
    started = time.monotonic()
    for number in range(rounds):
        for target in _turned(number):
            before = cpu_seconds(caller.gateway.daphne_pid)
            batch = await asyncio.gather(
                *(caller.stream(target, f"par.{target}.{number}.{index}") for index in range(concurrency))
            )
            cpu[target] += cpu_seconds(caller.gateway.daphne_pid) - before
            run.timings[target].extend(batch)
            await asyncio.sleep(0.2)  # the batch's records and log lines are written before the next
    run.seconds = time.monotonic() - started
    run.daphne_cpu = {target: cpu[target] / max(len(run.timings[target]), 1) for target in TARGETS}
    return run


async def whole_answers(caller: Caller, *, rounds: int) -> Run:
    run = Run(label="whole", concurrency=1)
    for number in range(rounds):
        for target in _turned(number):
            run.timings[target].append(await caller.whole(target, f"whole.{target}.{number}"))
    return run


def pace_log(stack: Stack) -> dict[str, dict[str, float]]:
    """The pace server's wall-clock times of each stream (`received`, `first_token`), by ref."""
    found = {}
    if stack.pace_log.exists():
        for line in stack.pace_log.read_text().splitlines():
            record = json.loads(line)
            if record.get("event") == "stream" and record.get("ref"):
                found[record["ref"]] = record
    return found


def timeline(run: Run, log: dict[str, dict[str, float]]) -> dict[str, dict[str, list[float]]]:
    """Per path: caller → model server, the model's own first token, model server → caller's first token."""
    stages: dict[str, dict[str, list[float]]] = {}
    for target in TARGETS:
        parts: dict[str, list[float]] = {"before": [], "model": [], "after": []}
        for timing in run.timings[target]:
            record = log.get(timing.ref)
            if record is None or timing.first_wall is None or timing.problem:
                continue
            parts["before"].append(record["received"] - timing.sent_wall)
            parts["model"].append(record["first_token"] - record["received"])
            parts["after"].append(timing.first_wall - record["first_token"])
        stages[target] = parts
    return stages


def daphne_problems(stack: Stack) -> list[tuple[str, int]]:
    """What daphne logged as errors (and the gateway as warnings), each with how often: why requests broke."""
    counts: Counter[str] = Counter()
    path = stack.log("daphne")
    for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        level = str(record.get("level", "")).lower()
        if level not in {"error", "critical"} and not (
            level == "warning" and str(record.get("logger", "")).startswith("gateway")
        ):
            continue
        exception = str(record.get("exception") or "").strip().splitlines()
        counts[f"{record.get('event')}{f' ({exception[-1]})' if exception else ''}"] += 1
    return counts.most_common()


# --- the report ------------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value * 1000:.0f}"


def _p(values: list[float], fraction: float) -> float | None:
    return percentile(values, fraction) if values else None


def _pair(values: list[float]) -> str:
    return f"{_ms(_p(values, 0.5))} / {_ms(_p(values, 0.95))}"


def _added(run: Run, target: str, what: str, fraction: float) -> float | None:
    gateway, direct = _p(run.values(target, what), fraction), _p(run.values("direct", what), fraction)
    return None if gateway is None or direct is None else gateway - direct


def _added_pair(run: Run, target: str, what: str) -> str:
    if target == "direct":
        return "–"
    return f"{_ms(_added(run, target, what, 0.5))} / {_ms(_added(run, target, what, 0.95))}"


@dataclass
class Report:
    machine: list[str]
    gateway: Gateway
    runs: list[Run]
    whole: Run
    stages: dict[str, dict[str, list[float]]]
    load_average: tuple[tuple[float, float, float], tuple[float, float, float]]
    started: str
    seconds: float
    quick: bool
    problems: list[tuple[str, int]]
    # Connections the pace server accepted, and streams it served, over the whole run.
    pace_connections: tuple[int, int]

    def all_timings(self) -> list[Timing]:
        return [
            timing for run in [*self.runs, self.whole] for target in TARGETS for timing in run.timings[target]
        ]

    def whole_broken(self) -> list[Timing]:
        return [timing for target in TARGETS for timing in self.whole.broken(target)]

    def section(self) -> str:
        before, after = self.load_average
        timings = self.all_timings()
        broken = [timing for timing in timings if timing.problem]
        lines = [
            SECTION,
            "",
            "Streamed chat completions through the gateway against the same requests sent straight to "
            "the model server, measured from outside by `make bench` (`bench/gateway.py`): one daphne "
            "(`python -m cs_platform.serve_web`, settings from the environment only, `LOG_LEVEL=INFO` as "
            "in production), PostgreSQL, a Redis of its own, and `bench/pace_server.py` (first token "
            f"{FIRST_TOKEN_MS} ms after the request, then {TOKENS_PER_SECOND} tokens/s per stream). Every "
            f"request asks the same question and gets the same {REPLY_TOKENS} tokens (last token due "
            f"{FIRST_TOKEN_MS + (REPLY_TOKENS - 1) * 1000 // TOKENS_PER_SECOND} ms after the request); "
            "one httpx client sends them all over keep-alive connections, with a key that has no "
            "request limit. The assistant (`support-assistant`) answers from the demo knowledge base "
            f"(indexed; the question is answered by no FAQ entry and finds {self.gateway.sources} "
            "sources, so every request reads the profile, checks the FAQ, retrieves and sends the "
            "model a grounded prompt); the plain proxy names the model. Times are from the request "
            "sent to the first content token, to the last, and to `data: [DONE]` (the gateway keeps "
            "the request's record before it sends that); added is gateway minus direct at the same "
            f"percentile; a request that receives nothing for {CLIENT_TIMEOUT_SECONDS} s, or gets an "
            "error, is not intact and left out of the times. Three requests of each path warm up "
            "first, then daphne is let go quiet. One request at a time interleaves the three paths, "
            "their order turning each round; at once, each batch is one path's.",
            "",
            f"- Date: {self.started}; the run took {self.seconds:.0f} s"
            + (" (`--quick`: fewer requests)" if self.quick else ""),
            *self.machine,
            f"- Load average before and after the run: {' '.join(f'{v:.2f}' for v in before)}, "
            f"{' '.join(f'{v:.2f}' for v in after)} (the machine is shared with other work: figures at "
            "this scale move by a few milliseconds from run to run)",
            "",
            "| requests | path | first token p50 / p95 (ms) | last token p50 / p95 (ms) | "
            "`[DONE]` p50 / p95 (ms) | added first token p50 / p95 (ms) | added last token p50 / p95 "
            "(ms) | not intact | daphne CPU per request (ms) |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for run in self.runs:
            for target in TARGETS:
                cpu = run.daphne_cpu.get(target)
                lines.append(
                    f"| {run.label} | {TARGET_NAMES[target]} | {_pair(run.values(target, 'first'))} | "
                    f"{_pair(run.values(target, 'last'))} | {_pair(run.values(target, 'done'))} | "
                    f"{_added_pair(run, target, 'first')} | {_added_pair(run, target, 'last')} | "
                    f"{len(run.broken(target))} | "
                    f"{'–' if cpu is None or target == 'direct' else f'{cpu * 1000:.1f}'} |"
                )
        whole = self.whole
        lines += [
            "",
            f"Whole answers (`stream: false`), {len(whole.timings['direct'])} of each, one at a time "
            "(interleaved): time to the complete response, median and fastest.",
            "",
            "| path | median (ms) | fastest (ms) | added median (ms) | not intact |",
            "| --- | --- | --- | --- | --- |",
        ]
        direct_whole = whole.values("direct", "done")
        for target in TARGETS:
            values = whole.values(target, "done")
            added = (
                "–"
                if target == "direct" or not values or not direct_whole
                else _ms(statistics.median(values) - statistics.median(direct_whole))
            )
            lines.append(
                f"| {TARGET_NAMES[target]} | {_ms(statistics.median(values) if values else None)} | "
                f"{_ms(min(values) if values else None)} | {added} | {len(whole.broken(target))} |"
            )
        lines += [
            "",
            "Where the first token's time goes, one request at a time, from the caller's clock and the "
            "pace server's log of when each request arrived and its first token left (p50 / p95, ms):",
            "",
            "| path | sent → at the model server | the model's first token | model server → caller | "
            "added before the model (p50) | added after it (p50) |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        direct_stages = self.stages.get("direct", {})
        for target in TARGETS:
            parts = self.stages.get(target, {})
            added_before = added_after = "–"
            if target != "direct" and parts.get("before") and direct_stages.get("before"):
                added_before = _ms(
                    statistics.median(parts["before"]) - statistics.median(direct_stages["before"])
                )
                added_after = _ms(
                    statistics.median(parts["after"]) - statistics.median(direct_stages["after"])
                )
            lines.append(
                f"| {TARGET_NAMES[target]} | {_pair(parts.get('before', []))} | "
                f"{_pair(parts.get('model', []))} | {_pair(parts.get('after', []))} | "
                f"{added_before} | {added_after} |"
            )
        lines += [
            "",
            f"Relay integrity: {len(timings)} requests, {len(broken)} not intact (each must answer 200 and "
            "end with `[DONE]`; the direct and proxied text must equal the model's exactly, the "
            "assistant's begin with it)."
            + f" The model server accepted {self.pace_connections[0]} connections in the whole run "
            f"({self.pace_connections[1]} streams among its requests): the benchmark's client and the "
            "gateway's inference client both keep theirs open.",
        ]
        if broken:
            by_where = Counter(
                (run.label, target, timing.problem)
                for run in self.runs
                for target in TARGETS
                for timing in run.broken(target)
            )
            by_where.update(
                ("whole answers", timing.target, timing.problem) for timing in self.whole_broken()
            )
            lines += [
                "",
                "Not intact:",
                "",
                *(
                    f"- {count} × {label}, {TARGET_NAMES[target]}: {problem}"
                    for (label, target, problem), count in by_where.most_common()
                ),
            ]
        if self.problems:
            lines += [
                "",
                f"daphne logged (its database pool holds at most {self.gateway.pool} connections, "
                "`DATABASE_POOL_MAX_SIZE`):",
                "",
                *(f"- {count} × {problem}" for problem, count in self.problems),
            ]
        return "\n".join(lines) + "\n"


# --- main ------------------------------------------------------------------------------------


async def benchmark(gateway: Gateway, *, quick: bool) -> Report:
    started_at = time.monotonic()
    load_before = os.getloadavg()
    limits = httpx.Limits(max_connections=40, max_keepalive_connections=40)
    async with httpx.AsyncClient(limits=limits, timeout=CLIENT_TIMEOUT_SECONDS) as http:
        caller = Caller(gateway, http)
        print("warming up (three requests of each path, streamed, and one whole)…", flush=True)
        warm = await one_at_a_time(caller, rounds=3, label="warm-up")
        warm_whole = await whole_answers(caller, rounds=1)
        broken = [t for run in (warm, warm_whole) for target in TARGETS for t in run.broken(target)]
        if broken:
            raise SystemExit(
                f"The warm-up requests did not come through: {[(t.target, t.problem) for t in broken]}\n"
                f"--- daphne ---\n{gateway.stack.tail('daphne')}"
            )
        # The first retrieval loads the embedder in daphne: measure the steady state.
        await wait_until_idle(gateway.daphne_pid)
        # The warm-up's connections stay open: every path is measured over a connection already made.
        sequential_rounds = 10 if quick else 50
        concurrency, batches = (5, 2) if quick else (10, 2)
        print(f"one request at a time, {sequential_rounds} of each path…", flush=True)
        sequential = await one_at_a_time(caller, rounds=sequential_rounds, label="1 at a time")
        _print_run(sequential)
        print(f"{concurrency} at once, {concurrency * batches} of each path…", flush=True)
        parallel = await at_once(
            caller, concurrency=concurrency, rounds=batches, label=f"{concurrency} at once"
        )
        _print_run(parallel)
        print("whole answers…", flush=True)
        whole = await whole_answers(caller, rounds=3 if quick else 5)
        pace_stats = (await http.get(f"{gateway.stack.pace_url}/stats")).json()
    return Report(
        machine=[
            *machine_description(gateway.stack),
            f"- openai-compatible client: httpx {_version('httpx')}",
        ],
        gateway=gateway,
        runs=[sequential, parallel],
        whole=whole,
        stages=timeline(sequential, pace_log(gateway.stack)),
        load_average=(load_before, os.getloadavg()),
        started=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        seconds=time.monotonic() - started_at,
        quick=quick,
        problems=daphne_problems(gateway.stack),
        pace_connections=(int(pace_stats["connections"]), int(pace_stats["streams"])),
    )


def _print_run(run: Run) -> None:
    for target in TARGETS:
        print(
            f"  {target:9}  first {_pair(run.values(target, 'first'))} ms, last "
            f"{_pair(run.values(target, 'last'))} ms, added first {_added_pair(run, target, 'first')} ms, "
            f"{len(run.broken(target))} not intact",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--quick", action="store_true", help="a short run while developing (10 in a row, 5 at once)"
    )
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    # `make bench` passes BENCH_ARGS to the replies' benchmark too, whose other options are not ours.
    arguments, others = parser.parse_known_args()
    if others:
        print(f"bench/gateway.py ignores {' '.join(others)}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with (
        tempfile.TemporaryDirectory(prefix="cs-bench-gateway-") as directory,
        gateway_stack(Path(directory)) as gateway,
    ):
        try:
            report = asyncio.run(benchmark(gateway, quick=arguments.quick))
        except BaseException:
            for name in ("daphne", "pace"):
                print(f"--- {name}.log ---\n{gateway.stack.tail(name)}", flush=True)
            raise
    section = report.section()
    print()
    print(section)
    if arguments.no_write:
        return
    document = BENCHMARKS_PATH.read_text() if BENCHMARKS_PATH.exists() else ""
    document = replace_section(document, SECTION, section, before="## Image preprocessing")
    BENCHMARKS_PATH.write_text(document)
    print(f"updated {BENCHMARKS_PATH.relative_to(REPOSITORY_ROOT)}")


if __name__ == "__main__":
    main()

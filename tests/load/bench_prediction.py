"""Prediction figures: a month of generated alert history replayed through the real store.

`make bench BENCH=prediction` (BENCH_PREDICTION_DAYS shortens the month for a
smoke run). Against a private Redis-compatible server, incidents of four
kinds open and end in time order:

- transient: end by themselves in 30 s to 3 min;
- persistent: last 30 min to 4 h;
- flapping: bursts of 20-90 s episodes, a few minutes apart;
- per-host: one alertname on many hosts, each host seen a few times, so
  predictions fall back to alertname+service.

At each opening the real `Predictor` records the episode and predicts from
the history so far (open incidents censored); at each end the episode is
recorded. Printed: precision and recall of "transient" (probability >= 0.8
of ending within 5 min) against what happened, what auto-pause with
`{probability: 0.8, for: 5m}` would have done (pages avoided, pages delayed
by 5 min that had to go out anyway), and the cost of one prediction: wall
time with its Redis round trips, this thread's CPU time (less sensitive to a
busy machine), and the Kaplan-Meier fit alone.
"""

from __future__ import annotations

import heapq
import json
import os
import random
import time
from dataclasses import dataclass

import redis

from tocsin.client.devserver import RedisServer
from tocsin.common import keys
from tocsin.scheduler.prediction.actors import PredictionRules, Predictor
from tocsin.scheduler.prediction.incidents import predict_incident

DAY = 86_400
WINDOW = 300.0
THRESHOLD = 0.8
START = 1_790_000_000.0


@dataclass(frozen=True)
class Incident:
    alert_id: str
    fingerprint: str
    name: str
    service: str
    start: float
    end: float


def generate(days: int, rng: random.Random) -> list[Incident]:
    incidents: list[Incident] = []
    count = 0

    def add(fp: str, name: str, service: str, start: float, duration: float) -> None:
        nonlocal count
        count += 1
        incidents.append(Incident(f"i{count}", fp, name, service, start, start + duration))

    horizon = days * DAY
    for n in range(12):  # transient: a few a day each
        t = rng.uniform(0, DAY)
        while t < horizon:
            add(f"transient-{n}", f"QueueLag{n}", "queue", START + t, rng.uniform(30, 180))
            t += rng.expovariate(4 / DAY)
    for n in range(8):  # persistent: about one a day each
        t = rng.uniform(0, DAY)
        while t < horizon:
            add(f"persistent-{n}", f"DiskFull{n}", "db", START + t, rng.uniform(1800, 14_400))
            t += rng.expovariate(1 / DAY) + 14_400
    for n in range(4):  # flapping: bursts of short episodes twice a week
        t = rng.uniform(0, DAY)
        while t < horizon:
            for _ in range(rng.randint(4, 10)):
                add(f"flap-{n}", f"LinkFlap{n}", "net", START + t, rng.uniform(20, 90))
                t += rng.uniform(120, 600)
            t += rng.expovariate(2 / (7 * DAY))
    for host in range(60):  # per host: rare per fingerprint, common per alertname+service
        for _ in range(rng.randint(1, 4)):
            start = rng.uniform(0, horizon)
            duration = rng.uniform(40, 240) if rng.random() < 0.85 else rng.uniform(900, 7200)
            add(f"cpu-host{host}", "CpuHigh", "web", START + start, duration)
    return sorted(incidents, key=lambda i: i.start)


def record_json(incident: Incident, resolved: bool) -> str:
    return json.dumps(
        {
            "id": incident.alert_id, "fingerprint": incident.fingerprint, "name": incident.name,
            "severity": "critical", "status": "resolved" if resolved else "firing",
            "service": incident.service, "labels": {}, "producer": "bench", "count": 2,
            "first_seen_ts": incident.start, "last_seen_ts": incident.end if resolved
            else incident.start,
            "resolved_at": incident.end if resolved else None,
            "resolved_by": "bench" if resolved else None,
        }
    )  # fmt: skip


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    days = int(os.environ.get("BENCH_PREDICTION_DAYS", "30"))
    incidents = generate(days, random.Random(17))
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)
        predictor = Predictor(client, PredictionRules(window_seconds=WINDOW), clock=time.time)
        events: list[tuple[float, int, Incident]] = []
        for incident in incidents:
            heapq.heappush(events, (incident.start, 1, incident))
            heapq.heappush(events, (incident.end, 0, incident))
        costs: list[float] = []
        compute: list[float] = []
        cpu: list[float] = []
        outcomes = {"tp": 0, "fp": 0, "fn": 0, "tn": 0, "no_history": 0}
        levels: dict[str, int] = {}
        while events:
            at, opening, incident = heapq.heappop(events)
            client.set(keys.alert(incident.alert_id), record_json(incident, not opening))
            if not opening:
                predictor.predict(incident.alert_id, now=at)  # records the ended episode
                continue
            started, cpu_started = time.perf_counter(), time.thread_time()
            prediction = predictor.predict(incident.alert_id, now=at)
            costs.append(time.perf_counter() - started)
            cpu.append(time.thread_time() - cpu_started)
            assert prediction is not None
            levels[prediction.level] = levels.get(prediction.level, 0) + 1
            # The CPU part alone (history decoded, Kaplan-Meier), without Redis round trips.
            history = predictor.history.history(
                incident.fingerprint, incident.name, incident.service
            )
            started = time.perf_counter()
            predict_incident(incident.alert_id, history, at, "t", window_seconds=WINDOW)
            compute.append(time.perf_counter() - started)
            actual = incident.end - incident.start <= WINDOW
            if not prediction.enough_history:
                outcomes["no_history"] += 1
                continue
            said = (prediction.transient_probability or 0.0) >= THRESHOLD
            outcomes[("t" if said == actual else "f") + ("p" if said else "n")] += 1
    tp, fp, fn = outcomes["tp"], outcomes["fp"], outcomes["fn"]
    precision = tp / (tp + fp) if tp + fp else float("nan")
    recall = tp / (tp + fn) if tp + fn else float("nan")
    rows = [
        ("days of history", f"{days}"),
        ("incidents", f"{len(incidents)}"),
        ("predictions by level", ", ".join(f"{k} {v}" for k, v in sorted(levels.items()))),
        ("transient precision", f"{precision:.3f}"),
        ("transient recall", f"{recall:.3f}"),
        ("pages without auto-pause", f"{len(incidents)}"),
        ("pages avoided (paused, ended in pause)", f"{tp}"),
        ("pages delayed 5 min that went out", f"{fp}"),
        ("paged at once: too little history", f"{outcomes['no_history']}"),
        ("prediction cost p50 (ms)", f"{pct(costs, 0.5) * 1000:.2f}"),
        ("prediction cost p99 (ms)", f"{pct(costs, 0.99) * 1000:.2f}"),
        ("  its CPU time p99 (ms; the rest waits on Redis)", f"{pct(cpu, 0.99) * 1000:.2f}"),
        ("  of which Kaplan-Meier fit p99 (ms)", f"{pct(compute, 0.99) * 1000:.2f}"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()

"""Prometheus text for /metrics: requests by route and status, request latency (a histogram),
tokens, and per model the queue depth and running slots."""

from __future__ import annotations

import threading
from collections import defaultdict

BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, float("inf"))


class Metrics:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self.latency_counts = [0] * len(BUCKETS)
        self.latency_sum = 0.0
        self.latency_n = 0
        self.disconnects = 0

    def observe(self, route: str, status: int, seconds: float) -> None:
        with self.lock:
            self.requests[(route, status)] += 1
            self.latency_sum += seconds
            self.latency_n += 1
            for i, b in enumerate(BUCKETS):
                if seconds <= b:
                    self.latency_counts[i] += 1

    def render(self, models: dict) -> str:
        """The Prometheus text exposition of everything (``models``: name -> ServedModel)."""
        out = ["# TYPE lmforge_requests_total counter"]
        with self.lock:
            for (route, status), n in sorted(self.requests.items()):
                out.append(f'lmforge_requests_total{{route="{route}",status="{status}"}} {n}')
            out.append("# TYPE lmforge_request_seconds histogram")
            for b, n in zip(BUCKETS, self.latency_counts):
                le = "+Inf" if b == float("inf") else f"{b:g}"
                out.append(f'lmforge_request_seconds_bucket{{le="{le}"}} {n}')
            out += [f"lmforge_request_seconds_sum {self.latency_sum:.6f}",
                    f"lmforge_request_seconds_count {self.latency_n}",
                    "# TYPE lmforge_client_disconnects_total counter",
                    f"lmforge_client_disconnects_total {self.disconnects}"]
        gauges = {"queue_depth": "gauge", "running_slots": "gauge",
                  "prompt_tokens_total": "counter", "generated_tokens_total": "counter",
                  "decode_steps_total": "counter"}
        for name, kind in gauges.items():
            out.append(f"# TYPE lmforge_{name} {kind}")
            for m in models.values():
                if m.engine is None:
                    continue
                e = m.engine
                value = {"queue_depth": e.queue_depth, "running_slots": e.running_slots,
                         "prompt_tokens_total": e.stats.prompt_tokens,
                         "generated_tokens_total": e.stats.tokens_generated,
                         "decode_steps_total": e.stats.steps}[name]
                out.append(f'lmforge_{name}{{model="{m.name}"}} {value}')
        out.append("# TYPE lmforge_finished_total counter")
        for m in models.values():
            for reason, n in sorted((m.engine.stats.finished if m.engine else {}).items()):
                out.append(f'lmforge_finished_total{{model="{m.name}",reason="{reason}"}} {n}')
        return "\n".join(out) + "\n"

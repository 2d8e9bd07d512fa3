"""The yardstick for bench_loadgen.py: a plain Locust FastHttpUser posting the same image to the same
server. BENCH_RATE (req/s in all) is spread over BENCH_USERS users, each at a constant throughput."""

from __future__ import annotations

import os

from locust import FastHttpUser, constant_throughput, task

from harness.images import photo_corpus

BODY = photo_corpus(sizes=((64, 48),), formats=("jpeg",))[0][2]
USERS = int(os.environ.get("BENCH_USERS", "50"))


class Plain(FastHttpUser):
    wait_time = constant_throughput(float(os.environ.get("BENCH_RATE", "500")) / USERS)

    @task
    def classify(self) -> None:
        self.client.post("/v1/classify?top_k=5", data=BODY, headers={"Content-Type": "image/jpeg"})

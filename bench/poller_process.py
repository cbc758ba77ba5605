"""One long-running poller in a process of its own, for bench/promotion_latency.py.

    python bench/poller_process.py   (MLFLOW_TRACKING_URI, POSTGRES_DSN, ... from the caller)

It makes its first cycle (on a fresh config store, one poller's is the full sweep that
counts for all), prints ``ready``, waits for a line on stdin, makes one cycle and prints
that cycle's seconds and report as one JSON line. So pollers that have been running for
a while meet a burst at the same moment, as in a deployment.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    from domain_mlflow.promotion.engine import Promoter
    from domain_mlflow.promotion.poller import Poller, settle_heap
    from domain_mlflow.services import Services
    from domain_mlflow.settings import load_settings

    poller = Poller(Promoter.from_services(Services(load_settings()), "poller"))
    poller.poll_once()
    settle_heap()  # as Poller.run does after its first cycle
    print("ready", flush=True)
    sys.stdin.readline()
    started = time.perf_counter()
    report = poller.poll_once()
    print(json.dumps({"seconds": time.perf_counter() - started, **report.as_dict()}),
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

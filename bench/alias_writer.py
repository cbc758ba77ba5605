"""MLflow's floor for a share of a burst, in a process of its own, for
bench/promotion_latency.py.

    python bench/alias_writer.py   (MLFLOW_TRACKING_URI, REGISTRY_CONCURRENCY from the caller)

It makes one registry call (so its HTTP session is open, as a running poller's is),
prints ``ready``, reads one JSON line of ``[name, version]`` pairs, sets the
``production`` alias on each as the poller does (side by side, the store's
concurrency), prints ``done`` and exits. Its caller splits a burst between one or two
of them to measure what a second client process gains MLflow itself.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    from bench.promotion_latency import _registry_calls
    from domain_mlflow.registry import PRODUCTION_ALIAS

    client, calls, writer, _pattern = _registry_calls(os.environ["MLFLOW_TRACKING_URI"])
    client.search_registered_models(max_results=1)
    print("ready", flush=True)
    pairs = json.loads(sys.stdin.readline())
    calls.each(lambda pair: writer.set_registered_model_alias(pair[0], PRODUCTION_ALIAS,
                                                              pair[1]), pairs)
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

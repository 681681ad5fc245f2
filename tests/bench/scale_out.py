#!/usr/bin/env python3
"""Scale-out: aggregate tokens/s through one gateway with 1, 2, 3 and 4
simulated GPU nodes, each a `troupe node` with one worker on its own
`troupe sim-llm` of fixed capacity (4 slots at 50 tokens/s: 200 tokens/s).
Capacity, not CPU, bounds each node, so two cores can show how close N
nodes come to N times one node (DESIGN.md target: >= 0.9 x N).

Prints one JSON object per N on stdout, for scripts/bench.
usage: scale_out.py [--quick]
"""
import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "../integration"))
from harness import TROUPE, ClusterNode, RedisServer, SimLlm, sim_backend_yaml, wait_until  # noqa: E402

SLOTS, TOKENS_PER_S, TOKENS = 4, 50, 25


def workers_seen(gateway):
    status, body = gateway.get("/api/cluster")
    if status != 200:
        return 0
    nodes = json.loads(body).get("nodes", [])
    return sum(len(n.get("workers", [])) for n in nodes if n.get("live"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    secs = "5s" if args.quick else "15s"
    procs = []
    try:
        redis = RedisServer()
        procs.append(redis)
        gw = ClusterNode("gw", ["gateway", "agents"], redis)
        procs.append(gw)
        for n in range(1, 5):
            sim = SimLlm(ttft_ms=20, tokens_per_s=TOKENS_PER_S, slots=SLOTS)
            gpu = ClusterNode(f"gpu-{n}", ["inference"], redis, sim_backend_yaml([sim], slots=SLOTS))
            procs += [sim, gpu]
            wait_until(lambda: workers_seen(gw) >= n, 20, f"{n} GPU workers in the gateway's view")
            # Twice the cluster's slots in flight keeps every slot busy.
            out = subprocess.run(
                [TROUPE, "load", "--json", "--quiet", "--gateway", gw.base, "--connections",
                 str(2 * SLOTS * n), "--duration", secs, "--message", f"count to {TOKENS}"],
                capture_output=True, text=True, timeout=600)
            if out.returncode != 0:
                raise RuntimeError(out.stderr)
            r = json.loads(out.stdout)
            print(json.dumps({"nodes": n, "tokens_per_s": r["tokens_per_s"],
                              "capacity_per_node": SLOTS * TOKENS_PER_S, "errors": r["errors"]}),
                  flush=True)
    finally:
        for p in reversed(procs):
            p.kill()


if __name__ == "__main__":
    main()

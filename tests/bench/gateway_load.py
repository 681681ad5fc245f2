#!/usr/bin/env python3
"""Runtime overhead on streams, measured with `troupe load` (C++): the same
conversations against a troupe node (client -> gateway -> agent -> router
-> worker -> `troupe sim-llm`) and straight against an identical
`troupe sim-llm`, in the same run.

Figures (one JSON object per line on stdout, for scripts/bench):
  ttft   time to first token at 1, 100 and 500 concurrent streams, held at a
         rate the machine sustains (open loop), so the difference is the
         runtime's work on the path rather than queueing behind a full CPU;
  connections  the gateway's RSS per open WebSocket client with 10,000 open
         (needs a file limit over 11,000);
  cache  time to first token at 100 streams when the answer comes from the
         response cache (an agent type with `response_cache: true`), against
         the model server's own, direct;
  tokens tokens/s delivered at saturation (closed loop, 200 clients): through
         `troupe sim-llm` over HTTP (the whole path, model server on the same
         two cores), and from the node's built-in simulated model (the
         gateway's own capacity: session, agent and WebSocket writes, with no
         model server competing for the cores, as on a gateway node whose
         tokens come from GPU nodes).

usage: gateway_load.py [--quick]
"""
import argparse
import json
import os
import resource
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "../integration"))
from harness import TROUPE, Node, SimLlm, sim_backend_yaml  # noqa: E402


# The agent type both sides run: no tools, and the system prompt the direct
# clients send too. Each direct client also sends its whole conversation, as
# the agent does, so the model server gets the same requests either way and
# parses the same: only Troupe's own work differs.
SYSTEM = "You are a helpful assistant."
AGENT_TYPES = f"agents:\n  types:\n    chat: {{system: \"{SYSTEM}\"}}\n"


def load(*args):
    out = subprocess.run([TROUPE, "load", "--json", "--quiet", *args], capture_output=True,
                         text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"troupe load {' '.join(args)} failed:\n{out.stderr}")
    return json.loads(out.stdout)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="short runs (a smoke test)")
    args = ap.parse_args()
    secs = "3s" if args.quick else "10s"
    rounds, round_secs = (1, "3s") if args.quick else (3, "6s")
    # Streams of 20 tokens at 10 tokens/s last ~2 s: 500 of them in flight
    # take 250 new conversations a second, which two cores sustain.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # for every process started here
    slow = dict(ttft_ms=20, tokens_per_s=10, slots=2000)
    direct = SimLlm(**slow)
    backing = SimLlm(**slow)
    node = Node(sim_backend_yaml([backing], slots=2000) + AGENT_TYPES)
    cached = Node(sim_backend_yaml([backing], slots=2000) + AGENT_TYPES +
                  "    faq: {temperature: 0, response_cache: true}\n")
    procs = [direct, backing, node, cached]
    try:
        # One stream: short answers, so a run holds many first tokens.
        # Rounds of direct then gateway; the round with the median difference
        # is reported (a shared machine's hiccup hits one round, not both sides).
        for streams, rate, count in ((1, 0, 2), (100, 50, 20), (500, 250, 20)):
            def common(duration):
                return (["--connections", str(streams), "--duration", duration,
                         "--message", f"count to {count}"] + (["--rate", str(rate)] if rate else []))
            pairs = []
            for _ in range(rounds):
                d = load("--direct", direct.url, "--model", "sim-model", "--system", SYSTEM,
                         *common(round_secs))
                g = load("--gateway", node.base, *common(round_secs))
                pairs.append((g["ttft_ms"]["p50"] - d["ttft_ms"]["p50"], d, g))
            pairs.sort(key=lambda x: x[0])
            _, d, g = pairs[len(pairs) // 2]
            print(json.dumps({"figure": "ttft", "streams": streams, "direct": d, "gateway": g,
                              "rounds": [x[0] for x in pairs]}), flush=True)
            if streams == 100:
                # Every client asks the same: all but the first get the stored answer.
                c = load("--gateway", cached.base, "--type", "faq", *common(secs))
                print(json.dumps({"figure": "cache", "streams": streams, "direct": d, "gateway": c}),
                      flush=True)
        # 10,000 clients connected at once (each spawned its agent), 100 of
        # them talking per second: what one connection costs the gateway.
        if resource.getrlimit(resource.RLIMIT_NOFILE)[1] >= 10000 + 1000:
            g = load("--gateway", node.base, "--connections", "10000", "--rate", "100",
                     "--duration", secs, "--message", "count to 20")
            print(json.dumps({"figure": "connections", "connections": 10000, "gateway": g}),
                  flush=True)
        for p in procs:
            p.kill()
        fast = dict(ttft_ms=5, tokens_per_s=20000, slots=2000)
        direct = SimLlm(**fast)
        backing = SimLlm(**fast)
        node = Node(sim_backend_yaml([backing], slots=2000) + AGENT_TYPES)
        procs = [direct, backing, node]
        common = ["--connections", "200", "--duration", secs, "--message", "count to 200"]
        d = load("--direct", direct.url, "--model", "sim-model", "--system", SYSTEM, *common)
        g = load("--gateway", node.base, *common)
        print(json.dumps({"figure": "tokens", "tokens_per_conversation": 200, "direct": d,
                          "gateway": g}), flush=True)
        # The same clients against a node whose tokens come from its built-in
        # simulated model: one message per token from the backend's thread to
        # the agent, as from an HTTP backend, without the model server's share.
        backing.kill()
        node.kill()
        node = Node("inference:\n  accelerators:\n    - {id: sim0, kind: gpu, slots: 2000, "
                    f"backend: {{type: simulated, ttft_ms: {fast['ttft_ms']}, "
                    f"tokens_per_s: {fast['tokens_per_s']}}}}}\n" + AGENT_TYPES)
        procs = [direct, node]
        g = load("--gateway", node.base, *common)
        print(json.dumps({"figure": "tokens_builtin", "tokens_per_conversation": 200, "direct": d,
                          "gateway": g}), flush=True)
    finally:
        for p in procs:
            p.kill()


if __name__ == "__main__":
    main()

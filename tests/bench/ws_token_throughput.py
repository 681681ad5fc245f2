#!/usr/bin/env python3
"""Token events/s delivered to WebSocket clients through a troupe node, with
the same clients reading the same model server directly as the baseline.

Both runs use one `troupe sim-llm` per side (same ttft, tokens/s, slots) and
N concurrent conversations of "count to K". The client is Python, so on a
2-core machine it is often the bottleneck on both sides: read the ratio,
not the absolute numbers. A C++ load generator is issue 6's job.

usage: ws_token_throughput.py [--clients N] [--tokens K] [--rounds R]
"""
import argparse
import asyncio
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "../integration"))
from harness import Client, Node, SimLlm, sim_backend_yaml  # noqa: E402


async def direct_stream(port, tokens):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = json.dumps({"model": "sim-model", "stream": True,
                       "messages": [{"role": "user", "content": f"count to {tokens}"}]}).encode()
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    await writer.drain()
    count = 0
    first = None
    t0 = time.monotonic()
    while True:
        line = await reader.readline()
        if not line:
            break
        if line.startswith(b"data: "):
            data = line[6:].strip()
            if data == b"[DONE]":
                break
            chunk = json.loads(data)
            if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                count += 1
                if first is None:
                    first = time.monotonic() - t0
    writer.close()
    return count, first


async def gateway_stream(url, i, tokens):
    c = await Client.connect(url)
    await c.send(op="spawn", type="chat", key=f"b{i}", id="s")
    await c.recv()
    t0 = time.monotonic()
    await c.send(op="send", agent=f"chat/b{i}", text=f"count to {tokens}", id="m")
    count = 0
    first = None
    while True:
        ev = json.loads(await c.ws.recv())
        if ev["ev"] == "token":
            count += 1
            if first is None:
                first = time.monotonic() - t0
        elif ev["ev"] in ("done", "error"):
            break
    await c.ws.close()
    return count, first


async def measure(make, clients):
    t0 = time.monotonic()
    results = await asyncio.gather(*(make(i) for i in range(clients)))
    elapsed = time.monotonic() - t0
    total = sum(r[0] for r in results)
    ttfts = sorted(r[1] for r in results if r[1] is not None)
    return total / elapsed, ttfts[len(ttfts) // 2] * 1000, total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--tokens", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    sim_args = dict(ttft_ms=20, tokens_per_s=20000, slots=args.clients)
    direct = SimLlm(**sim_args)
    backing = SimLlm(**sim_args)
    node = Node(sim_backend_yaml([backing], slots=args.clients))
    try:
        rows = []
        for r in range(args.rounds):
            base = asyncio.run(measure(lambda i: direct_stream(direct.port, args.tokens), args.clients))
            ours = asyncio.run(measure(lambda i: gateway_stream(node.ws_url, r * 100000 + i, args.tokens), args.clients))
            rows.append((base, ours))
        print(f"clients={args.clients} tokens/stream={args.tokens} rounds={args.rounds}")
        print(f"{'round':>5} {'direct tok/s':>13} {'gateway tok/s':>14} {'ratio':>6} {'ttft direct ms':>15} {'ttft gateway ms':>16}")
        for i, (b, o) in enumerate(rows):
            print(f"{i:>5} {b[0]:>13.0f} {o[0]:>14.0f} {o[0] / b[0]:>6.2f} {b[1]:>15.1f} {o[1]:>16.1f}")
    finally:
        for p in (node, backing, direct):
            p.kill()


if __name__ == "__main__":
    main()

"""Who gets in, and what a hostile client can do: API keys, TLS, per-key
scoping and limits, hostile input over the real gateway."""
import asyncio
import concurrent.futures
import hashlib
import json
import os
import random
import re
import signal
import socket
import subprocess
import ssl
import tempfile
import time
import unittest
import urllib.error
import urllib.request

import websockets

from harness import (SANITIZER, TROUPE, Client, Node, SimLlm, TlsFiles, TroupeTestCase, http, node_exit, run,
                     sim_backend_yaml, wait_until)


def memory_contains(pid, needle):
    """Whether `needle` is in the process's resident writable memory. Reads in
    chunks and skips mappings over 4 GiB (the sanitizers' shadow and allocator
    reservations; a test node's heap is far smaller), so under a sanitizer it
    checks less than in a normal build."""
    found = False
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb") as mem:
        for line in maps:
            addr, perms = line.split()[:2]
            lo, hi = (int(x, 16) for x in addr.split("-"))
            if "rw" not in perms or hi - lo > 4 << 30:
                continue
            for at in range(lo, hi, 8 << 20):
                try:
                    mem.seek(at)
                    # Overlap the chunks so a needle across a boundary is seen.
                    found |= needle in mem.read(min(hi - at, (8 << 20) + len(needle)))
                except (OSError, ValueError, OverflowError, MemoryError):
                    break
    return found


class Auth(TroupeTestCase):
    def test_api_keys_are_required_when_configured(self):
        keys = tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False)
        keys.write("# one key per line\nsecret-1\n")
        keys.close()
        node = self.track(Node(auth_keys_file=keys.name))
        status, body = node.get("/api/agents")
        self.assertEqual(status, 401)
        self.assertEqual(json.loads(body)["error"]["code"], "unauthorized")
        status, _ = http("GET", node.base + "/api/agents", headers={"Authorization": "Bearer wrong"})
        self.assertEqual(status, 401)
        status, _ = http("GET", node.base + "/api/agents", headers={"Authorization": "Bearer secret-1"})
        self.assertEqual(status, 200)
        self.assertEqual(node.get("/health")[0], 200)  # health stays open for probes

    def test_keys_are_held_hashed_reload_on_sighup_and_denials_are_counted(self):
        digest = hashlib.sha256(b"hashed-key").hexdigest()
        keys = tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False)
        keys.write(f"old-key\nsha256:{digest}\n")
        keys.close()
        node = self.track(Node(auth_keys_file=keys.name))
        bearer = lambda k: http("GET", node.base + "/api/agents", headers={"Authorization": f"Bearer {k}"})[0]
        # Loaded, the plaintext key is nowhere in the node's memory (before any
        # request carries it: request buffers are not the key store).
        found = memory_contains(node.proc.pid, b"old-key")
        self.assertFalse(found, "the plaintext key is in the node's memory")
        self.assertEqual(bearer("old-key"), 200)
        self.assertEqual(bearer("hashed-key"), 200)  # given only by its digest
        self.assertEqual(http("GET", node.base + "/api/agents?token=old-key")[0], 200)
        # Rotate: the new file takes effect on SIGHUP; a broken file is refused.
        with open(keys.name, "w") as f:
            f.write("new-key\n")
        node.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: bearer("new-key") == 200, what="the new key after SIGHUP")
        self.assertEqual(bearer("old-key"), 401)
        with open(keys.name, "w") as f:
            f.write("sha256:not-hex\n")
        node.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "keys_reload_failed" in node.output(), what="the refused reload")
        self.assertIn(":1: 'sha256:' needs 64 hex digits", node.output())
        self.assertEqual(bearer("new-key"), 200)  # the keys in force stay
        # Refused: old-key after the rotation, and new-key while polling for it.
        metrics = http("GET", node.base + "/metrics", headers={"Authorization": "Bearer new-key"})[1]
        denied = re.search(r"^troupe_auth_denied_total (\d+)$", metrics, re.M)
        self.assertTrue(denied and int(denied.group(1)) >= 1, metrics)

    def test_listening_beyond_loopback_needs_keys_or_an_explicit_auth_none(self):
        p = node_exit("gateway: {listen: 0.0.0.0:0}\n", "--check")
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("beyond loopback: set 'gateway.auth.keys_file', or 'auth: none'", p.stderr)
        p = node_exit("gateway: {listen: 0.0.0.0:0, auth: none}\n", "--check")
        self.assertEqual(p.returncode, 0, p.stderr)


def keys_file(text):
    f = tempfile.NamedTemporaryFile("w", suffix=".keys", delete=False)
    f.write(text)
    f.close()
    return f.name


def as_key(node, key, method, path, body=None):
    """(status, decoded body) of a request made with `key`."""
    status, text = http(method, node.base + path, body, headers={"Authorization": f"Bearer {key}"})
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


class Scoping(TroupeTestCase):
    """A key sees and drives only the agents it spawned; admin keys see all."""

    def setUp(self):
        super().setUp()
        self.sim = self.track(SimLlm(ttft_ms=5, tokens_per_s=2000))
        keys = keys_file("alice-secret name=alice\nbob-secret name=bob\nops-secret name=ops admin\n")
        self.node = self.track(Node(sim_backend_yaml([self.sim]), auth_keys_file=keys))

    def test_another_keys_agent_is_unknown_over_rest_and_websocket(self):
        n = self.node
        self.assertEqual(as_key(n, "alice-secret", "POST", "/api/agents", {"type": "chat", "key": "a1"})[0], 201)
        self.assertEqual(as_key(n, "alice-secret", "GET", "/api/agents")[1]["agents"], ["chat/a1"])
        self.assertEqual(as_key(n, "bob-secret", "GET", "/api/agents")[1]["agents"], [])
        # Bob cannot tell alice's agent from one that does not exist.
        mine = as_key(n, "bob-secret", "DELETE", "/api/agents/chat/a1")
        none = as_key(n, "bob-secret", "DELETE", "/api/agents/chat/nobody")
        self.assertEqual(mine[0], 404)
        self.assertEqual(mine[1]["error"]["code"], "unknown_agent")
        self.assertEqual(mine[1]["error"]["message"].replace("a1", "X"),
                         none[1]["error"]["message"].replace("nobody", "X"))
        status, body = as_key(n, "bob-secret", "POST", "/api/chat/execute", {"message": "hi", "key": "a1"})
        self.assertEqual(status, 404, body)
        status, body = as_key(n, "alice-secret", "POST", "/api/chat/execute", {"message": "count to 3", "key": "a1"})
        self.assertEqual((status, body.get("answer")), (200, "1 2 3"), body)

        async def bob():
            cl = await Client.connect(n.ws_url, extra_headers={"Authorization": "Bearer bob-secret"})
            out = {}
            for op in ({"op": "attach", "agent": "chat/a1", "id": "at"},
                       {"op": "send", "agent": "chat/a1", "text": "hi", "id": "se"},
                       {"op": "kill", "agent": "chat/a1", "id": "ki"},
                       {"op": "list", "id": "li"}):
                await cl.send(**op)
                out[op["id"]] = await cl.recv()
            return out
        out = run(bob())
        for op in ("at", "se", "ki"):
            self.assertEqual((out[op]["ev"], out[op]["code"]), ("error", "unknown_agent"), out[op])
        self.assertEqual(out["li"]["agents"], [])
        # A job is its agent's owner's: another key reads it as no job at all.
        status, job = as_key(n, "alice-secret", "POST", "/api/chat/jobs", {"message": "count to 2", "key": "a1"})
        self.assertEqual(status, 202, job)
        self.assertEqual(as_key(n, "bob-secret", "GET", f"/api/jobs/{job['job']}")[0], 404)
        self.assertEqual(as_key(n, "alice-secret", "GET", f"/api/jobs/{job['job']}")[0], 200)
        # The admin key sees every agent and may kill any; only it may drain.
        self.assertIn("chat/a1", as_key(n, "ops-secret", "GET", "/api/agents")[1]["agents"])
        self.assertEqual(as_key(n, "bob-secret", "POST", "/api/cluster/nodes/x/drain")[0], 403)
        self.assertEqual(as_key(n, "ops-secret", "DELETE", "/api/agents/chat/a1")[0], 200)

    def test_a_taken_agent_key_cannot_be_spawned_by_another_key(self):
        n = self.node
        self.assertEqual(as_key(n, "alice-secret", "POST", "/api/agents", {"type": "chat", "key": "same"})[0], 201)
        status, body = as_key(n, "bob-secret", "POST", "/api/agents", {"type": "chat", "key": "same"})
        self.assertEqual(status, 404, body)
        self.assertIn("belongs to another API key", body["error"]["message"])
        self.assertEqual(as_key(n, "alice-secret", "POST", "/api/agents", {"type": "chat", "key": "same"})[0], 201)


class PerKeyLimits(TroupeTestCase):
    def test_connections_agents_and_turns_per_key_are_bounded(self):
        sim = self.track(SimLlm(ttft_ms=5, tokens_per_s=40))
        keys = keys_file("alice-secret name=alice\nbob-secret name=bob\n")
        n = self.track(Node(sim_backend_yaml([sim]) +
                            "limits: {per_key: {max_connections: 2, max_agents: 2, max_turns: 1}}\n",
                            auth_keys_file=keys))
        for k in ("a1", "a2"):
            self.assertEqual(as_key(n, "alice-secret", "POST", "/api/agents", {"type": "chat", "key": k})[0], 201)
        status, body = as_key(n, "alice-secret", "POST", "/api/agents", {"type": "chat", "key": "a3"})
        self.assertEqual((status, body["error"]["code"]), (429, "limit_exceeded"), body)
        self.assertIn("limits.per_key.max_agents", body["error"]["message"])
        self.assertEqual(as_key(n, "bob-secret", "POST", "/api/agents", {"type": "chat", "key": "b1"})[0], 201)

        async def scenario():
            auth = {"Authorization": "Bearer alice-secret"}
            c1 = await Client.connect(n.ws_url, extra_headers=auth)
            await Client.connect(n.ws_url, extra_headers=auth)
            refused = None
            try:
                await Client.connect(n.ws_url, extra_headers=auth)
            except websockets.exceptions.InvalidStatusCode as e:
                refused = e.status_code
            # One turn at a time for alice: the second is refused, not queued.
            await c1.send(op="send", agent="chat/a1", text="count to 10", id="q1")
            await c1.send(op="send", agent="chat/a2", text="count to 3", id="q2")
            evs = await c1.until(lambda e: e.get("id") == "q1" and e["ev"] in ("done", "error"), 30)
            second = [e for e in evs if e.get("id") == "q2"]
            again = await c1.turn("chat/a2", "count to 3", "q3", timeout=30)
            return refused, second, evs[-1], again[-1]
        refused, second, first, again = run(scenario())
        self.assertEqual(refused, 429)
        self.assertEqual([(e["ev"], e["code"]) for e in second], [("error", "limit_exceeded")], second)
        self.assertEqual(first["ev"], "done", first)
        self.assertEqual(again["ev"], "done", again)  # the slot came back
        metrics = http("GET", n.base + "/metrics", headers={"Authorization": "Bearer bob-secret"})[1]
        self.assertRegex(metrics, r"(?m)^troupe_key_limited_total [1-9]")

    def test_an_mcp_tool_call_holds_one_of_the_keys_turn_slots(self):
        sim = self.track(SimLlm(ttft_ms=5, tokens_per_s=40))
        keys = keys_file("alice-secret name=alice\n")
        n = self.track(Node(sim_backend_yaml([sim]) + "limits: {per_key: {max_turns: 1}}\n",
                            auth_keys_file=keys))
        headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
                   "Authorization": "Bearer alice-secret"}

        def post(body, sid=None):
            h = dict(headers, **({"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-06-18"} if sid else {}))
            req = urllib.request.Request(n.base + "/mcp", json.dumps(body).encode(), headers=h, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    return r.status, r.headers.get("Mcp-Session-Id"), json.loads(r.read())
            except urllib.error.HTTPError as e:
                return e.code, None, json.loads(e.read())

        _, sid, _ = post({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                          "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                                     "clientInfo": {"name": "t", "version": "1"}}})

        def call(i, text):
            return post({"jsonrpc": "2.0", "id": i, "method": "tools/call",
                         "params": {"name": "chat", "arguments": {"message": text}}}, sid)

        completions = lambda: json.loads(http("GET", f"http://127.0.0.1:{sim.port}/stats")[1])["chat_completions"]
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            first = pool.submit(call, 2, "count to 40")  # ~1 s at 40 tokens/s
            wait_until(lambda: completions() == 1, 10, "the first call to reach the model server")
            status, _, body = call(3, "count to 3")
            self.assertEqual(status, 429, body)
            self.assertEqual(body["error"]["code"], -32000)
            self.assertIn("limits.per_key.max_turns", body["error"]["message"])
            status, _, body = first.result()
        self.assertEqual(status, 200, body)
        self.assertEqual(body["result"]["content"][0]["text"], " ".join(str(i) for i in range(1, 41)))
        status, _, body = call(4, "count to 3")  # the slot came back with the answer
        self.assertEqual((status, body["result"]["content"][0]["text"]), (200, "1 2 3"), body)

    def test_a_key_over_its_rate_gets_limit_exceeded_and_others_do_not(self):
        keys = keys_file("alice-secret name=alice\nbob-secret name=bob\n")
        n = self.track(Node("limits: {per_key: {requests_per_second: 2, burst: 3}}\n", auth_keys_file=keys))
        codes = [as_key(n, "alice-secret", "GET", "/api/agents")[0] for _ in range(6)]
        self.assertEqual(codes[:3], [200, 200, 200])
        self.assertIn(429, codes[3:])
        self.assertEqual(as_key(n, "bob-secret", "GET", "/api/agents")[0], 200)
        wait_until(lambda: as_key(n, "alice-secret", "GET", "/api/agents")[0] == 200, 5,
                   "alice's bucket to refill")

        async def ops():
            cl = await Client.connect(n.ws_url, extra_headers={"Authorization": "Bearer bob-secret"})
            out = []
            for i in range(6):
                await cl.send(op="list", id=f"l{i}")
                out.append(await cl.recv())
            return out
        time.sleep(1.6)  # bob's bucket full again
        evs = run(ops())
        limited = [e for e in evs if e["ev"] == "error"]
        self.assertTrue(limited, evs)
        self.assertEqual({e["code"] for e in limited}, {"limit_exceeded"})
        self.assertIn("over its rate of 2 requests/s (limits.per_key.requests_per_second)",
                      limited[0]["message"])
        self.assertTrue(all(e["id"].startswith("l") for e in limited))

    def test_a_bad_key_attribute_is_named_with_its_line(self):
        keys = keys_file("good-key name=ok\nother-key nmae=typo\n")
        p = node_exit(f"gateway: {{listen: 127.0.0.1:0, auth: {{keys_file: {keys}}}}}\nstate: {{path: \":memory:\"}}\n")
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn(f"{keys}:2: 'nmae=typo' is not 'name=NAME'", p.stderr)


def raw_ws(port, path="/ws"):
    """A WebSocket handshake over a plain socket, to send frames no library would."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall((f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            break
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head[:200]
    return sock


def ws_frame(payload, opcode=1, fin=True, mask=True):
    """One client frame: `opcode` 1 text, 2 binary, 8 close, 9 ping."""
    b0 = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        head = bytes([b0, (0x80 if mask else 0) | n])
    elif n < 65536:
        head = bytes([b0, (0x80 if mask else 0) | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([b0, (0x80 if mask else 0) | 127]) + n.to_bytes(8, "big")
    if not mask:
        return head + payload
    key = bytes([1, 2, 3, 4])
    return head + key + bytes(c ^ key[i % 4] for i, c in enumerate(payload))


def hostile_inputs(seed=7):
    """1,000 malformed or hostile inputs, each ("ws"|"http"|"tcp", bytes)."""
    rnd = random.Random(seed)
    ws = [
        b"\xff\xfe\xfd not utf-8", b"{\"op\":\"send\",\"text\":\"\xc3\x28\"}", b"[" * 200000,
        b"{\"a\":" * 50000 + b"1" + b"}" * 50000, b"{\"op\":\"send\",\"id\":1e999999}",
        b"{\"op\":\"ping\",\"id\":123456789012345678901234567890}", b"{\"op\":5}", b"{\"op\":null}",
        b"{\"op\":\"send\",\"agent\":[],\"text\":{}}", b"{\"op\":\"spawn\",\"type\":{\"$gt\":1}}",
        b"{\"op\":\"send\",\"agent\":\"chat/k\",\"text\":\"" + b"x" * 500000 + b"\"}",
        b"{\"op\":\"attach\",\"agent\":\"../../etc/passwd\"}", b"{\"op\":\"kill\",\"agent\":\"\\u0000/\\u0000\"}",
        b"", b"null", b"[]", b"\"op\"", b"{}", b"{\"op\":\"cancel\",\"id\":\"nope\"}",
        b"{\"op\":\"spawn\",\"type\":\"chat\",\"key\":\"" + b"k" * 100000 + b"\"}",
        b"{\"op\":\"send\",\"agent\":\"chat/k\",\"text\":\"\\ud800\"}",
    ]
    http = [
        b"GARBAGE\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n", b"GET /api/agents HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"POST /api/agents HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n{}",
        b"POST /api/agents HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nxx\r\n0\r\n\r\n",
        b"POST /api/agents HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\n{\"type\":[",
        b"GET /api/agents HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100000 + b"\r\n\r\n",
        b"POST /api/chat/execute HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n\r\n{\"message\":1e99999}",
        b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 44\r\n\r\n"
        b"{\"jsonrpc\":\"2.0\",\"id\":[],\"method\":7,\"x\":1}",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 30\r\n\r\n{\"messages\":\"no\",\"model\":[]}",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64),  # a TLS hello to a plain port
    ]
    out = []
    for i in range(1000):
        kind = i % 3
        if kind == 0:
            base = rnd.choice(ws)
            if rnd.random() < 0.5 and base:  # mutate: flip, cut or splice bytes
                b = bytearray(base[:4096])
                for _ in range(rnd.randint(1, 8)):
                    b[rnd.randrange(len(b))] = rnd.randrange(256)
                base = bytes(b)
            out.append(("ws", base))
        elif kind == 1:
            base = rnd.choice(http)
            if rnd.random() < 0.3:
                base = base[: rnd.randrange(1, len(base) + 1)]  # cut short: a half-sent request
            out.append(("http", base))
        else:
            out.append(("tcp", bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 200)))))
    return out


class HostileInput(TroupeTestCase):
    def test_a_thousand_hostile_inputs_leave_the_node_serving_with_bounded_memory(self):
        node = self.track(Node())

        def rss():
            m = re.search(r"(?m)^process_resident_memory_bytes (\d+)", node.get("/metrics")[1])
            return int(m.group(1))

        def conversation():
            async def go():
                cl = await Client.connect(node.ws_url)
                # Under TSan the turn after the barrage took 15-25 s (the node
                # is still working through what the barrage queued).
                return await cl.turn("chat/probe", "what is 6*7?", f"p{time.monotonic_ns()}",
                                     timeout=90 if SANITIZER else 20)
            return run(go())[-1]

        self.assertEqual(node.post("/api/agents", {"type": "chat", "key": "probe"})[0], 201)
        self.assertEqual(conversation()["ev"], "done")
        before = rss()
        # Slowloris: connections that send a header a byte at a time, and
        # half-open ones that never finish; they stay open during the barrage.
        idle = []
        for i in range(50):
            c = socket.create_connection(("127.0.0.1", node.port), timeout=5)
            c.sendall(b"GET /api/agents HTTP/1.1\r\nHost: x\r\nX-Slow: " if i % 2 else b"GE")
            idle.append(c)
        ws_sock = None
        sent = 0
        for kind, data in hostile_inputs():
            try:
                if kind == "ws":
                    if ws_sock is None:
                        ws_sock = raw_ws(node.port)
                    ws_sock.sendall(ws_frame(data))
                    ws_sock.settimeout(0.2)
                    try:
                        if not ws_sock.recv(65536):  # closed on us (bad UTF-8, oversize): reconnect
                            ws_sock.close()
                            ws_sock = None
                    except socket.timeout:
                        pass
                else:
                    with socket.create_connection(("127.0.0.1", node.port), timeout=5) as c:
                        c.sendall(data)
                        if kind == "tcp" or data.endswith(b"\r\n\r\n") is False:
                            c.shutdown(socket.SHUT_WR)  # half-close mid-request
                        c.settimeout(2)
                        try:
                            c.recv(65536)
                        except (socket.timeout, ConnectionResetError):
                            pass
                sent += 1
            except (ConnectionResetError, BrokenPipeError):
                if ws_sock is not None:
                    ws_sock.close()
                ws_sock = None
                sent += 1
            self.assertTrue(node.alive(), f"the node died on input {sent}: {kind} {data[:80]!r}\n" + node.output()[-3000:])
        self.assertEqual(sent, 1000)
        for c in idle:
            c.sendall(b"x")  # still slow, still open: the node serves around them
        self.assertEqual(conversation()["ev"], "done")
        after = rss()
        for c in idle:
            c.close()
        if ws_sock:
            ws_sock.close()
        # ASan keeps freed memory in quarantine (256 MiB by default) and TSan
        # shadows every byte several times over: their bound is looser.
        bound = (512 if SANITIZER else 64) << 20
        self.assertLess(after - before, bound, f"RSS grew from {before} to {after} bytes")
        print(f"\nhostile input: 1000 inputs, RSS {before >> 20} -> {after >> 20} MiB, node serving")


class IdleConnections(TroupeTestCase):
    def test_silent_peers_are_dropped_after_the_idle_timeout_and_live_ones_stay(self):
        node = self.track(Node("limits: {connection_idle_timeout: 1s}\n"))
        self.assertEqual(node.post("/api/agents", {"type": "chat", "key": "live"})[0], 201)
        dead_ws = raw_ws(node.port)  # never answers the server's pings: a peer gone without a FIN
        slow = socket.create_connection(("127.0.0.1", node.port), timeout=5)
        slow.sendall(b"GET /api/agents HTTP/1.1\r\nHost: x\r\n")  # and never the rest

        def closed_within(sock, seconds):
            sock.settimeout(seconds)
            start = time.monotonic()
            try:
                while sock.recv(65536):
                    pass  # pings and close frames, then EOF
            except (socket.timeout, ConnectionResetError):
                return time.monotonic() - start < seconds
            return True

        async def live():
            cl = await Client.connect(node.ws_url)  # answers pings by itself
            await asyncio.sleep(2.5)
            return await cl.turn("chat/live", "count to 3", "r1")
        self.assertEqual(run(live())[-1]["ev"], "done")  # idle 2.5 s, still served
        self.assertTrue(closed_within(slow, 5), "the half-sent request was not dropped")
        self.assertTrue(closed_within(dead_ws, 5), "the silent WebSocket peer was not dropped")


class Tls(TroupeTestCase):
    def test_https_and_wss_work_with_a_real_client_and_plain_http_is_refused(self):
        tls = TlsFiles()
        node = self.track(Node(tls=tls))
        self.assertTrue(node.base.startswith("https://"))
        status, body = node.post("/api/agents", {"type": "chat", "key": "t1"})
        self.assertEqual(status, 201, body)

        async def turn():
            cl = await Client.connect(node.ws_url, ssl=tls.client_context())
            return await cl.turn("chat/t1", "hello over TLS", "r1")
        evs = run(turn())
        self.assertEqual(evs[-1]["ev"], "done", evs)
        # The same port refuses plain HTTP with a message that says why.
        status, body = http("GET", f"http://127.0.0.1:{node.port}/api/agents")
        self.assertEqual(status, 400)
        self.assertIn("speaks only TLS", json.loads(body)["error"]["message"])
        # It is real TLS: a client that does not trust the certificate stops.
        with self.assertRaises(OSError) as err:
            http("GET", node.base + "/health", context=ssl.create_default_context())
        self.assertIn("CERTIFICATE_VERIFY_FAILED", str(err.exception))
        metrics = node.get("/metrics")[1]
        self.assertRegex(metrics, r"(?m)^troupe_plain_http_refused_total [1-9]")
        self.assertRegex(metrics, r"(?m)^troupe_tls_handshake_failures_total [1-9]")

    def test_allow_plain_serves_both_on_one_port(self):
        tls = TlsFiles()
        tls.allow_plain = True
        node = self.track(Node(tls=tls))
        self.assertEqual(node.get("/api/agents")[0], 200)
        self.assertEqual(http("GET", f"http://127.0.0.1:{node.port}/api/agents")[0], 200)

    def test_a_renewed_certificate_is_served_after_sighup(self):
        tls = TlsFiles()
        node = self.track(Node(tls=tls))
        first = peer_certificate(node.port)
        tls.renew()
        node.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "tls_reloaded" in node.output(), what="the TLS reload")
        self.assertNotEqual(peer_certificate(node.port), first)
        self.assertEqual(http("GET", node.base + "/health", context=tls.client_context())[0], 200)
        # A broken file is refused and the certificate in force stays.
        with open(tls.key, "w") as f:
            f.write("not a key\n")
        node.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "tls_reload_failed" in node.output(), what="the refused reload")
        self.assertEqual(http("GET", node.base + "/health", context=tls.client_context())[0], 200)

    def test_troupe_ctl_checks_the_certificate_of_an_https_gateway(self):
        tls = TlsFiles()
        node = self.track(Node(tls=tls))
        ctl = [TROUPE, "ctl", "--gateway", node.base]
        p = subprocess.run(ctl + ["--cacert", tls.cert, "agents"], capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        p = subprocess.run(ctl + ["agents"], capture_output=True, text=True, timeout=30,
                           env={k: v for k, v in os.environ.items() if k != "TROUPE_CA_FILE"})
        self.assertEqual(p.returncode, 2, p.stdout)
        self.assertIn("certificate verify failed", p.stderr)

    def test_troupe_load_drives_a_tls_only_gateway(self):
        tls = TlsFiles()
        sim = self.track(SimLlm())
        node = self.track(Node(sim_backend_yaml([sim]), tls=tls))
        # 3 s: conversations start only within the window, which on a loaded
        # machine under a sanitizer can pass before the clients get to it.
        load = [TROUPE, "load", "--gateway", node.base, "--connections", "3", "--duration", "3s", "--quiet",
                "--json", "--message", "say hi"]
        p = subprocess.run(load + ["--cacert", tls.cert], capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        report = json.loads(p.stdout)
        self.assertGreater(report["conversations"], 0)
        self.assertGreater(report["tokens"], 0)
        self.assertEqual(report["errors"], 0, report["error_codes"])
        self.assertGreater(report["gateway_rss_bytes"]["before"], 0)  # /metrics over https too
        # Without the certificate trusted, no conversation: the handshake fails, named.
        p = subprocess.run(load, capture_output=True, text=True, timeout=60,
                           env={k: v for k, v in os.environ.items() if k != "TROUPE_CA_FILE"})
        self.assertEqual(p.returncode, 1, p.stdout)
        self.assertIn("tls: certificate verify failed", p.stderr)
        self.assertEqual(json.loads(p.stdout)["conversations"], 0)

    def test_tls_mistakes_are_named_with_file_and_line(self):
        tls = TlsFiles()
        p = node_exit(f"gateway:\n  listen: 127.0.0.1:0\n  tls: {{cert: /nonexistent/c.pem, key: {tls.key}}}\n",
                      "--check")
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertRegex(p.stderr, r"\.yaml:3:\d+: cannot read '/nonexistent/c.pem'")
        p = node_exit("gateway: {listen: 127.0.0.1:0, tls: {cert: x.pem}}\n", "--check")
        self.assertIn("missing required key 'gateway.tls.key'", p.stderr)
        other = TlsFiles()
        p = node_exit(f"gateway: {{listen: 127.0.0.1:0, tls: {{cert: {tls.cert}, key: {other.key}}}}}\n"
                      "state: {path: \":memory:\"}\n")
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn(f"troupe: gateway.tls.key '{other.key}': key values mismatch", p.stderr)


def peer_certificate(port):
    """The DER certificate the gateway presents, unverified."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port)) as raw, ctx.wrap_socket(raw) as s:
        return s.getpeercert(binary_form=True)


if __name__ == "__main__":
    unittest.main()

"""REST, health, metrics and the OpenAI-compatible route."""
import hashlib
import json
import re
import signal
import tempfile
import unittest
import urllib.request

from harness import Node, SimLlm, TroupeTestCase, http, node_exit, sim_backend_yaml, wait_until


class RestApi(TroupeTestCase):
    def setUp(self):
        super().setUp()
        self.sim = self.track(SimLlm(ttft_ms=5, tokens_per_s=5000))
        self.node = self.track(Node(sim_backend_yaml([self.sim])))

    def test_execute_runs_a_whole_turn(self):
        status, body = self.node.post("/api/chat/execute", {"message": "what is 2^10", "key": "r1"})
        self.assertEqual(status, 200, body)
        r = json.loads(body)
        self.assertEqual(r["agent"], "chat/r1")
        self.assertEqual(r["answer"], "The result is 1024.")
        self.assertEqual(r["steps"], 2)
        self.assertGreater(r["usage"]["total_tokens"], 0)
        # Same key, same conversation: the agent has both turns.
        status, body = self.node.post("/api/chat/execute", {"message": "hello", "key": "r1"})
        self.assertEqual(json.loads(body)["answer"], "You said: hello")

    def test_cpp_agent_type_with_typed_tool(self):
        status, body = self.node.post("/api/weather/execute",
                                      {"message": 'use forecast {"city": "Paris", "days": 2}'})
        self.assertEqual(status, 200, body)
        r = json.loads(body)
        self.assertTrue(r["agent"].startswith("weather/"))
        self.assertRegex(r["answer"], r"^The forecast tool said: Paris: \w+, -?\d+ C$")
        # Arguments of the wrong type are a tool error the model sees.
        status, body = self.node.post("/api/weather/execute", {"message": 'use forecast {"city": 7}'})
        self.assertIn("bad arguments", json.loads(body)["answer"])

    def test_agents_collection(self):
        status, body = self.node.post("/api/agents", {"type": "chat", "key": "a1"})
        self.assertEqual((status, json.loads(body)), (201, {"agent": "chat/a1"}))
        status, body = self.node.get("/api/agents")
        self.assertIn("chat/a1", json.loads(body)["agents"])
        status, body = http("DELETE", self.node.base + "/api/agents/chat/a1")
        self.assertEqual((status, json.loads(body)), (200, {"killed": "chat/a1"}))
        self.assertNotIn("chat/a1", json.loads(self.node.get("/api/agents")[1])["agents"])

    def test_health_cluster_and_metrics(self):
        status, body = self.node.get("/health")
        h = json.loads(body)
        self.assertEqual((status, h["status"], h["simulated_backend"]), (200, "ok", False))
        self.assertEqual(h["workers"][0]["backend"], "openai " + self.sim.url)
        self.assertTrue(h["workers"][0]["healthy"])
        cluster = json.loads(self.node.get("/api/cluster")[1])
        self.assertEqual(cluster["nodes"][0]["id"], "test-node")
        self.assertEqual(cluster["nodes"][0]["workers"][0]["slots"], 8)
        self.node.post("/api/chat/execute", {"message": "count to 5"})
        status, text = self.node.get("/metrics")
        self.assertEqual(status, 200)
        self.assertIn('troupe_turns_total{outcome="done"} 1', text)
        self.assertIn('troupe_tokens_total{worker="gpu0"} 5', text)
        self.assertIn("# TYPE troupe_turn_seconds histogram", text)
        self.assertIn('troupe_worker_ttft_seconds_count{worker="gpu0"} 1', text)
        self.assertIn("troupe_worker_queue_depth", text)
        self.assertIn("troupe_active_agents 1", text)

    def test_openai_compatible_route(self):
        req = {"model": "sim-model", "messages": [{"role": "user", "content": "count to 3"}]}
        status, body = self.node.post("/v1/chat/completions", req)
        self.assertEqual(status, 200, body)
        self.assertEqual(json.loads(body)["choices"][0]["message"]["content"], "1 2 3")
        req["stream"] = True
        r = urllib.request.urlopen(urllib.request.Request(
            self.node.base + "/v1/chat/completions", data=json.dumps(req).encode(), method="POST"), timeout=10)
        self.assertEqual(r.headers["Content-Type"], "text/event-stream")
        events = [l[6:] for l in r.read().decode().splitlines() if l.startswith("data: ")]
        self.assertEqual(events[-1], "[DONE]")
        text = "".join(json.loads(e)["choices"][0]["delta"].get("content", "")
                       for e in events[:-1] if json.loads(e)["choices"])
        self.assertEqual(text, "1 2 3")
        self.assertEqual(json.loads(events[-2])["usage"]["completion_tokens"], 3)
        models = json.loads(self.node.get("/v1/models")[1])
        self.assertEqual([m["id"] for m in models["data"]], ["sim-model"])
        status, body = self.node.post("/v1/chat/completions", dict(req, model="no-such-model"))
        self.assertEqual(status, 503)
        self.assertEqual(json.loads(body)["error"]["code"], "backend_unavailable")


def memory_contains(pid, needle):
    """Whether `needle` is in the process's resident writable memory. Reads in
    chunks and skips reservations over 64 GiB (ASan's shadow and allocator
    space), so under ASan it checks less than in a normal build."""
    found = False
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb") as mem:
        for line in maps:
            addr, perms = line.split()[:2]
            lo, hi = (int(x, 16) for x in addr.split("-"))
            if "rw" not in perms or hi - lo > 64 << 30:
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


if __name__ == "__main__":
    unittest.main()

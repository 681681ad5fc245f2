"""REST, health, metrics and the OpenAI-compatible route."""
import json
import re
import unittest
import urllib.request

from harness import Node, SimLlm, TroupeTestCase, http, sim_backend_yaml


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


if __name__ == "__main__":
    unittest.main()

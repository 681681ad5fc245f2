"""Supervisors restart crashed workers up to their restart intensity, then
escalate; /health shows both. Crashes are injected (TROUPE_FAULT_INJECTION=1)."""
import asyncio
import json
import unittest

from harness import Client, Node, SimLlm, TroupeTestCase, http, run, wait_until

FAULTS = {"TROUPE_FAULT_INJECTION": "1"}


def health(node):
    status, body = node.get("/health")
    return status, json.loads(body)


class Supervision(TroupeTestCase):
    def crash(self, node, worker):
        status, _ = http("POST", f"{node.base}/debug/crash/worker/{worker}")
        self.assertEqual(status, 202)

    def test_a_crashed_worker_restarts_then_escalates_past_the_limit(self):
        node = self.track(Node("supervision: {max_restarts: 2, within: 30s}\n", env=FAULTS))
        self.crash(node, "sim0")
        wait_until(lambda: health(node)[1]["supervision"].get("worker:sim0", {}).get("restarts") == 1,
                   what="first restart")
        status, h = health(node)
        self.assertEqual(status, 200)
        self.assertIn("injected crash", h["supervision"]["worker:sim0"]["last_failure"])
        # The restarted worker serves again.
        status, body = node.post("/api/chat/execute", {"message": "count to 3"})
        self.assertEqual((status, json.loads(body)["answer"]), (200, "1 2 3"))
        self.crash(node, "sim0")
        wait_until(lambda: health(node)[1]["supervision"]["worker:sim0"]["restarts"] == 2, what="second restart")
        self.crash(node, "sim0")
        wait_until(lambda: health(node)[1]["supervision"]["worker:sim0"]["escalated"], what="escalation")
        status, h = health(node)
        self.assertEqual((status, h["status"]), (503, "degraded"))
        self.assertIn("supervisor escalating", node.output())
        # Nothing hangs: with the subtree gone, a turn fails fast and clearly.
        status, body = node.post("/api/chat/execute", {"message": "hi"})
        self.assertEqual((status, json.loads(body)["error"]["code"]), (503, "backend_unavailable"))

    def test_fault_injection_is_off_by_default(self):
        node = self.track(Node(""))
        status, _ = http("POST", f"{node.base}/debug/crash/worker/sim0")
        self.assertEqual(status, 404)

    def test_requests_queued_on_a_crashed_worker_move_to_another(self):
        slow = self.track(SimLlm(ttft_ms=10, tokens_per_s=20))
        yaml = f"""inference:
  accelerators:
    - {{id: npu0, kind: npu, slots: 1, max_queue: 8, backend: {{type: openai, url: "{slow.url}"}}}}
    - {{id: gpu0, kind: gpu, slots: 1, max_queue: 8, backend: {{type: openai, url: "{slow.url}"}}}}
agents:
  types:
    chat: {{prefer: [npu, gpu]}}
"""
        node = self.track(Node(yaml, env=FAULTS))

        async def go():
            c = await Client.connect(node.ws_url)
            for i in ("0", "1", "2", "a"):
                await c.send(op="spawn", type="chat", key=f"q{i}", id=f"s{i}")
                await c.recv()
            # q0 takes npu0's only slot and streams, qa takes gpu0's; with both
            # full, q1 and q2 wait in the preferred npu0's queue...
            await c.send(op="send", agent="chat/q0", text="count to 200", id="r0")
            await c.until(lambda e: e["ev"] == "token" and e["id"] == "r0")
            await c.send(op="send", agent="chat/qa", text="count to 30", id="ra")
            await c.until(lambda e: e["ev"] == "token" and e["id"] == "ra")
            for i in (1, 2):
                await c.send(op="send", agent=f"chat/q{i}", text=f"count to {i + 2}", id=f"r{i}")

            def queued_on_npu0():
                workers = json.loads(node.get("/api/cluster")[1])["nodes"][0]["workers"]
                return [w for w in workers if w["id"] == "npu0"][0]["queued"] >= 2
            wait_until(queued_on_npu0, what="requests queued on npu0")
            self.crash(node, "npu0")
            ends = {}
            while len(ends) < 4:
                ev = await c.recv(timeout=15)
                if ev["ev"] in ("done", "error"):
                    ends[ev["id"]] = ev
            # ...and are re-routed to gpu0 when it dies; the one mid-stream ends cleanly.
            self.assertEqual(ends["ra"]["ev"], "done")
            self.assertEqual(ends["r1"]["answer"], "1 2 3")
            self.assertEqual(ends["r2"]["answer"], "1 2 3 4")
            self.assertEqual((ends["r0"]["ev"], ends["r0"]["code"]), ("error", "backend_unavailable"))
        run(go())


if __name__ == "__main__":
    unittest.main()

"""Supervisors restart crashed workers up to their restart intensity, then
escalate; /health shows both. Crashes are injected (TROUPE_FAULT_INJECTION=1)."""
import asyncio
import json
import unittest

from harness import (Client, Node, SimLlm, TroupeTestCase, http, run, sim_backend_yaml, state_file,
                     wait_job, wait_until)

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


class CoreSupervision(TroupeTestCase):
    """The router, the agent directory and the job runner are supervised
    too, behind stable addresses: clients never see them restart."""

    def crash(self, node, part):
        status, _ = http("POST", f"{node.base}/debug/crash/{part}")
        self.assertEqual(status, 202)

    def restarts(self, node, part):
        return health(node)[1]["supervision"].get(part, {}).get("restarts", 0)

    def test_a_crashed_directory_restarts_and_conversations_go_on_with_their_history(self):
        node = self.track(Node(state_path=state_file(), env=FAULTS))

        async def go():
            c = await Client.connect(node.ws_url)
            await c.send(op="spawn", type="chat", key="d1", id="s")
            await c.recv()
            evs = await c.turn("chat/d1", "remember 42", "1")
            self.assertEqual(evs[-1]["ev"], "done")
            self.crash(node, "directory")
            await asyncio.get_running_loop().run_in_executor(
                None, lambda: wait_until(lambda: self.restarts(node, "directory") == 1, what="restart"))
            # Same connection, same agent: the new directory activates it from the store.
            evs = await c.turn("chat/d1", "what did I say first?", "2")
            self.assertEqual(evs[-1].get("answer"), "You first said: remember 42", evs)
        run(go())
        status, h = health(node)
        self.assertEqual(status, 200)
        self.assertIn("injected crash of the agent directory", h["supervision"]["directory"]["last_failure"])

    def test_a_turn_running_when_the_directory_crashes_still_ends_in_done(self):
        slow = self.track(SimLlm(tokens_per_s=40))
        node = self.track(Node(sim_backend_yaml([slow], slots=4), state_path=state_file(), env=FAULTS))

        async def go():
            c = await Client.connect(node.ws_url)
            await c.send(op="spawn", type="chat", key="m1", id="s")
            await c.recv()
            await c.send(op="send", agent="chat/m1", text="count to 30", id="long")
            await c.until(lambda e: e["ev"] == "token" and e["id"] == "long")
            self.crash(node, "directory")
            evs = await c.until(lambda e: e["id"] == "long" and e["ev"] in ("done", "error"), timeout=30)
            self.assertEqual(evs[-1]["ev"], "done", evs[-1])
            self.assertEqual(evs[-1]["answer"], " ".join(str(i) for i in range(1, 31)))
        run(go())

    def test_a_crashed_router_restarts_and_relearns_the_workers(self):
        node = self.track(Node(env=FAULTS))
        self.crash(node, "router")
        wait_until(lambda: self.restarts(node, "router") == 1, what="restart")
        wait_until(lambda: len(health(node)[1]["workers"]) == 1, what="the worker to register again")
        status, body = node.post("/api/chat/execute", {"message": "what is 6*7?"})
        self.assertEqual((status, json.loads(body).get("answer")), (200, "The result is 42."), body)

    def test_a_crashed_job_runner_restarts_and_takes_its_jobs_back(self):
        node = self.track(Node(state_path=state_file(), env=FAULTS))
        self.crash(node, "jobs")
        wait_until(lambda: self.restarts(node, "jobs") == 1, what="restart")
        status, body = node.post("/api/chat/jobs", {"message": "what is 2+2?"})
        self.assertEqual(status, 202, body)
        j = wait_job(node, json.loads(body)["job"])
        self.assertEqual((j["state"], j.get("answer")), ("done", "The result is 4."), j)

    def test_a_directory_that_keeps_crashing_escalates(self):
        node = self.track(Node("supervision: {max_restarts: 1, within: 30s}\n", env=FAULTS))
        self.crash(node, "directory")
        wait_until(lambda: self.restarts(node, "directory") == 1, what="restart")
        self.crash(node, "directory")
        wait_until(lambda: health(node)[1]["supervision"]["directory"]["escalated"], what="escalation")
        status, h = health(node)
        self.assertEqual((status, h["status"]), (503, "degraded"))
        # No hang: with the subtree given up, requests fail at once.
        status, body = node.post("/api/chat/execute", {"message": "hi"})
        self.assertEqual(json.loads(body)["error"]["code"], "internal", body)


if __name__ == "__main__":
    unittest.main()

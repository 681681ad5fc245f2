"""Async jobs: queued in the store, run by the node, surviving restarts."""
import asyncio
import json
import signal
import time
import unittest

from harness import (Client, Node, SimLlm, TroupeTestCase, http, run, sim_backend_yaml, state_file,
                     wait_job, wait_until)


class Jobs(TroupeTestCase):
    def test_a_job_runs_and_reports_its_answer(self):
        node = self.track(Node(state_path=state_file()))
        status, body = node.post("/api/chat/jobs", {"message": "what is 12*12", "key": "acct"})
        self.assertEqual(status, 202, body)
        j = json.loads(body)
        self.assertEqual((j["agent"], j["state"]), ("chat/acct", "queued"))
        self.assertTrue(j["job"].startswith("job-"))
        done = wait_job(node, j["job"])
        self.assertEqual(done["state"], "done")
        self.assertEqual(done["answer"], "The result is 144.")
        self.assertEqual(done["steps"], 2)
        self.assertEqual(done["attempts"], 1)
        # The job's turn is part of the agent's conversation.
        status, body = node.post("/api/chat/execute", {"message": "what did I say first?", "key": "acct"})
        self.assertEqual(json.loads(body)["answer"], "You first said: what is 12*12")

    def test_a_websocket_client_attaches_to_a_job(self):
        sim = self.track(SimLlm(ttft_ms=10, tokens_per_s=100))
        node = self.track(Node(sim_backend_yaml([sim]), state_path=state_file()))
        job = json.loads(node.post("/api/chat/jobs", {"message": "count to 100", "key": "w1"})[1])["job"]

        async def go():
            c = await Client.connect(node.ws_url)
            await c.send(op="attach", job=job, id="a")
            evs = await c.until(lambda e: e["ev"] in ("done", "error") and e.get("id") == job)
            self.assertEqual(evs[0], {"ev": "attached", "agent": "chat/w1", "id": "a"})
            self.assertEqual(evs[-1]["answer"], " ".join(str(i) for i in range(1, 101)))
            self.assertTrue(any(e["ev"] == "token" and e["id"] == job for e in evs))
            # A finished job answers at once with its stored outcome (the
            # runner records it just after the agent's `done`: wait for that).
            await asyncio.get_running_loop().run_in_executor(None, wait_job, node, job)
            await c.send(op="attach", job=job, id="b")
            ev = await c.recv()
            self.assertEqual((ev["ev"], ev["id"], ev["answer"]), ("done", job, evs[-1]["answer"]))
            await c.send(op="attach", job="job-nope", id="c")
            ev = await c.recv()
            self.assertEqual((ev["ev"], ev["code"], ev["id"]), ("error", "bad_request", "c"))
        run(go())

    def test_bad_job_requests(self):
        node = self.track(Node(state_path=state_file()))
        status, body = node.post("/api/nope/jobs", {"message": "x"})
        self.assertEqual((status, json.loads(body)["error"]["code"]), (404, "unknown_type"))
        status, body = node.post("/api/chat/jobs", {"text": "x"})
        self.assertEqual((status, json.loads(body)["error"]["code"]), (400, "bad_request"))
        status, body = node.get("/api/jobs/job-doesnotexist")
        self.assertEqual(status, 404)
        status, body = http("GET", node.base + "/api/chat/jobs")
        self.assertEqual(status, 405)

    def restart_mid_jobs(self, stop):
        path = state_file()
        sim = self.track(SimLlm(ttft_ms=10, tokens_per_s=25))
        yaml = sim_backend_yaml([sim])
        node = self.track(Node(yaml, state_path=path))
        jobs = []
        for i in range(5):
            status, body = node.post("/api/chat/jobs", {"message": f"count to {30 + i}", "key": f"j{i}"})
            self.assertEqual(status, 202)
            jobs.append(json.loads(body)["job"])
        wait_until(lambda: all(json.loads(node.get(f"/api/jobs/{j}")[1])["state"] == "running" for j in jobs),
                   what="jobs running")
        time.sleep(0.3)  # some tokens into each turn
        stop(node)
        node = self.track(Node(yaml, state_path=path))
        for i, j in enumerate(jobs):
            done = wait_job(node, j)
            self.assertEqual(done["state"], "done", done)
            self.assertEqual(done["answer"], " ".join(str(n) for n in range(1, 31 + i)))
        # Each cut turn ran to its end once: resumed by its agent, joined by its job.
        self.assertIn('troupe_turns_total{outcome="done"} 5', node.get("/metrics")[1])

    def test_jobs_survive_sigkill(self):
        self.restart_mid_jobs(lambda node: node.kill())

    def test_jobs_survive_a_graceful_restart(self):
        self.restart_mid_jobs(lambda node: self.assertEqual(node.stop(signal.SIGTERM), 0))


if __name__ == "__main__":
    unittest.main()

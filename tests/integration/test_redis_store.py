"""The Redis state store (`state.redis`) against a real redis-server:
conversations and jobs survive a node killed with SIGKILL and a Redis
restart (AOF on)."""
import json
import time
import unittest

from harness import (Client, Node, RedisServer, SimLlm, TroupeTestCase, free_port, node_exit, run,
                     sim_backend_yaml, wait_job)


class RedisStore(TroupeTestCase):
    def setUp(self):
        super().setUp()
        self.redis = self.track(RedisServer())
        self.yaml = f"state: {{redis: {self.redis.url}}}\n"

    def test_history_survives_sigkill(self):
        node = self.track(Node(self.yaml))
        self.assertIn("state_store store=\"redis", node.output())
        status, body = node.post("/api/chat/execute", {"message": "the password is swordfish", "key": "r1"})
        self.assertEqual(status, 200, body)
        node.kill()
        node = self.track(Node(self.yaml))
        self.assertIn("chat/r1", json.loads(node.get("/api/agents")[1])["agents"])

        async def go():
            c = await Client.connect(node.ws_url)
            evs = await c.turn("chat/r1", "what did I say first?", "q")
            self.assertEqual(evs[-1]["answer"], "You first said: the password is swordfish")
        run(go())

    def test_jobs_survive_a_node_sigkill(self):
        sim = self.track(SimLlm(ttft_ms=10, tokens_per_s=25))
        yaml = self.yaml + sim_backend_yaml([sim])
        node = self.track(Node(yaml))
        jobs = [json.loads(node.post("/api/chat/jobs", {"message": f"count to {20 + i}", "key": f"rj{i}"})[1])["job"]
                for i in range(4)]
        time.sleep(0.5)
        node.kill()
        node = self.track(Node(yaml))
        for i, j in enumerate(jobs):
            done = wait_job(node, j)
            self.assertEqual(done["state"], "done", done)
            self.assertEqual(done["answer"], " ".join(str(n) for n in range(1, 21 + i)))
        self.assertIn('troupe_turns_total{outcome="done"} 4', node.get("/metrics")[1])

    def test_no_acknowledged_job_is_lost_when_redis_restarts(self):
        sim = self.track(SimLlm(ttft_ms=10, tokens_per_s=200))
        node = self.track(Node(self.yaml + sim_backend_yaml([sim])))
        jobs = [json.loads(node.post("/api/chat/jobs", {"message": f"what is {i}+{i}"})[1])["job"] for i in range(10)]
        # kill -9 Redis and bring it back on its AOF, same port.
        self.redis.kill()
        self.redis = self.track(RedisServer(port=self.redis.port, workdir=self.redis.workdir))
        more = [json.loads(node.post("/api/chat/jobs", {"message": f"what is {i}*3"})[1])["job"] for i in range(5)]
        for i, j in enumerate(jobs):
            done = wait_job(node, j)
            self.assertEqual((done["state"], done["answer"]), ("done", f"The result is {2 * i}."), done)
        for i, j in enumerate(more):
            self.assertEqual(wait_job(node, j)["answer"], f"The result is {3 * i}.")

    def test_redis_unreachable_at_start_exits_2(self):
        r = node_exit(f"gateway: {{listen: 127.0.0.1:0}}\nstate: {{redis: redis://127.0.0.1:{free_port()}/0}}\n")
        self.assertEqual(r.returncode, 2)
        self.assertIn("redis unreachable", r.stderr)


if __name__ == "__main__":
    unittest.main()

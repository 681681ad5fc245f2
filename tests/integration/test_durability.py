"""Conversations survive a node killed with SIGKILL; retries are idempotent;
idle agents passivate and come back with their history."""
import json
import sqlite3
import unittest

from harness import (Client, Node, SimLlm, TroupeTestCase, http, node_exit, run, sim_backend_yaml,
                     state_file, wait_until)


class Durability(TroupeTestCase):
    def test_history_survives_sigkill_and_the_next_message_continues_it(self):
        path = state_file()
        node = self.track(Node(state_path=path))
        status, body = node.post("/api/chat/execute", {"message": "remember the number 17", "key": "k1"})
        self.assertEqual(status, 200, body)
        node.kill()  # SIGKILL: no chance to flush anything
        node = self.track(Node(state_path=path))
        self.assertIn("chat/k1", json.loads(node.get("/api/agents")[1])["agents"])

        async def go():
            c = await Client.connect(node.ws_url)
            evs = await c.turn("chat/k1", "what did I say first?", "q")
            self.assertEqual(evs[-1]["answer"], "You first said: remember the number 17")
        run(go())

    def test_turn_cut_by_sigkill_resumes_and_the_returning_client_gets_done(self):
        path = state_file()
        sim = self.track(SimLlm(ttft_ms=10, tokens_per_s=40))
        yaml = sim_backend_yaml([sim])
        node = self.track(Node(yaml, state_path=path))

        async def before():
            c = await Client.connect(node.ws_url)
            await c.send(op="spawn", type="chat", key="long", id="s")
            await c.recv()
            await c.send(op="send", agent="chat/long", text="count to 80", id="cut-1")
            await c.until(lambda e: e["ev"] == "token")
        run(before())
        node.kill()
        node = self.track(Node(yaml, state_path=path))
        self.assertIn("resuming_turn", node.output())

        async def after():
            c = await Client.connect(node.ws_url)
            # The client retries with the same id and text after reconnecting:
            # it joins the resumed turn (or gets its stored outcome).
            evs = await c.turn("chat/long", "count to 80", "cut-1", timeout=20)
            self.assertEqual(evs[-1]["ev"], "done", evs[-1])
            self.assertEqual(evs[-1]["answer"], " ".join(str(i) for i in range(1, 81)))
        run(after())

    def test_a_retried_send_does_not_run_the_turn_twice(self):
        node = self.track(Node(state_path=state_file()))

        async def go():
            c = await Client.connect(node.ws_url)
            await c.send(op="spawn", type="chat", key="idem", id="s")
            await c.recv()
            first = await c.turn("chat/idem", "what is 6*7", "req-1")
            self.assertEqual(first[-1]["answer"], "The result is 42.")
            await c.close()
            d = await Client.connect(node.ws_url)
            again = await d.turn("chat/idem", "what is 6*7", "req-1")
            self.assertEqual([e["ev"] for e in again], ["done"])  # replayed, not re-run
            self.assertEqual(again[-1]["answer"], "The result is 42.")
            self.assertEqual(again[-1]["steps"], 2)
            other = await d.turn("chat/idem", "count to 2", "req-1")  # same id, new text: a new turn
            self.assertEqual(other[-1]["answer"], "1 2")
        run(go())
        metrics = node.get("/metrics")[1]
        self.assertIn('troupe_turns_total{outcome="done"} 2', metrics)
        self.assertIn("troupe_tool_calls_total 1", metrics)

    def test_a_retry_after_the_request_retention_runs_the_turn_again(self):
        sim = self.track(SimLlm())
        node = self.track(Node(sim_backend_yaml([sim]) +
                               f"state: {{path: {state_file()}, request_retention: 1s}}\n"))
        completions = lambda: json.loads(http("GET", f"http://127.0.0.1:{sim.port}/stats")[1])["chat_completions"]

        async def go():
            c = await Client.connect(node.ws_url)
            await c.send(op="spawn", type="chat", key="ret", id="s")
            await c.recv()
            first = await c.turn("chat/ret", "count to 3", "req-1")
            self.assertEqual(first[-1]["answer"], "1 2 3")
            asked = completions()
            again = await c.turn("chat/ret", "count to 3", "req-1")
            self.assertEqual([e["ev"] for e in again], ["done"])  # within the retention: replayed
            self.assertEqual(completions(), asked)
            # Past it, the id is forgotten: the same request runs as a new turn.
            wait_until(lambda: node.metric("troupe_request_log_expired_total") >= 1,
                       what="the request to expire")
            later = await c.turn("chat/ret", "count to 3", "req-1")
            self.assertEqual(later[-1]["answer"], "1 2 3")
            self.assertEqual(completions(), asked + 1)
            self.assertIn("token", [e["ev"] for e in later])
        run(go())

    def test_idle_agents_passivate_and_come_back_with_their_history(self):
        node = self.track(Node("agents:\n  idle_timeout: 300ms\n", state_path=state_file()))
        status, _ = node.post("/api/chat/execute", {"message": "my name is Ada", "key": "p1"})
        self.assertEqual(status, 200)
        wait_until(lambda: "troupe_active_agents 0" in node.get("/metrics")[1], what="passivation")
        self.assertIn("chat/p1", json.loads(node.get("/api/agents")[1])["agents"])

        async def go():
            c = await Client.connect(node.ws_url)
            evs = await c.turn("chat/p1", "what did I say first?", "q")
            self.assertEqual(evs[-1]["answer"], "You first said: my name is Ada")
        run(go())
        self.assertIn("troupe_active_agents 1", node.get("/metrics")[1])
        # The idle checks are on the deadline clock, which operators can watch:
        # the first activation's fired, the second's is armed.
        self.assertGreaterEqual(node.metric("troupe_deadlines_fired_total"), 1)
        wait_until(lambda: node.metric("troupe_deadlines_pending") >= 1, what="an armed idle check")

    def test_many_conversations_survive_a_restart(self):
        path = state_file()
        node = self.track(Node(state_path=path))

        async def fill():
            async def one(i):
                c = await Client.connect(node.ws_url)
                await c.send(op="spawn", type="chat", key=f"m{i}", id="s")
                await c.recv()
                evs = await c.turn(f"chat/m{i}", f"conversation number {i}", "a")
                self.assertEqual(evs[-1]["ev"], "done")
            import asyncio
            await asyncio.gather(*(one(i) for i in range(100)))
        run(fill())
        node.kill()
        node = self.track(Node(state_path=path))

        async def check():
            c = await Client.connect(node.ws_url)
            for i in range(100):
                evs = await c.turn(f"chat/m{i}", "what did I say first?", f"q{i}")
                self.assertEqual(evs[-1]["answer"], f"You first said: conversation number {i}")
        run(check())

    def test_a_store_from_a_newer_version_is_refused(self):
        path = state_file()
        node = self.track(Node(state_path=path))
        node.stop()
        db = sqlite3.connect(path)
        db.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
        db.commit()
        db.close()
        r = node_exit(f"gateway: {{listen: 127.0.0.1:0}}\nstate: {{path: {path}}}\n")
        self.assertEqual(r.returncode, 2)
        self.assertIn("schema version 99", r.stderr)


if __name__ == "__main__":
    unittest.main()

"""The /ws protocol end to end: node + sim-llm processes, websockets client."""
import asyncio
import json
import unittest

from harness import Client, Node, SimLlm, TroupeTestCase, run, sim_backend_yaml

AGENTS = """
agents:
  types:
    chat: {tools: [calculator, clock, agent], max_steps: 6}
"""


class WebSocketApi(TroupeTestCase):
    def setUp(self):
        super().setUp()
        self.sim = self.track(SimLlm(ttft_ms=10, tokens_per_s=2000))
        self.node = self.track(Node(sim_backend_yaml([self.sim]) + AGENTS))

    def test_spawn_then_tokens_stream_in_order(self):
        async def go():
            c = await Client.connect(self.node.ws_url)
            await c.send(op="spawn", type="chat", key="k1", id="1")
            ev = await c.recv()
            self.assertEqual(ev, {"ev": "spawned", "agent": "chat/k1", "node": "test-node", "id": "1"})
            evs = await c.turn("chat/k1", "count to 60", "2")
            tokens = [e["text"] for e in evs if e["ev"] == "token"]
            self.assertEqual("".join(tokens), " ".join(str(i) for i in range(1, 61)))
            # One event per token unless the client falls behind (then merged).
            self.assertTrue(1 <= len(tokens) <= 60, tokens)
            done = evs[-1]
            self.assertEqual(done["ev"], "done")
            self.assertEqual(done["answer"], "".join(tokens))
            self.assertEqual(done["steps"], 1)
            self.assertEqual(done["usage"]["completion_tokens"], 60)
            await c.close()
        run(go())

    def test_tool_call_round_trip(self):
        async def go():
            c = await Client.connect(self.node.ws_url)
            await c.send(op="spawn", type="chat", key="calc", id="s")
            await c.recv()
            evs = await c.turn("chat/calc", "what is (2+3)*4?", "t1")
            kinds = [e["ev"] for e in evs]
            self.assertEqual(kinds[:2], ["tool_call", "tool_result"])
            self.assertEqual(evs[0]["name"], "calculator")
            self.assertEqual(evs[0]["arguments"], {"expression": "(2+3)*4"})
            self.assertEqual(evs[1]["result"], 20)
            self.assertFalse(evs[1]["is_error"])
            self.assertEqual(evs[-1]["ev"], "done")
            self.assertEqual(evs[-1]["answer"], "The result is 20.")
            self.assertEqual(evs[-1]["steps"], 2)
            # The conversation continues with its history: a second turn works.
            evs = await c.turn("chat/calc", "what is 1/0", "t2")
            self.assertTrue(evs[1]["is_error"])
            self.assertIn("division by zero", evs[1]["result"])
            self.assertEqual(evs[-1]["ev"], "done")
            self.assertIn("division by zero", evs[-1]["answer"])
        run(go())

    def test_cancel_mid_stream(self):
        async def go():
            c = await Client.connect(self.node.ws_url)
            await c.send(op="spawn", type="chat", key="long", id="s")
            await c.recv()
            await c.send(op="send", agent="chat/long", text="count to 100000", id="run")
            await c.until(lambda e: e["ev"] == "token")
            await c.send(op="cancel", id="run")
            evs = await c.until(lambda e: e["ev"] in ("done", "error") and e.get("id") == "run")
            self.assertEqual(evs[-1]["ev"], "error")
            self.assertEqual(evs[-1]["code"], "cancelled")
            # The agent is free again at once: the backend request was aborted.
            evs = await c.turn("chat/long", "count to 3", "next")
            self.assertEqual(evs[-1]["answer"], "1 2 3")
            # Cancelling something that is not running is a clear error.
            await c.send(op="cancel", id="run")
            ev = await c.recv()
            self.assertEqual((ev["ev"], ev["code"], ev["id"]), ("error", "bad_request", "run"))
        run(go())

    def test_agent_tool_between_two_agents(self):
        async def go():
            c = await Client.connect(self.node.ws_url)
            for key in ("boss", "helper"):
                await c.send(op="spawn", type="chat", key=key, id=key)
                await c.recv()
            evs = await c.turn("chat/boss", "ask chat/helper: what is 6*7", "q")
            call = [e for e in evs if e["ev"] == "tool_call"][0]
            self.assertEqual(call["name"], "agent")
            self.assertEqual(call["arguments"], {"agent": "chat/helper", "message": "what is 6*7"})
            result = [e for e in evs if e["ev"] == "tool_result"][0]
            self.assertEqual(result["result"], "The result is 42.")
            self.assertEqual(evs[-1]["answer"], "The agent tool said: The result is 42.")
            # Asking itself is a tool error the model sees, not a deadlock.
            evs = await c.turn("chat/boss", "ask chat/boss: hi", "self")
            result = [e for e in evs if e["ev"] == "tool_result"][0]
            self.assertTrue(result["is_error"])
            self.assertEqual(evs[-1]["ev"], "done")
        run(go())

    def test_attach_list_kill_ping(self):
        async def go():
            a = await Client.connect(self.node.ws_url)
            b = await Client.connect(self.node.ws_url)
            await a.send(op="spawn", type="chat", key="shared", id="1")
            await a.recv()
            await b.send(op="attach", agent="chat/shared", id="att")
            self.assertEqual(await b.recv(), {"ev": "attached", "agent": "chat/shared", "id": "att"})
            await a.turn("chat/shared", "count to 3", "m")
            seen = await b.until(lambda e: e["ev"] == "done")
            self.assertEqual("".join(e["text"] for e in seen if e["ev"] == "token"), "1 2 3")
            await a.send(op="list", id="l")
            ev = await a.recv()
            self.assertEqual(ev["ev"], "agents")
            self.assertIn("chat/shared", ev["agents"])
            await a.send(op="ping", id="p")
            self.assertEqual(await a.recv(), {"ev": "pong", "id": "p"})
            await a.send(op="kill", agent="chat/shared", id="k")
            self.assertEqual(await a.recv(), {"ev": "killed", "agent": "chat/shared", "id": "k"})
            await a.send(op="send", agent="chat/shared", text="hi", id="gone")
            ev = await a.recv()
            self.assertEqual((ev["ev"], ev["code"]), ("error", "unknown_agent"))
        run(go())

    def test_type_shortcut_route(self):
        async def go():
            c = await Client.connect(self.node.ws_url + "/chat")
            spawned = await c.recv()
            self.assertEqual(spawned["ev"], "spawned")
            self.assertTrue(spawned["agent"].startswith("chat/"))
            await c.ws.send("count to 4")
            evs = await c.until(lambda e: e["ev"] == "done")
            self.assertEqual(evs[-1]["answer"], "1 2 3 4")
            self.assertEqual(evs[-1]["agent"], spawned["agent"])
        run(go())

    def test_two_hundred_concurrent_conversations(self):
        async def one(i):
            c = await Client.connect(self.node.ws_url)
            await c.send(op="spawn", type="chat", key=f"u{i}", id="s")
            await c.recv()
            first = await c.turn(f"chat/u{i}", f"what is {i}+1", "a", timeout=60)
            second = await c.turn(f"chat/u{i}", f"count to {i % 7 + 1}", "b", timeout=60)
            await c.close()
            return first[-1], second[-1]

        async def go():
            results = await asyncio.gather(*(one(i) for i in range(200)))
            for i, (first, second) in enumerate(results):
                self.assertEqual(first["ev"], "done", first)
                self.assertEqual(first["answer"], f"The result is {i + 1}.")
                self.assertEqual(second["answer"], " ".join(str(n) for n in range(1, i % 7 + 2)))
        run(go())


class ManyIoThreads(TroupeTestCase):
    def test_conversations_stream_whole_with_several_gateway_and_backend_threads(self):
        # Every connection and every model stream lives on its own strand, so
        # the gateway and the backends may run several I/O threads (the
        # default on machines of 16 cores and more).
        sim = self.track(SimLlm(ttft_ms=5, tokens_per_s=5000))
        node = self.track(Node(sim_backend_yaml([sim], slots=64) + "  io_threads: 3\n",
                               gateway_options="io_threads: 3"))

        async def one(i):
            c = await Client.connect(node.ws_url)
            await c.send(op="spawn", type="chat", key=f"t{i}", id="s")
            await c.recv()
            answers = []
            for turn in range(3):
                evs = await c.turn(f"chat/t{i}", f"count to {20 + i % 30}", f"r{turn}", timeout=60)
                tokens = "".join(e["text"] for e in evs if e["ev"] == "token")
                answers.append((tokens, evs[-1]))
            await c.close()
            return answers

        async def go():
            results = await asyncio.gather(*(one(i) for i in range(60)))
            for i, answers in enumerate(results):
                want = " ".join(str(n) for n in range(1, 20 + i % 30 + 1))
                for tokens, done in answers:
                    self.assertEqual(done["ev"], "done", done)
                    self.assertEqual(done["answer"], want)
                    self.assertEqual(tokens, want)
        run(go())
        self.assertIn("gateway_io_threads=3 backend_io_threads=3", node.output())


class HistoryLimit(TroupeTestCase):
    def test_an_agent_keeps_only_its_newest_turns_within_the_limit(self):
        node = self.track(Node("limits: {max_history_messages: 4}\n"))

        async def go():
            c = await Client.connect(node.ws_url)
            await c.send(op="spawn", type="chat", key="h", id="s")
            await c.recv()
            for i, word in enumerate(["alpha", "beta", "gamma"]):
                evs = await c.turn("chat/h", word, f"t{i}")
                self.assertEqual(evs[-1]["ev"], "done", evs)
            # Four messages fit: gamma's turn and the question; alpha and beta are gone.
            evs = await c.turn("chat/h", "what did I say first?", "q")
            self.assertEqual(evs[-1]["answer"], "You first said: gamma")
        run(go())


if __name__ == "__main__":
    unittest.main()

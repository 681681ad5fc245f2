"""Model servers that are down, die mid-stream, stall, or sit behind Lemonade routes."""
import json
import time
import unittest

from harness import (SANITIZER, Client, Node, SimLlm, TroupeTestCase, free_port, http, node_exit, run,
                     sim_backend_yaml, wait_until)


class Backends(TroupeTestCase):
    def test_backend_down_is_backend_unavailable(self):
        dead = f"http://127.0.0.1:{free_port()}/v1"
        node = self.track(Node(sim_backend_yaml([dead])))

        async def go():
            c = await Client.connect(node.ws_url)
            await c.send(op="spawn", type="chat", key="x", id="s")
            await c.recv()
            started = time.monotonic()
            evs = await c.turn("chat/x", "hello", "m", timeout=10)
            self.assertEqual(evs[-1]["ev"], "error")
            self.assertEqual(evs[-1]["code"], "backend_unavailable")
            self.assertLess(time.monotonic() - started, 5)
        run(go())
        wait_until(lambda: node.get("/health")[0] == 503, what="health to turn degraded")
        h = json.loads(node.get("/health")[1])
        self.assertEqual(h["status"], "degraded")
        self.assertIn("unreachable", h["workers"][0]["health"])

    # Under TSan each byte that crosses a CAF mailbox (uninstrumented, see
    # tests/tsan.supp) is a suppressed report, and TSan's search of the
    # suppressed addresses makes megabytes take minutes. The same path runs
    # under TSan with small requests in every other test here.
    @unittest.skipIf(SANITIZER == "tsan", "megabytes through CAF mailboxes are quadratic under TSan")
    def test_a_request_larger_than_the_socket_buffer_goes_whole_on_a_reused_connection(self):
        # On a pooled connection the worker's thread sends what the socket
        # takes at once and the I/O thread the rest: each turn carries the
        # whole history, so the last requests pass 4 MB, more than a loopback
        # socket takes in one send.
        sim = self.track(SimLlm())
        # A long first-token timeout: a request cut short would stall for it.
        node = self.track(Node(sim_backend_yaml([sim]).replace("first_token_timeout: 5s",
                                                                "first_token_timeout: 30s")))

        async def go():
            c = await Client.connect(node.ws_url)
            await c.send(op="spawn", type="chat", key="x", id="s")
            await c.recv()
            for i in range(6):
                started = time.monotonic()
                evs = await c.turn("chat/x", "count to 3 " + "x" * 900000, f"m{i}", timeout=60)
                self.assertEqual(evs[-1]["ev"], "done")
                self.assertEqual(evs[-1]["answer"], "1 2 3")
                # Cut short, it would wait out the first-token timeout and
                # only then go again whole on a fresh connection.
                self.assertLess(time.monotonic() - started, 15, f"turn {i} stalled")
        run(go())

    def test_backend_http_error_is_reported_with_its_reason(self):
        sim = self.track(SimLlm())
        wrong = f"http://127.0.0.1:{sim.port}/wrong/prefix"
        node = self.track(Node(sim_backend_yaml([wrong])))
        wait_until(lambda: node.get("/health")[0] == 503, what="health to turn degraded")
        status, body = node.post("/api/chat/execute", {"message": "hi"})
        self.assertEqual(status, 503)
        err = json.loads(body)["error"]
        self.assertEqual(err["code"], "backend_unavailable")
        self.assertIn("HTTP 404", err["message"])

    def test_backend_dying_mid_stream_ends_the_turn_with_error(self):
        sim = self.track(SimLlm(ttft_ms=10, tokens_per_s=50))
        node = self.track(Node(sim_backend_yaml([sim])))

        async def go():
            c = await Client.connect(node.ws_url)
            await c.send(op="spawn", type="chat", key="x", id="s")
            await c.recv()
            await c.send(op="send", agent="chat/x", text="count to 1000", id="m")
            await c.until(lambda e: e["ev"] == "token")
            sim.kill()
            evs = await c.until(lambda e: e["ev"] in ("done", "error"), timeout=10)
            self.assertEqual(evs[-1]["ev"], "error")
            self.assertEqual(evs[-1]["code"], "backend_unavailable")
            self.assertIn("mid-stream", evs[-1]["message"])
            # Nothing hangs afterwards either: the next turn fails fast and cleanly.
            evs = await c.turn("chat/x", "hello", "n", timeout=10)
            self.assertEqual(evs[-1]["code"], "backend_unavailable")
        run(go())

    def test_retry_on_another_worker_before_first_token(self):
        doomed = self.track(SimLlm())
        good = self.track(SimLlm())
        # The doomed worker is preferred (npu) and its health is not re-checked
        # for an hour, so the router still sends it the first request.
        yaml = f"""inference:
  accelerators:
    - {{id: npu0, kind: npu, slots: 4, backend: {{type: openai, url: "{doomed.url}", connect_timeout: 1s, health_interval: 1h}}}}
    - {{id: gpu0, kind: gpu, slots: 4, backend: {{type: openai, url: "{good.url}", connect_timeout: 1s, health_interval: 1h}}}}
agents:
  types:
    chat: {{prefer: [npu, gpu], tools: [calculator]}}
"""
        node = self.track(Node(yaml))
        wait_until(lambda: all(w["health"] == "ok" for w in json.loads(node.get("/health")[1])["workers"]),
                   what="both workers checked")
        doomed.kill()
        status, body = node.post("/api/chat/execute", {"message": "count to 3"})
        self.assertEqual(status, 200, body)
        self.assertEqual(json.loads(body)["answer"], "1 2 3")
        metrics = node.get("/metrics")[1]
        self.assertIn("troupe_inference_retries_total 1", metrics)
        self.assertIn('troupe_inference_requests_total{worker="gpu0",outcome="ok"} 1', metrics)

    def test_first_token_timeout(self):
        sim = self.track(SimLlm(ttft_ms=3000))
        yaml = f"""inference:
  accelerators:
    - {{id: gpu0, kind: gpu, slots: 2, backend: {{type: openai, url: "{sim.url}", first_token_timeout: 300ms}}}}
"""
        node = self.track(Node(yaml))
        started = time.monotonic()
        status, body = node.post("/api/chat/execute", {"message": "hi"})
        self.assertEqual(status, 504, body)
        self.assertEqual(json.loads(body)["error"]["code"], "timeout")
        self.assertLess(time.monotonic() - started, 2.5)

    def test_lemonade_backend_routes(self):
        sim = self.track(SimLlm(model="Qwen2.5-0.5B-Instruct-Hybrid"))
        yaml = f"""inference:
  accelerators:
    - {{id: npu0, kind: npu, slots: 2, backend: {{type: lemonade, url: "http://127.0.0.1:{sim.port}/api/v1", model: Qwen2.5-0.5B-Instruct-Hybrid}}}}
agents:
  types:
    chat: {{model: Qwen2.5-0.5B-Instruct-Hybrid, prefer: [npu], tools: [clock]}}
"""
        node = self.track(Node(yaml))
        wait_until(lambda: json.loads(node.get("/health")[1])["workers"][0]["health"] == "ok",
                   what="lemonade health")
        status, body = node.post("/api/chat/execute", {"message": "what time is it?"})
        self.assertEqual(status, 200, body)
        self.assertTrue(json.loads(body)["answer"].startswith("The time is 20"))

    def test_full_worker_answers_overloaded(self):
        sim = self.track(SimLlm(ttft_ms=10, tokens_per_s=20))
        yaml = f"""inference:
  accelerators:
    - {{id: gpu0, kind: gpu, slots: 1, max_queue: 1, backend: {{type: openai, url: "{sim.url}"}}}}
"""
        node = self.track(Node(yaml))

        async def go():
            c = await Client.connect(node.ws_url)
            for k in ("a", "b", "c"):
                await c.send(op="spawn", type="chat", key=k, id=k)
                await c.recv()
            for k in ("a", "b", "c"):
                await c.send(op="send", agent=f"chat/{k}", text="count to 200", id=k)
            # One slot and one queue place: exactly one of the three is refused
            # (which one depends on arrival order); one streams, one waits.
            evs = await c.until(lambda e: e["ev"] == "error")
            refused = evs[-1]["id"]
            self.assertEqual(evs[-1]["code"], "overloaded")
            admitted = {"a", "b", "c"} - {refused}
            seen = {e["id"] for e in evs if e["ev"] == "token"}
            if not seen:
                evs = await c.until(lambda e: e["ev"] == "token", timeout=10)
                seen = {e["id"] for e in evs if e["ev"] == "token"}
            self.assertEqual(len(seen), 1, seen)  # one slot: one streams
            self.assertLessEqual(seen, admitted)
            # 200 tokens at 20/s: neither can have finished; both end cancelled,
            # the streaming one and the one still queued.
            for k in admitted:
                await c.send(op="cancel", id=k)
            ends = {}
            await c.until(lambda e: e["ev"] in ("done", "error") and e["id"] in admitted and
                          (ends.__setitem__(e["id"], e) or len(ends) == 2), timeout=10)
            self.assertEqual({k: e.get("code") for k, e in ends.items()}, {k: "cancelled" for k in admitted})
        run(go())


if __name__ == "__main__":
    unittest.main()


class ResponseCache(TroupeTestCase):
    """Agent types with `response_cache: true` (and temperature 0) share one
    model call among identical requests, and reuse its answer later."""

    def completions(self, sim):
        return json.loads(http("GET", f"http://127.0.0.1:{sim.port}/stats")[1])["chat_completions"]

    def test_identical_requests_share_one_model_call_and_later_ones_its_answer(self):
        sim = self.track(SimLlm(tokens_per_s=40))  # ~0.5 s per answer: the five overlap
        node = self.track(Node(sim_backend_yaml([sim]) + """agents:
  types:
    faq: {temperature: 0, response_cache: true}
    chat: {temperature: 0}
"""))
        answer = " ".join(str(i) for i in range(1, 21))

        async def go():
            c = await Client.connect(node.ws_url)
            for i in range(8):
                await c.send(op="spawn", type="faq" if i < 6 else "chat", key=f"a{i}", id=f"s{i}")
            await c.until(lambda e: e.get("id") == "s7")
            # Five agents ask the same at once: one model call, five streams.
            for i in range(5):
                await c.send(op="send", agent=f"faq/a{i}", text="count to 20", id=f"q{i}")
            ends = {}
            evs = await c.until(lambda e: e["ev"] in ("done", "error") and
                                (ends.__setitem__(e["id"], e) or len(ends) == 5), timeout=30)
            for i in range(5):
                self.assertEqual((ends[f"q{i}"]["ev"], ends[f"q{i}"].get("answer")), ("done", answer),
                                 ends[f"q{i}"])
                tokens = "".join(e["text"] for e in evs if e.get("id") == f"q{i}" and e["ev"] == "token")
                self.assertEqual(tokens, answer)  # each saw the whole stream, in order
            self.assertEqual(self.completions(sim), 1)
            # Later, a sixth asks the same: the stored answer, streamed again.
            evs = await c.turn("faq/a5", "count to 20", "q5")
            self.assertEqual((evs[-1]["ev"], evs[-1].get("answer")), ("done", answer))
            self.assertEqual("".join(e["text"] for e in evs if e["ev"] == "token"), answer)
            self.assertEqual(self.completions(sim), 1)
            # A type without the cache asks the server every time.
            for i in (6, 7):
                evs = await c.turn(f"chat/a{i}", "count to 20", f"q{i}")
                self.assertEqual(evs[-1].get("answer"), answer)
            self.assertEqual(self.completions(sim), 3)
            # A different question is a different request.
            evs = await c.turn("faq/a0", "count to 3", "q8")
            self.assertEqual(evs[-1].get("answer"), "1 2 3")
            self.assertEqual(self.completions(sim), 4)
        run(go())
        metrics = node.get("/metrics")[1]
        self.assertIn('troupe_response_cache_total{result="hit"} 1', metrics)
        self.assertIn('troupe_response_cache_total{result="coalesced"} 4', metrics)
        self.assertIn('troupe_response_cache_total{result="miss"} 2', metrics)

    def test_an_agent_that_stops_waiting_does_not_stop_the_others(self):
        sim = self.track(SimLlm(tokens_per_s=40))
        node = self.track(Node(sim_backend_yaml([sim]) +
                               "agents:\n  types:\n    faq: {temperature: 0, response_cache: true}\n"))
        answer = " ".join(str(i) for i in range(1, 21))

        async def go():
            c = await Client.connect(node.ws_url)
            for i in range(3):
                await c.send(op="spawn", type="faq", key=f"b{i}", id=f"s{i}")
            await c.until(lambda e: e.get("id") == "s2")
            for i in range(3):
                await c.send(op="send", agent=f"faq/b{i}", text="count to 20", id=f"q{i}")
            await c.until(lambda e: e["ev"] == "token" and e["id"] == "q0")
            await c.send(op="kill", agent="faq/b0", id="k")  # the leader's agent goes away
            ends = {}
            await c.until(lambda e: e["ev"] in ("done", "error") and e["id"] in ("q1", "q2") and
                          (ends.__setitem__(e["id"], e) or len(ends) == 2), timeout=30)
            for q in ("q1", "q2"):
                self.assertEqual((ends[q]["ev"], ends[q].get("answer")), ("done", answer), ends[q])
            self.assertEqual(self.completions(sim), 1)
        run(go())

    def test_the_cache_needs_temperature_0(self):
        p = node_exit("agents:\n  types:\n    faq: {temperature: 0.7, response_cache: true}\n", "--check")
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertRegex(p.stderr, r"\.yaml:3:\d+: 'agents\.types\.faq\.response_cache' needs 'temperature: 0'")

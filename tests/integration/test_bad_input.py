"""Every kind of bad input gets its documented error and loses nothing."""
import json
import socket
import unittest

import websockets

from harness import Client, Node, TroupeTestCase, http, run


class BadInput(TroupeTestCase):
    def setUp(self):
        super().setUp()
        # Embedded simulated backend; a small frame limit to test oversize.
        self.node = self.track(Node("limits: {max_frame_bytes: 4096}\n"))

    async def expect_error(self, c, frame, code, message_part, id=None):
        await c.ws.send(frame)
        ev = await c.recv()
        self.assertEqual(ev["ev"], "error", ev)
        self.assertEqual(ev["code"], code, ev)
        self.assertIn(message_part, ev["message"])
        if id is not None:
            self.assertEqual(ev.get("id"), id)
        # The connection stays usable after every bad frame.
        await c.send(op="ping", id="alive")
        self.assertEqual(await c.recv(), {"ev": "pong", "id": "alive"})

    def test_bad_frames_get_errors_and_connection_survives(self):
        async def go():
            c = await Client.connect(self.node.ws_url)
            await self.expect_error(c, "{not json", "bad_request", "malformed JSON")
            await self.expect_error(c, "[1,2,3]", "bad_request", "JSON object")
            await self.expect_error(c, json.dumps({"op": "dance", "id": "7"}), "bad_request", "unknown op 'dance'", "7")
            await self.expect_error(c, json.dumps({"id": "8"}), "bad_request", "missing field 'op'", "8")
            await self.expect_error(c, json.dumps({"op": "send", "agent": "chat/x", "id": "9"}),
                                    "bad_request", "missing field 'text'", "9")
            await self.expect_error(c, json.dumps({"op": "send", "agent": 5, "text": "x", "id": "10"}),
                                    "bad_request", "'agent' must be a string", "10")
            await self.expect_error(c, json.dumps({"op": "spawn", "type": "nope", "id": "11"}),
                                    "unknown_type", "nope", "11")
            await self.expect_error(c, json.dumps({"op": "send", "agent": "chat/ghost", "text": "hi", "id": "12"}),
                                    "unknown_agent", "chat/ghost", "12")
            await self.expect_error(c, json.dumps({"op": "send", "agent": "noslash", "text": "hi", "id": "13"}),
                                    "bad_request", "type/key", "13")
            await self.expect_error(c, b"\x00\x01binary", "bad_request", "binary frames")
        run(go())

    def test_oversize_frame_closes_with_1009(self):
        async def go():
            c = await Client.connect(self.node.ws_url)
            await c.send(op="send", agent="chat/x", text="x" * 10000, id="big")
            with self.assertRaises(websockets.ConnectionClosed) as cm:
                await c.recv()
            self.assertEqual(cm.exception.code, 1009)
            # The node is fine: a new connection works.
            d = await Client.connect(self.node.ws_url)
            await d.send(op="ping", id="p")
            self.assertEqual(await d.recv(), {"ev": "pong", "id": "p"})
        run(go())

    def test_http_bad_input(self):
        base = self.node.base
        status, body = http("GET", base + "/no/such/route")
        self.assertEqual(status, 404)
        self.assertEqual(json.loads(body)["error"]["code"], "bad_request")
        status, body = http("POST", base + "/api/chat/execute", b"{oops")
        self.assertEqual(status, 400)
        self.assertEqual(json.loads(body)["error"]["code"], "bad_request")
        status, body = http("POST", base + "/api/chat/execute", {"text": "wrong field"})
        self.assertEqual(status, 400)
        self.assertIn("message", json.loads(body)["error"]["message"])
        status, body = http("POST", base + "/api/nope/execute", {"message": "hi"})
        self.assertEqual(status, 404)
        self.assertEqual(json.loads(body)["error"]["code"], "unknown_type")
        status, body = http("GET", base + "/api/chat/execute")
        self.assertEqual(status, 405)
        status, body = http("DELETE", base + "/api/agents/chat/ghost")
        self.assertEqual(status, 404)
        self.assertEqual(json.loads(body)["error"]["code"], "unknown_agent")
        status, body = http("GET", base + "/ws")
        self.assertEqual(status, 426)
        status, body = http("POST", base + "/api/chat/execute", b"x" * 5000)
        self.assertEqual(status, 413)
        status, body = http("POST", base + "/v1/chat/completions", {"messages": []})
        self.assertEqual(status, 400)
        # Garbage that is not HTTP at all.
        with socket.create_connection(("127.0.0.1", self.node.port), timeout=5) as s:
            s.sendall(b"\x16\x03\x01 definitely not http\r\n\r\n")
            self.assertIn(b"400", s.recv(4096))
        self.assertEqual(http("GET", base + "/health")[0], 200)

    def test_unknown_type_on_shortcut_route(self):
        async def go():
            with self.assertRaises(websockets.InvalidStatusCode) as cm:
                await websockets.connect(self.node.ws_url + "/nope")
            self.assertEqual(cm.exception.status_code, 404)
        run(go())


if __name__ == "__main__":
    unittest.main()

"""Troupe serves its agent types as MCP tools at /mcp (Streamable HTTP): the
official TypeScript SDK client (npm, pinned in tests/mcp) against a real
node, and bad input sent by hand."""
import json
import os
import subprocess
import unittest
import urllib.request

from harness import TROUPE, Node, TroupeTestCase, http, write_config

MCP_DIR = os.path.join(os.path.dirname(__file__), "..", "mcp")
HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}


def rpc(method, id=1, **params):
    return {"jsonrpc": "2.0", "id": id, "method": method, "params": params}


class McpServer(TroupeTestCase):
    def setUp(self):
        super().setUp()
        # `lost` asks for a model no worker serves: its turns fail.
        self.node = self.track(Node(
            "inference:\n  accelerators:\n"
            "    - {id: sim0, kind: cpu, slots: 4, backend: {type: simulated, model: sim-model}}\n"
            "agents:\n  types:\n    chat: {model: sim-model, tools: [calculator, clock, agent]}\n"
            "    lost: {model: no-such-model}\n"))
        self.url = self.node.base + "/mcp"

    def post(self, body, headers=None, raw=False):
        data = body if raw else json.dumps(body).encode()
        status, text = http("POST", self.url, data, dict(HEADERS, **(headers or {})))
        return status, (json.loads(text) if text else None)

    def session(self):
        """Initializes by hand; returns the Mcp-Session-Id the server gave."""
        req = urllib.request.Request(
            self.url, json.dumps(rpc("initialize", protocolVersion="2025-06-18", capabilities={},
                                     clientInfo={"name": "t", "version": "1"})).encode(),
            headers=HEADERS, method="POST")
        with urllib.request.urlopen(req) as r:
            self.assertEqual(json.loads(r.read())["result"]["protocolVersion"], "2025-06-18")
            return r.headers["Mcp-Session-Id"]

    def test_the_official_sdk_client_lists_calls_pings_and_ends_its_session(self):
        r = subprocess.run(["node", os.path.join(MCP_DIR, "sdk_client.mjs"), self.url],
                           capture_output=True, text=True, timeout=60, cwd=MCP_DIR)
        self.assertEqual(r.returncode, 0, r.stderr)
        out = json.loads(r.stdout.strip().splitlines()[-1])
        self.assertEqual(out["server"]["name"], "troupe")
        # The SDK asks for its newest version; the server speaks it (or 2025-06-18).
        self.assertIn(out["protocolVersion"], ("2025-11-25", "2025-06-18"))
        self.assertTrue(out["sessionId"])
        names = {t["name"] for t in out["tools"]}
        self.assertLessEqual({"chat", "lost", "weather"}, names)
        chat = next(t for t in out["tools"] if t["name"] == "chat")
        self.assertEqual(chat["inputSchema"]["required"], ["message"])
        self.assertEqual(out["ping"], {})
        self.assertEqual(out["call"]["isError"], False)
        self.assertEqual(out["call"]["content"], [{"type": "text", "text": "The result is 42."}])
        self.assertEqual(out["call"]["structuredContent"]["agent"], "chat/mcp1")
        # The key continues the same conversation.
        self.assertEqual(out["again"]["content"][0]["text"], "You first said: what is 6*7?")
        # Progress while the agent works: one notification per streamed token.
        self.assertEqual(out["withProgress"]["content"][0]["text"], " ".join(str(i) for i in range(1, 13)))
        self.assertEqual(out["progressCount"], 12)
        self.assertEqual(out["streamedText"], " ".join(str(i) for i in range(1, 13)))
        self.assertEqual(out["unknownTool"]["code"], -32602)
        self.assertEqual(out["badArguments"]["code"], -32602)
        self.assertTrue(out["terminated"])
        # The conversation is an ordinary agent: visible over REST too.
        self.assertIn("chat/mcp1", json.loads(self.node.get("/api/agents")[1])["agents"])

    def test_bad_input_gets_json_rpc_errors_and_http_statuses(self):
        status, body = self.post(b"{not json", raw=True)
        self.assertEqual((status, body["error"]["code"]), (400, -32700))
        status, body = self.post([rpc("ping")])
        self.assertEqual((status, body["error"]["code"]), (400, -32600))
        # No session yet: only initialize is allowed.
        status, body = self.post(rpc("tools/list"))
        self.assertEqual((status, body["error"]["code"]), (400, -32600))
        self.assertIn("Mcp-Session-Id", body["error"]["message"])
        sid = self.session()
        with_sid = {"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-06-18"}
        status, body = self.post(rpc("resources/list"), with_sid)
        self.assertEqual((status, body["error"]["code"]), (200, -32601))
        status, body = self.post(rpc("tools/list"), {"Mcp-Session-Id": sid, "MCP-Protocol-Version": "1999-01-01"})
        self.assertEqual(status, 400)
        self.assertIn("unsupported MCP-Protocol-Version", body["error"]["message"])
        status, body = self.post(rpc("tools/list"), {"Mcp-Session-Id": "nope"})
        self.assertEqual(status, 404)
        status, body = self.post(rpc("tools/list"), dict(with_sid, Origin="http://evil.example"))
        self.assertEqual(status, 403)
        status, body = self.post(rpc("tools/list"), dict(with_sid, Origin="http://localhost:3000"))
        self.assertEqual(status, 200)
        # A notification is accepted without a body.
        status, body = self.post({"jsonrpc": "2.0", "method": "notifications/initialized"}, with_sid)
        self.assertEqual((status, body), (202, None))
        # A failed turn is a tool error the model can read, not a protocol error.
        status, body = self.post(rpc("tools/call", name="lost", arguments={"message": "hi"}), with_sid)
        self.assertEqual(status, 200)
        self.assertTrue(body["result"]["isError"])
        self.assertIn("backend_unavailable", body["result"]["content"][0]["text"])
        # GET opens no stream here; DELETE ends the session.
        self.assertEqual(http("GET", self.url, headers=with_sid)[0], 405)
        self.assertEqual(http("DELETE", self.url, headers=with_sid)[0], 200)
        status, _ = self.post(rpc("ping"), with_sid)
        self.assertEqual(status, 404)


class McpStdio(unittest.TestCase):
    """`troupe mcp --config FILE`: the same tools over stdin/stdout."""

    def test_the_official_sdk_stdio_client_drives_troupe_mcp(self):
        config = write_config('node: {id: stdio}\nstate: {path: ":memory:"}\n')
        r = subprocess.run(["node", os.path.join(MCP_DIR, "sdk_stdio_client.mjs"), TROUPE, config],
                           capture_output=True, text=True, timeout=60, cwd=MCP_DIR)
        self.assertEqual(r.returncode, 0, r.stderr)
        out = json.loads(r.stdout.strip().splitlines()[-1])
        self.assertEqual(out["server"]["name"], "troupe")
        self.assertIn("chat", out["tools"])
        self.assertEqual(out["ping"], {})
        self.assertEqual(out["call"]["content"][0]["text"], "The result is 5.")

    def test_stdout_carries_only_json_rpc_and_eof_stops_the_node(self):
        config = write_config('node: {id: stdio}\nstate: {path: ":memory:"}\n')
        p = subprocess.Popen([TROUPE, "mcp", "--config", config], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        p.stdin.write("this is not json\n")
        p.stdin.write(json.dumps(rpc("initialize", id=1, protocolVersion="2025-06-18",
                                     capabilities={}, clientInfo={"name": "t", "version": "1"})) + "\n")
        p.stdin.write(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}) + "\n")
        p.stdin.write(json.dumps(rpc("tools/list", id=2)) + "\n")
        p.stdin.write(json.dumps(rpc("no/such", id=3)) + "\n")
        p.stdin.flush()
        replies = [json.loads(p.stdout.readline()) for _ in range(4)]
        p.stdin.close()  # the host goes away: the node stops cleanly
        self.assertEqual(p.wait(timeout=15), 0)
        self.assertEqual(replies[0]["error"]["code"], -32700)
        by_id = {r.get("id"): r for r in replies[1:]}
        self.assertEqual(by_id[1]["result"]["serverInfo"]["name"], "troupe")
        self.assertIn("chat", [t["name"] for t in by_id[2]["result"]["tools"]])
        self.assertEqual(by_id[3]["error"]["code"], -32601)
        self.assertEqual(p.stdout.read(), "")  # nothing but replies on stdout
        p.stdout.close()
        p.stderr.close()


if __name__ == "__main__":
    unittest.main()

"""Troupe's MCP client: agents call tools of real MCP servers from npm
(pinned in tests/mcp): `@modelcontextprotocol/server-everything` over stdio
(the node spawns it) and over Streamable HTTP, and a probe server built on
the official SDK's McpServer. Model turns come from the simulated backend,
which calls a tool when told `use TOOL {json}` and quotes its result."""
import json
import os
import signal
import socket
import subprocess
import time
import unittest
import uuid

from harness import (Client, ClusterNode, Node, Process, RedisServer, TroupeTestCase, free_port,
                     http, node_exit, run, wait_until)

MCP_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "mcp"))
EVERYTHING = os.path.join(MCP_DIR, "node_modules/@modelcontextprotocol/server-everything/dist/index.js")
PROBE = os.path.join(MCP_DIR, "probe_server.mjs")
PAGING = os.path.join(MCP_DIR, "paging_server.mjs")


def stdio_server(name, script, *args, extra=""):
    """A `mcp.servers` entry the node spawns; `args` may carry a marker that
    names the process for pkill."""
    cmd = ", ".join(json.dumps(a) for a in ["node", script, *args])
    return f"    {name}:\n      command: [{cmd}]\n" + extra


def pids(marker):
    out = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


class EverythingHttp(Process):
    """server-everything's Streamable HTTP transport on a free port."""

    def __init__(self, port=None):
        self.port = port or free_port()
        super().__init__(["node", EVERYTHING, "streamableHttp"], "everything", {"PORT": str(self.port)})
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        wait_until(self._up, what="server-everything over HTTP")

    def _up(self):
        if not self.alive():
            raise AssertionError("server-everything exited:\n" + self.output())
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False


class McpClientCase(TroupeTestCase):
    def node(self, servers, types):
        return self.track(Node(f"mcp:\n  servers:\n{servers}agents:\n  types:\n{types}"))

    def execute(self, node, type, message, timeout=60):
        status, body = http("POST", f"{node.base}/api/{type}/execute", {"message": message},
                            timeout=timeout)
        self.assertEqual(status, 200, body)
        return json.loads(body)["answer"]

    def server(self, node, name):
        status, body = node.get("/api/mcp")
        self.assertEqual(status, 200, body)
        return next((s for s in json.loads(body)["servers"] if s["name"] == name), None)

    def wait_ready(self, node, name, restarts=0, timeout=20):
        def ready():
            s = self.server(node, name)
            return s is not None and s["state"] == "ready" and s["restarts"] >= restarts
        wait_until(ready, timeout=timeout, what=f"MCP server {name} ready")
        return self.server(node, name)


class Stdio(McpClientCase):
    def setUp(self):
        super().setUp()
        self.marker = "troupe-test-" + uuid.uuid4().hex
        self.n = self.node(
            stdio_server("everything", EVERYTHING, "stdio", self.marker,
                         extra="      call_timeout: 20s\n"),
            '    tooly: {tools: [calculator, "mcp:everything/*"]}\n'
            '    picky: {tools: ["mcp:everything/echo"]}\n'
            'limits: {max_tool_output_bytes: 512}\n')

    def tearDown(self):
        super().tearDown()
        # The node's children die with it; make sure of it for the next tests.
        wait_until(lambda: not pids(self.marker), timeout=10, what="server-everything gone")

    def test_lists_the_servers_tools_under_exposed_names(self):
        s = self.wait_ready(self.n, "everything")
        self.assertEqual(s["transport"], "stdio")
        self.assertIn(s["protocol"], ("2025-06-18", "2025-11-25", "2025-03-26"))
        self.assertIn("everything", s["server"])
        names = {t["name"]: t["exposed"] for t in s["tools"]}
        self.assertEqual(names["echo"], "everything__echo")
        self.assertEqual(names["get-sum"], "everything__get-sum")
        for exposed in names.values():
            self.assertRegex(exposed, r"^[A-Za-z0-9_-]{1,64}$")

    def test_an_agent_turn_calls_echo_and_get_sum_and_uses_the_results(self):
        self.wait_ready(self.n, "everything")
        answer = self.execute(self.n, "tooly", 'use everything__echo {"message": "hello mcp"}')
        self.assertEqual(answer, "The everything__echo tool said: Echo: hello mcp")
        answer = self.execute(self.n, "tooly", 'use everything__get-sum {"a": 2, "b": 40}')
        self.assertEqual(answer, "The everything__get-sum tool said: The sum of 2 and 40 is 42.")

    def test_a_long_tool_result_reaches_the_model_cut_at_the_limit(self):
        self.wait_ready(self.n, "everything")
        # Two-byte characters: the cut must not split one.
        answer = self.execute(self.n, "tooly", 'use everything__echo {"message": "%s"}' % ("é" * 2000))
        said = answer.removeprefix("The everything__echo tool said: ")
        kept, note = said.split("\n[truncated: ")
        self.assertTrue(kept.startswith("Echo: éé"), kept[:40])
        self.assertLessEqual(len(kept.encode()), 512)
        self.assertGreater(len(kept.encode()), 500)
        self.assertEqual(note, "the tool returned more than 512 bytes (limits.max_tool_output_bytes)]")

    def test_the_websocket_shows_the_mcp_tool_call_and_its_result(self):
        self.wait_ready(self.n, "everything")

        async def scenario():
            c = await Client.connect(self.n.ws_url)
            await c.send(op="spawn", type="tooly", key="ws", id="s")
            await c.until(lambda e: e.get("ev") == "spawned")
            evs = await c.turn("tooly/ws", 'use everything__echo {"message": "over ws"}', "t1")
            kinds = [e["ev"] for e in evs]
            self.assertIn("tool_call", kinds)
            result = next(e for e in evs if e["ev"] == "tool_result")
            self.assertEqual(result["name"], "everything__echo")
            self.assertEqual(result["result"], "Echo: over ws")
            self.assertFalse(result["is_error"])
            self.assertEqual(evs[-1]["ev"], "done")
        run(scenario())

    def test_a_type_sees_only_the_tools_it_opted_into(self):
        self.wait_ready(self.n, "everything")
        # `picky` has echo only: get-sum is not offered, so the model does not call it.
        answer = self.execute(self.n, "picky", 'use everything__get-sum {"a": 1, "b": 2}')
        self.assertTrue(answer.startswith("You said:"), answer)
        answer = self.execute(self.n, "picky", 'use everything__echo {"message": "ok"}')
        self.assertEqual(answer, "The everything__echo tool said: Echo: ok")

    def test_a_server_killed_mid_call_gives_a_tool_error_then_comes_back(self):
        self.wait_ready(self.n, "everything")
        [first] = pids(self.marker)
        result = {}

        def call():
            result["answer"] = self.execute(
                self.n, "tooly",
                'use everything__trigger-long-running-operation {"duration": 5, "steps": 5}')
        import threading
        t = threading.Thread(target=call)
        t.start()
        time.sleep(1.5)
        os.kill(first, signal.SIGKILL)
        t.join(30)
        self.assertFalse(t.is_alive(), "the turn hung")
        self.assertIn("error:", result["answer"])
        self.assertIn("killed by signal 9", result["answer"])
        s = self.wait_ready(self.n, "everything", restarts=1)
        self.assertIn("killed by signal 9", s["last_error"])
        self.assertNotIn(first, pids(self.marker))
        answer = self.execute(self.n, "tooly", 'use everything__echo {"message": "back"}')
        self.assertEqual(answer, "The everything__echo tool said: Echo: back")


class Hangs(McpClientCase):
    def test_a_hung_server_misses_its_ping_and_is_replaced(self):
        marker = "troupe-test-" + uuid.uuid4().hex
        n = self.node(stdio_server("everything", EVERYTHING, "stdio", marker,
                                   extra="      ping_interval: 500ms\n      call_timeout: 20s\n"),
                      '    tooly: {tools: ["mcp:everything/*"]}\n')
        self.wait_ready(n, "everything")
        [hung] = pids(marker)
        os.kill(hung, signal.SIGSTOP)
        try:
            start = time.monotonic()
            answer = self.execute(n, "tooly", 'use everything__echo {"message": "anyone?"}')
            self.assertIn("error:", answer)
            self.assertIn("no answer to ping", answer)
            self.assertLess(time.monotonic() - start, 10)
            self.wait_ready(n, "everything", restarts=1)
            wait_until(lambda: hung not in pids(marker), timeout=10, what="hung server killed")
            answer = self.execute(n, "tooly", 'use everything__echo {"message": "new one"}')
            self.assertEqual(answer, "The everything__echo tool said: Echo: new one")
        finally:
            try:
                os.kill(hung, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def test_a_call_past_its_timeout_is_an_error_and_the_server_is_told(self):
        marker = "troupe-test-" + uuid.uuid4().hex
        n = self.node(stdio_server("probe", PROBE, marker, extra="      call_timeout: 1s\n"),
                      '    tooly: {tools: ["mcp:probe/*"]}\n')
        self.wait_ready(n, "probe")
        answer = self.execute(n, "tooly", 'use probe__sleep {"seconds": 30}')
        self.assertIn("gave no answer within 1000 ms", answer)
        # notifications/cancelled reached the SDK server: it aborted the handler.
        wait_until(lambda: "aborted" in n.output(), timeout=10, what="the probe's abort")


class Probe(McpClientCase):
    def setUp(self):
        super().setUp()
        self.marker = "troupe-test-" + uuid.uuid4().hex
        self.n = self.node(stdio_server("probe", PROBE, self.marker),
                           '    tooly: {tools: ["mcp:probe/*"]}\n')
        self.wait_ready(self.n, "probe")

    def test_a_cancelled_turn_cancels_its_mcp_call(self):
        async def scenario():
            c = await Client.connect(self.n.ws_url)
            await c.send(op="spawn", type="tooly", key="c", id="s")
            await c.until(lambda e: e.get("ev") == "spawned")
            await c.send(op="send", agent="tooly/c", text='use probe__sleep {"seconds": 60}', id="t")
            await c.until(lambda e: e.get("ev") == "tool_call")
            await c.send(op="cancel", id="t")
            evs = await c.until(lambda e: e.get("id") == "t" and e["ev"] in ("done", "error"))
            self.assertEqual(evs[-1]["ev"], "error")
            self.assertEqual(evs[-1]["code"], "cancelled")
        run(scenario())
        wait_until(lambda: "aborted" in self.n.output(), timeout=10, what="the probe's abort")

    def test_a_tool_error_goes_back_to_the_model(self):
        answer = self.execute(self.n, "tooly", "use probe__fail {}")
        self.assertEqual(answer, "The probe__fail tool said: error: it broke")

    def test_a_tool_added_at_run_time_is_listed_again_and_callable(self):
        self.assertNotIn("fresh", [t["name"] for t in self.server(self.n, "probe")["tools"]])
        answer = self.execute(self.n, "tooly", 'use probe__add-tool {"name": "fresh"}')
        self.assertEqual(answer, "The probe__add-tool tool said: added fresh")
        wait_until(lambda: "fresh" in [t["name"] for t in self.server(self.n, "probe")["tools"]],
                   timeout=10, what="tools/list_changed handled")
        answer = self.execute(self.n, "tooly", "use probe__fresh {}")
        self.assertEqual(answer, "The probe__fresh tool said: fresh ran")


class Paging(McpClientCase):
    def test_every_page_of_a_paged_tool_list_is_read(self):
        n = self.node(stdio_server("paged", PAGING, "troupe-test-" + uuid.uuid4().hex),
                      '    tooly: {tools: ["mcp:paged/*"]}\n')
        s = self.wait_ready(n, "paged")
        self.assertEqual([t["name"] for t in s["tools"]], ["alpha", "bravo", "charlie", "delta", "echo"])
        answer = self.execute(n, "tooly", "use paged__echo {}")
        self.assertEqual(answer, "The paged__echo tool said: echo here")


class Http(McpClientCase):
    def setUp(self):
        super().setUp()
        self.server_proc = self.track(EverythingHttp())
        self.n = self.node(f"    remote:\n      url: {self.server_proc.url}\n      call_timeout: 20s\n",
                           '    tooly: {tools: ["mcp:remote/*"]}\n')

    def test_lists_and_calls_echo_and_get_sum_over_streamable_http(self):
        s = self.wait_ready(self.n, "remote")
        self.assertEqual(s["transport"], "http")
        self.assertIn("echo", [t["name"] for t in s["tools"]])
        answer = self.execute(self.n, "tooly", 'use remote__echo {"message": "via http"}')
        self.assertEqual(answer, "The remote__echo tool said: Echo: via http")
        answer = self.execute(self.n, "tooly", 'use remote__get-sum {"a": 20, "b": 22}')
        self.assertEqual(answer, "The remote__get-sum tool said: The sum of 20 and 22 is 42.")

    def test_a_server_killed_mid_call_gives_a_tool_error_and_a_new_session_later(self):
        self.wait_ready(self.n, "remote")
        result = {}

        def call():
            result["answer"] = self.execute(
                self.n, "tooly",
                'use remote__trigger-long-running-operation {"duration": 5, "steps": 5}')
        import threading
        t = threading.Thread(target=call)
        t.start()
        time.sleep(1.5)
        self.server_proc.kill()
        t.join(30)
        self.assertFalse(t.is_alive(), "the turn hung")
        self.assertIn("error:", result["answer"])
        # The node keeps serving while the server is away, and reconnects
        # (new session) once it is back on the same port.
        self.assertEqual(self.n.get("/health")[0], 200)
        self.server_proc = self.track(EverythingHttp(self.server_proc.port))
        self.wait_ready(self.n, "remote", restarts=1, timeout=40)
        answer = self.execute(self.n, "tooly", 'use remote__echo {"message": "again"}')
        self.assertEqual(answer, "The remote__echo tool said: Echo: again")

    def test_a_restarted_server_that_forgot_the_session_is_initialized_again(self):
        self.wait_ready(self.n, "remote")
        self.server_proc.kill()
        self.server_proc = self.track(EverythingHttp(self.server_proc.port))
        # The first call after the restart may fail (stale session or the
        # server away); a later one must succeed on a new session.
        deadline = time.monotonic() + 40
        while True:
            answer = self.execute(self.n, "tooly", 'use remote__echo {"message": "fresh"}')
            if answer == "The remote__echo tool said: Echo: fresh":
                break
            self.assertLess(time.monotonic(), deadline, answer)
            time.sleep(0.5)
        self.assertGreaterEqual(self.server(self.n, "remote")["restarts"], 1)


class Cluster(McpClientCase):
    """A server configured on one node serves agents hosted on another."""

    def test_an_agent_calls_a_tool_server_that_runs_on_another_node(self):
        redis = self.track(RedisServer())
        marker = "troupe-test-" + uuid.uuid4().hex
        # `front` hosts the agents and has no MCP servers; `tools` runs server-everything.
        front = self.track(ClusterNode(
            "front", ["gateway", "agents", "inference"], redis,
            'agents:\n  types:\n    tooly: {tools: ["mcp:everything/*"]}\n'))
        tools = self.track(ClusterNode(
            "tools", ["inference"], redis,
            "mcp:\n  servers:\n" + stdio_server("everything", EVERYTHING, "stdio", marker)))
        s = self.wait_ready(front, "everything")
        self.assertEqual((s["transport"], s["target"]), ("remote", "tools"))
        self.assertIn("everything__get-sum", [t["exposed"] for t in s["tools"]])
        answer = self.execute(front, "tooly", 'use everything__get-sum {"a": 40, "b": 2}')
        self.assertEqual(answer, "The everything__get-sum tool said: The sum of 40 and 2 is 42.")

        # The node with the server dies mid-call: the call ends as a tool
        # error (no hang), and the tools leave the catalog.
        result = {}

        def call():
            result["answer"] = self.execute(
                front, "tooly",
                'use everything__trigger-long-running-operation {"duration": 10, "steps": 5}')
        import threading
        t = threading.Thread(target=call)
        t.start()
        time.sleep(1.5)
        tools.kill()
        t.join(30)
        self.assertFalse(t.is_alive(), "the turn hung")
        self.assertIn("error:", result["answer"])
        self.assertIn("tools is gone", result["answer"])
        wait_until(lambda: not json.loads(front.get("/api/mcp")[1])["servers"], timeout=10,
                   what="the dead node's server forgotten")
        wait_until(lambda: not pids(marker), timeout=10, what="server-everything gone with its node")


class Config(unittest.TestCase):
    def test_bad_mcp_config_is_named_with_file_and_line(self):
        cases = [
            ("mcp:\n  servers:\n    bad.name: {command: [x]}\n", "3:5", "MCP server name 'bad.name'"),
            ("mcp:\n  servers:\n    both: {command: [x], url: 'http://h/mcp'}\n", "3:11",
             "exactly one of 'command'"),
            ("mcp:\n  servers:\n    s: {url: 'ftp://h'}\n", "3:8", "must start with http://"),
            ("mcp:\n  servers:\n    s: {command: [x], colour: red}\n", "3:25", "unknown key 'mcp.servers.s.colour'"),
            ("mcp:\n  servers:\n    s: {command: [x]}\nagents:\n  types:\n    t: {tools: ['mcp:nope/*']}\n",
             "6:14", "names server 'nope'"),
            ("agents:\n  types:\n    t: {tools: ['mcp:s']}\n", "3:14", "mcp:SERVER/* or mcp:SERVER/TOOL"),
        ]
        for text, where, what in cases:
            with self.subTest(what=what):
                p = node_exit("gateway: {listen: 127.0.0.1:0}\n" + text, "--check")
                self.assertEqual(p.returncode, 2, p.stderr)
                self.assertIn(what, p.stderr)
                self.assertIn(f".yaml:{int(where.split(':')[0]) + 1}:", p.stderr)

    def test_a_server_that_cannot_start_is_reported_and_the_node_keeps_serving(self):
        n = Node("mcp:\n  servers:\n    ghost: {command: [no-such-mcp-server-xyz]}\n"
                 "agents:\n  types:\n    tooly: {tools: [calculator, 'mcp:ghost/*']}\n")
        try:
            def failed():
                s = json.loads(n.get("/api/mcp")[1])["servers"][0]
                return "cannot run 'no-such-mcp-server-xyz'" in s["last_error"]
            wait_until(failed, what="the spawn failure reported")
            status, body = http("POST", f"{n.base}/api/tooly/execute", {"message": "what is 2+3?"})
            self.assertEqual(status, 200, body)
            self.assertEqual(json.loads(body)["answer"], "The result is 5.")
            self.assertEqual(n.get("/health")[0], 200)
        finally:
            n.kill()


if __name__ == "__main__":
    unittest.main()

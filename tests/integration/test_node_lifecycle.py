"""Starting, checking and stopping a node; config errors; slow clients."""
import json
import os
import signal
import socket
import subprocess
import unittest

import websockets

from harness import (SANITIZER, TROUPE, Client, Node, SimLlm, TroupeTestCase, run, sim_backend_yaml, wait_until,
                     write_config)


def check(path):
    return subprocess.run([TROUPE, "node", "--config", path, "--check"], capture_output=True, text=True, timeout=30)


class Config(unittest.TestCase):
    def test_example_config_is_valid(self):
        here = os.path.dirname(__file__)
        r = check(os.path.join(here, "../../examples/single-node.yaml"))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("config OK", r.stdout)

    def test_unknown_key_names_file_and_line(self):
        path = write_config("node:\n  id: a\ngateway:\n  listen: 127.0.0.1:7000\n  lisen: 1\n")
        r = check(path)
        self.assertEqual(r.returncode, 2)
        self.assertIn(f"{path}:5:3: unknown key 'gateway.lisen'", r.stderr)

    def test_wrong_type_and_missing_field(self):
        path = write_config("inference:\n  accelerators:\n    - id: g\n      slots: lots\n      backend: {type: simulated}\n")
        r = check(path)
        self.assertEqual(r.returncode, 2)
        self.assertIn(f"{path}:4:14: 'inference.accelerators[0].slots' must be an integer", r.stderr)
        path = write_config("inference:\n  accelerators:\n    - {id: g, backend: {type: openai}}\n")
        r = check(path)
        self.assertEqual(r.returncode, 2)
        self.assertIn("url", r.stderr)

    def test_unknown_tool_and_missing_file(self):
        r = check(write_config("agents:\n  types:\n    chat: {tools: [teleport]}\n"))
        self.assertEqual(r.returncode, 2)
        self.assertIn("unknown tool 'teleport'", r.stderr)
        r = check("/nonexistent/troupe.yaml")
        self.assertEqual(r.returncode, 2)
        self.assertIn("cannot open", r.stderr)

    def test_port_in_use_exits_2(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen()
            port = s.getsockname()[1]
            path = write_config(f"gateway: {{listen: 127.0.0.1:{port}}}\n")
            r = subprocess.run([TROUPE, "node", "--config", path], capture_output=True, text=True, timeout=30)
            self.assertEqual(r.returncode, 2)
            self.assertIn(f"cannot listen on 127.0.0.1:{port}", r.stderr)


class Lifecycle(TroupeTestCase):
    def test_embedded_simulator_is_announced(self):
        node = self.track(Node(""))
        self.assertIn("NO MODEL SERVER CONFIGURED", node.output())
        self.assertTrue(json.loads(node.get("/health")[1])["simulated_backend"])

    def test_sigterm_ends_open_turns_and_exits_zero(self):
        sim = self.track(SimLlm(ttft_ms=10, tokens_per_s=20))
        node = self.track(Node(sim_backend_yaml([sim])))

        async def go():
            c = await Client.connect(node.ws_url)
            await c.send(op="spawn", type="chat", key="x", id="s")
            await c.recv()
            await c.send(op="send", agent="chat/x", text="count to 1000", id="long")
            await c.until(lambda e: e["ev"] == "token")
            node.proc.send_signal(signal.SIGTERM)
            evs = await c.until(lambda e: e["ev"] in ("done", "error"), timeout=10)
            self.assertEqual((evs[-1]["ev"], evs[-1]["code"], evs[-1]["id"]), ("error", "cancelled", "long"))
            with self.assertRaises(websockets.ConnectionClosed) as cm:
                await c.recv(timeout=10)
            self.assertEqual(cm.exception.code, 1001)
        run(go())
        self.assertEqual(node.proc.wait(10), 0)
        self.assertIn("node stopped", node.output())

    def test_json_logs(self):
        path = write_config("gateway: {listen: 127.0.0.1:0}\n")
        p = subprocess.Popen([TROUPE, "node", "--config", path, "--log-json"], stderr=subprocess.PIPE, text=True)
        self.addCleanup(p.stderr.close)
        try:
            lines = []
            while len(lines) < 3:
                line = p.stderr.readline()
                if line.startswith("{"):
                    lines.append(json.loads(line))
            self.assertEqual(lines[0]["event"], "starting")
            self.assertTrue(all({"ts", "level", "sub", "event"} <= set(l) for l in lines))
        finally:
            p.send_signal(signal.SIGTERM)
            self.assertEqual(p.wait(10), 0)

    def test_client_that_does_not_read_is_disconnected(self):
        node = self.track(Node("limits: {max_outbound_bytes: 65536}\n"
                               "inference:\n  accelerators:\n    - {id: sim0, slots: 4, backend: {type: simulated, ttft_ms: 0, tokens_per_s: 1000000}}\n"))

        async def go():
            c = await Client.connect(node.ws_url, read_limit=2 ** 16, max_queue=1)
            # Stop reading: pause the transport so the kernel buffers fill.
            c.ws.transport.pause_reading()
            await c.send(op="spawn", type="chat", key="flood", id="s")
            await c.send(op="send", agent="chat/flood", text="count to 100000", id="f")
            wait_until(lambda: "troupe_ws_slow_client_disconnects_total 1" in node.get("/metrics")[1],
                       timeout=60 if SANITIZER else 20, what="slow client disconnect")
            c.ws.transport.abort()  # it will never read its close frame
            Client.open_clients.remove(c)
            # The node is still healthy and serves others.
            d = await Client.connect(node.ws_url)
            await d.send(op="ping", id="p")
            self.assertEqual(await d.recv(), {"ev": "pong", "id": "p"})
        run(go())


if __name__ == "__main__":
    unittest.main()

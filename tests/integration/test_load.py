"""`troupe load`, the load generator the benchmarks compare Troupe with."""
import json
import subprocess
import unittest

from harness import TROUPE, Node, SimLlm, TroupeTestCase, http, sim_backend_yaml


class Load(TroupeTestCase):
    def run_load(self, *target):
        p = subprocess.run([TROUPE, "load", *target, "--connections", "1", "--duration", "1s",
                            "--json", "--quiet", "--message", "count to 3"],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        report = json.loads(p.stdout)
        self.assertEqual(report["errors"], 0, report["error_codes"])
        return report["conversations"]

    def test_a_direct_client_sends_the_model_the_conversation_an_agent_would(self):
        # The baseline is fair only if the model server gets the same requests
        # either way: turn i carries the system prompt, the i-1 turns before
        # it (question and answer) and the new question, 2i messages, as the
        # agent sends them.
        via_agent, direct = self.track(SimLlm()), self.track(SimLlm())
        node = self.track(Node(sim_backend_yaml([via_agent]) +
                               'agents:\n  types:\n    chat: {system: "be brief"}\n'))
        messages = lambda sim: json.loads(http("GET", f"http://127.0.0.1:{sim.port}/stats")[1])["messages"]
        n = self.run_load("--gateway", node.base)
        k = self.run_load("--direct", direct.url, "--model", "sim-model", "--system", "be brief")
        self.assertGreater(n, 1)
        self.assertGreater(k, 1)
        self.assertEqual(messages(via_agent), n * (n + 1))
        self.assertEqual(messages(direct), k * (k + 1))


if __name__ == "__main__":
    unittest.main()

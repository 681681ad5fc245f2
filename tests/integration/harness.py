"""Starts real troupe processes on free loopback ports for integration tests.

Everything here is real: `troupe node` and `troupe sim-llm` processes, HTTP
over loopback, and the `websockets` library (not ours) as the client.
"""
import asyncio
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request

import websockets

TROUPE = os.environ.get("TROUPE_BIN", os.path.join(os.path.dirname(__file__), "../../build/nodes/troupe"))
# Which sanitizer the binary under test was built with (its build tree is
# build-asan or build-tsan): tests that measure load or memory loosen for it.
SANITIZER = "tsan" if "tsan" in TROUPE else "asan" if "asan" in TROUPE else ""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def http(method, url, body=None, headers=None, timeout=30, context=None):
    """`context`: an ssl.SSLContext for https:// URLs."""
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


class Process:
    def __init__(self, args, name, env=None):
        self.log = tempfile.NamedTemporaryFile(prefix=name + "-", suffix=".log", delete=False)
        # Each process runs in a fresh directory, so relative paths
        # (the default ./data/troupe.db) never collide between tests.
        self.workdir = tempfile.mkdtemp(prefix=name + "-")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, cwd=self.workdir,
                                     env=dict(os.environ, **(env or {})))
        self.name = name

    def output(self):
        with open(self.log.name) as f:
            return f.read()

    def alive(self):
        return self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=10):
        if self.alive():
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"{self.name} did not stop within {timeout}s:\n{self.output()}")
        return self.proc.returncode

    def kill(self):
        if self.alive():
            self.proc.kill()
            self.proc.wait()


class SimLlm(Process):
    def __init__(self, ttft_ms=20, tokens_per_s=2000, slots=16, model="sim-model", port=None):
        self.port = port or free_port()
        super().__init__([TROUPE, "sim-llm", "--port", str(self.port), "--ttft-ms", str(ttft_ms),
                          "--tokens-per-s", str(tokens_per_s), "--slots", str(slots), "--model", model],
                         "sim-llm")
        self.url = f"http://127.0.0.1:{self.port}/v1"
        wait_until(lambda: self._up(), what=f"sim-llm on {self.port}")

    def _up(self):
        if not self.alive():
            raise AssertionError("sim-llm exited:\n" + self.output())
        try:
            return http("GET", self.url + "/models", timeout=1)[0] == 200
        except OSError:
            return False


class RedisServer(Process):
    """A real redis-server on a free loopback port; AOF on, so a restart on
    the same directory keeps every acknowledged write."""

    def __init__(self, port=None, workdir=None):
        self.port = port or free_port()
        super().__init__(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                          "--save", "", "--appendonly", "yes", "--appendfsync", "always",
                          "--dir", ".", "--loglevel", "warning"], "redis")
        if workdir:  # restart on an earlier server's files
            self.proc.kill()
            self.proc.wait()
            self.workdir = workdir
            self.proc = subprocess.Popen(self.proc.args, stdout=self.log, stderr=subprocess.STDOUT, cwd=workdir)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        wait_until(self._up, what=f"redis on {self.port}")

    def _up(self):
        if not self.alive():
            raise AssertionError("redis-server exited:\n" + self.output())
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False


class TlsFiles:
    """A fresh self-signed certificate for 127.0.0.1 and localhost, made by
    the openssl command line tool."""

    def __init__(self):
        d = tempfile.mkdtemp(prefix="troupe-tls-")
        self.allow_plain = False
        self.cert, self.key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
        self.renew()

    def renew(self):
        """Writes a new key pair and certificate over the old files."""
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-keyout", self.key, "-out", self.cert, "-days", "2", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                       check=True, capture_output=True)

    def client_context(self):
        """Trusts this certificate only, and checks the host name."""
        return ssl.create_default_context(cafile=self.cert)


class Node(Process):
    """A `troupe node` with the given YAML (the gateway address is filled in)."""

    def __init__(self, yaml_body="", port=None, wait=True, auth_keys_file=None, state_path=None, env=None,
                 tls=None, gateway_options=""):
        """`state_path`: the SQLite file, to restart a node on the same state.
        `tls`: a TlsFiles; the node then serves https:// and wss://.
        `gateway_options`: more keys of `gateway:`, e.g. "io_threads: 2"."""
        self.port = port or free_port()
        if state_path and "state:" not in yaml_body:
            yaml_body = f"state: {{path: {state_path}}}\n" + yaml_body
        self.config = tempfile.NamedTemporaryFile("w", prefix="troupe-", suffix=".yaml", delete=False)
        extra = f", auth: {{keys_file: {auth_keys_file}}}" if auth_keys_file else ""
        if tls:
            extra += f", tls: {{cert: {tls.cert}, key: {tls.key}, allow_plain: {str(tls.allow_plain).lower()}}}"
        if gateway_options:
            extra += ", " + gateway_options
        self.config.write(f"node: {{id: test-node}}\ngateway: {{listen: 127.0.0.1:{self.port}{extra}}}\n" + yaml_body)
        self.config.close()
        super().__init__([TROUPE, "node", "--config", self.config.name], "node", env)
        scheme = "s" if tls else ""
        self.ssl = tls.client_context() if tls else None
        self.base = f"http{scheme}://127.0.0.1:{self.port}"
        self.ws_url = f"ws{scheme}://127.0.0.1:{self.port}/ws"
        if wait:
            wait_until(self._up, what=f"node on {self.port}")

    def _up(self):
        if not self.alive():
            raise AssertionError("node exited:\n" + self.output())
        try:
            return http("GET", self.base + "/health", timeout=1, context=self.ssl)[0] in (200, 503)
        except OSError:
            return False

    def get(self, path):
        return http("GET", self.base + path, context=self.ssl)

    def post(self, path, body):
        return http("POST", self.base + path, body, context=self.ssl)

    def metric(self, name):
        """An unlabelled metric's value on /metrics, or None if it is not there."""
        for line in self.get("/metrics")[1].splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return None


class ClusterNode(Process):
    """A `troupe node` in a cluster: its id, roles and extra YAML; the ZeroMQ
    endpoint, the shared Redis and (with the gateway role) the gateway
    address are filled in. Ready when it logs that it is."""

    def __init__(self, node_id, roles, redis, extra="", env=None, wait=True,
                 heartbeat="100ms", suspect_after="1s", state_redis=None, curve=None):
        """`state_redis`: the store's Redis when it is not the membership's.
        `curve`: (secret_key_file, allowed_keys_file) for cluster.curve."""
        self.id = node_id
        self.port = free_port()
        self.zmq_port = free_port()
        text = f"node: {{id: {node_id}, roles: [{', '.join(roles)}]}}\n"
        if "gateway" in roles:
            text += f"gateway: {{listen: 127.0.0.1:{self.port}}}\n"
        text += (f"cluster: {{bind: \"tcp://127.0.0.1:{self.zmq_port}\", redis: \"{redis.url}\", "
                 f"heartbeat: {heartbeat}, suspect_after: {suspect_after}")
        if curve:
            text += f", curve: {{secret_key_file: {curve[0]}, allowed_keys_file: {curve[1]}}}"
        text += "}\n"
        text += f"state: {{redis: \"{(state_redis or redis).url}\"}}\n" + extra
        self.config_text = text
        super().__init__([TROUPE, "node", "--config", write_config(text)], "node-" + node_id, env)
        self.base = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws"
        if wait:
            wait_until(self._up, timeout=20, what=f"node {node_id}")

    def _up(self):
        if not self.alive():
            raise AssertionError(f"node {self.id} exited:\n" + self.output())
        return " node ready " in self.output()

    def get(self, path):
        return http("GET", self.base + path)

    def post(self, path, body):
        return http("POST", self.base + path, body)

    def cluster(self):
        """GET /api/cluster, decoded."""
        status, body = self.get("/api/cluster")
        assert status == 200, body
        return json.loads(body)


def write_config(text):
    """Writes a YAML config to a temporary file and returns its path."""
    f = tempfile.NamedTemporaryFile("w", prefix="troupe-", suffix=".yaml", delete=False)
    f.write(text)
    f.close()
    return f.name


def node_exit(config_text, *flags):
    """Runs `troupe node` on a config that should stop it at start (or
    `--check` it); returns the finished process with its output."""
    return subprocess.run([TROUPE, "node", "--config", write_config(config_text), *flags],
                          capture_output=True, text=True, timeout=30)


def state_file():
    """A fresh SQLite path, to start (and restart) a node on its own state."""
    return os.path.join(tempfile.mkdtemp(prefix="troupe-state-"), "troupe.db")


def wait_job(node, job, timeout=30):
    """Polls GET /api/jobs/{job} until it is done or failed; tolerates a
    node that is briefly unreachable."""
    deadline = time.monotonic() + timeout
    j = None
    while time.monotonic() < deadline:
        try:
            j = json.loads(node.get(f"/api/jobs/{job}")[1])
            if j.get("state") in ("done", "failed"):
                return j
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"job {job} not finished: {j}")


def sim_backend_yaml(sims, slots=8, extra=""):
    """Accelerator entries pointing at sim-llm processes (or plain URLs)."""
    lines = ["inference:", "  accelerators:"]
    for i, s in enumerate(sims):
        url = s.url if hasattr(s, "url") else s
        lines.append(f"    - {{id: gpu{i}, kind: gpu, slots: {slots}, "
                     f"backend: {{type: openai, url: \"{url}\", model: sim-model, "
                     f"connect_timeout: 1s, first_token_timeout: 5s, idle_timeout: 5s, health_interval: 500ms}}}}")
    return "\n".join(lines) + "\n" + extra


class Client:
    """A WebSocket client collecting events by request id."""

    def __init__(self, ws):
        self.ws = ws

    open_clients = []

    @classmethod
    async def connect(cls, url, **kw):
        c = cls(await websockets.connect(url, max_size=None, **kw))
        cls.open_clients.append(c)
        return c

    async def send(self, **op):
        await self.ws.send(json.dumps(op))

    async def recv(self, timeout=10):
        return json.loads(await asyncio.wait_for(self.ws.recv(), timeout))

    async def until(self, pred, timeout=15):
        """Events up to and including the first that satisfies pred."""
        out = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no matching event in {timeout}s; got {out[-5:]}")
            try:
                ev = await self.recv(left)
            except asyncio.TimeoutError:
                raise AssertionError(f"no matching event in {timeout}s; got {out[-5:]}") from None
            out.append(ev)
            if pred(ev):
                return out

    async def turn(self, agent, text, id, timeout=15):
        """Sends one message and returns every event of that request up to done/error."""
        await self.send(op="send", agent=agent, text=text, id=id)
        evs = await self.until(lambda e: e.get("id") == id and e["ev"] in ("done", "error"), timeout)
        return [e for e in evs if e.get("id") == id]

    async def close(self):
        await self.ws.close()


def run(coro):
    """Runs a test coroutine, then closes every client it opened."""
    async def wrapped():
        try:
            return await coro
        finally:
            clients, Client.open_clients = Client.open_clients, []
            await asyncio.gather(*(c.ws.close() for c in clients), return_exceptions=True)
    return asyncio.run(wrapped())


class TroupeTestCase(unittest.TestCase):
    def setUp(self):
        self.procs = []

    def tearDown(self):
        # Errors and failures reach the result as they happen (the outcome's
        # success flag is reset for tearDown itself).
        result = self._outcome.result
        failed = any(t is self for t, _ in result.errors + result.failures)
        for p in reversed(self.procs):
            p.kill()
            if failed:
                # What each process said is the first thing needed to explain a failure seen only in CI.
                tail = "\n".join(p.output().splitlines()[-60:])
                print(f"\n--- last lines of {p.name} ({p.log.name}) ---\n{tail}", file=sys.stderr)

    def track(self, p):
        self.procs.append(p)
        return p

// Starts `troupe mcp --config FILE` as a child with the official MCP SDK's
// StdioClientTransport, uses it, closes it, and prints what it saw as one
// JSON object for tests/integration/test_mcp_server.py.
//
// usage: node sdk_stdio_client.mjs TROUPE_BIN CONFIG
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";

const [troupe, config] = process.argv.slice(2);
// The node's whole environment (the SDK passes only a few variables by
// default), so sanitizer options reach it; its stderr (the node's log) is
// drained: a pipe nobody reads stops the node once 64 KiB are waiting.
const transport = new StdioClientTransport({
  command: troupe,
  args: ["mcp", "--config", config],
  env: process.env,
  stderr: "pipe",
});
transport.stderr.on("data", () => {});
const client = new Client({ name: "troupe-stdio-test", version: "1.0.0" });
await client.connect(transport);
const out = {};
out.server = client.getServerVersion();
out.tools = (await client.listTools()).tools.map((t) => t.name);
out.ping = await client.ping();
out.call = await client.callTool({ name: "chat", arguments: { message: "what is 2+3?" } });
await client.close();
console.log(JSON.stringify(out));

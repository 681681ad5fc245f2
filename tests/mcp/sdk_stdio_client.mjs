// Starts `troupe mcp --config FILE` as a child with the official MCP SDK's
// StdioClientTransport, uses it, closes it, and prints what it saw as one
// JSON object for tests/integration/test_mcp_server.py.
//
// usage: node sdk_stdio_client.mjs TROUPE_BIN CONFIG
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";

const [troupe, config] = process.argv.slice(2);
const transport = new StdioClientTransport({ command: troupe, args: ["mcp", "--config", config], stderr: "pipe" });
const client = new Client({ name: "troupe-stdio-test", version: "1.0.0" });
await client.connect(transport);
const out = {};
out.server = client.getServerVersion();
out.tools = (await client.listTools()).tools.map((t) => t.name);
out.ping = await client.ping();
out.call = await client.callTool({ name: "chat", arguments: { message: "what is 2+3?" } });
await client.close();
console.log(JSON.stringify(out));

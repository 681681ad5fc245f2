// Drives a Troupe gateway's /mcp endpoint with the official MCP TypeScript
// SDK client (Streamable HTTP) and prints what it saw as one JSON object,
// for tests/integration/test_mcp_server.py to check.
//
// usage: node sdk_client.mjs http://127.0.0.1:PORT/mcp
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const url = new URL(process.argv[2]);
const out = {};
const transport = new StreamableHTTPClientTransport(url);
const client = new Client({ name: "troupe-test", version: "1.0.0" });
await client.connect(transport);
out.server = client.getServerVersion();
out.protocolVersion = transport.protocolVersion ?? null;
out.sessionId = transport.sessionId ?? null;
out.tools = (await client.listTools()).tools;
out.ping = await client.ping();
out.call = await client.callTool({ name: "chat", arguments: { message: "what is 6*7?", key: "mcp1" } });
out.again = await client.callTool({ name: "chat", arguments: { message: "what did I say first?", key: "mcp1" } });
// With a progress callback the SDK sends a progressToken; the answer then
// streams as progress notifications before the result.
let progress = 0;
let streamed = "";
out.withProgress = await client.callTool(
  { name: "chat", arguments: { message: "count to 12", key: "mcp2" } },
  undefined,
  { onprogress: (p) => { progress += 1; streamed += p.message ?? ""; } },
);
out.progressCount = progress;
out.streamedText = streamed;
try {
  await client.callTool({ name: "no_such_agent", arguments: { message: "hi" } });
  out.unknownTool = "accepted";
} catch (e) {
  out.unknownTool = { code: e.code, message: e.message };
}
try {
  await client.callTool({ name: "chat", arguments: { text: "wrong field" } });
  out.badArguments = "accepted";
} catch (e) {
  out.badArguments = { code: e.code, message: e.message };
}
await transport.terminateSession();
out.terminated = transport.sessionId === undefined;
await client.close();
console.log(JSON.stringify(out));

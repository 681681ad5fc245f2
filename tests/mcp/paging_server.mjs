// A stdio MCP server on the official SDK's low-level Server that lists its
// tools two per page (`nextCursor`), as large servers do: Troupe's client
// must follow the cursor to see them all.
//
// usage: node paging_server.mjs [marker]   (the marker only names the process)
import { Server } from "@modelcontextprotocol/sdk/server/index.js";
import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";
import { CallToolRequestSchema, ListToolsRequestSchema } from "@modelcontextprotocol/sdk/types.js";

const tools = ["alpha", "bravo", "charlie", "delta", "echo"].map((name) => ({
  name,
  description: `Says ${name}.`,
  inputSchema: { type: "object", properties: {} },
}));

const server = new Server({ name: "troupe-paging", version: "1.0.0" }, { capabilities: { tools: {} } });
server.setRequestHandler(ListToolsRequestSchema, async (request) => {
  const start = Number(request.params?.cursor ?? 0);
  const page = tools.slice(start, start + 2);
  const next = start + 2 < tools.length ? String(start + 2) : undefined;
  return next === undefined ? { tools: page } : { tools: page, nextCursor: next };
});
server.setRequestHandler(CallToolRequestSchema, async (request) => ({
  content: [{ type: "text", text: `${request.params.name} here` }],
}));
await server.connect(new StdioServerTransport());

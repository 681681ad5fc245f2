// A stdio MCP server built on the official TypeScript SDK (McpServer), for
// what server-everything cannot show: it reports on stderr (which Troupe
// logs) when a call is cancelled, and it can add a tool at run time, which
// makes the SDK send notifications/tools/list_changed.
//
// usage: node probe_server.mjs [marker]   (the marker only names the process)
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";
import { z } from "zod";

const server = new McpServer({ name: "troupe-probe", version: "1.0.0" });

server.registerTool(
  "sleep",
  { description: "Waits the given seconds, then says so.", inputSchema: { seconds: z.number() } },
  async ({ seconds }, extra) => {
    await new Promise((resolve) => {
      const abort = () => {
        clearTimeout(timer);
        console.error(`probe: call ${extra.requestId} aborted: ${extra.signal.reason}`);
        resolve();
      };
      const timer = setTimeout(resolve, seconds * 1000);
      // A cancel can arrive before this handler runs: the signal is then
      // aborted already and would never fire again.
      if (extra.signal.aborted) return abort();
      extra.signal.addEventListener("abort", abort);
    });
    return { content: [{ type: "text", text: `slept ${seconds} s` }] };
  },
);

server.registerTool(
  "add-tool",
  { description: "Adds a tool named by the argument.", inputSchema: { name: z.string() } },
  async ({ name }) => {
    server.registerTool(name, { description: "Added at run time." }, async () => ({
      content: [{ type: "text", text: `${name} ran` }],
    }));
    return { content: [{ type: "text", text: `added ${name}` }] };
  },
);

server.registerTool(
  "fail",
  { description: "Always fails." },
  async () => ({ isError: true, content: [{ type: "text", text: "it broke" }] }),
);

await server.connect(new StdioServerTransport());
console.error("probe: ready");

// A 2026-07-28-only MCP server (the TypeScript SDK v2, legacy requests rejected), serving
// Streamable HTTP on a free loopback port, for the gateway's tests. Prints "listening on PORT".
import http from 'node:http';
import { McpServer, createMcpHandler } from '@modelcontextprotocol/server';
import * as z from 'zod';

// A resource a client may subscribe to, changed by the `greet` tool.
const GREETING = 'note://modern-only/greeting';
let greeting = 'hello';

const handler = createMcpHandler(
  (ctx) => {
    const server = new McpServer(
      { name: 'modern-only', version: '2.4.0' },
      { instructions: 'A server of 2026-07-28 only.', capabilities: { resources: { subscribe: true, listChanged: true } } },
    );
    server.registerTool('echo', { description: 'Echoes its text', inputSchema: z.object({ text: z.string() }) },
      async ({ text }) => ({ content: [{ type: 'text', text }] }));
    server.registerTool('region', { description: 'The Mcp-Param-Region header it was sent', inputSchema: z.object({}) },
      async () => ({ content: [{ type: 'text', text: ctx.requestInfo?.headers.get('mcp-param-region') ?? 'none' }] }));
    server.registerTool('whoami', { description: 'The Authorization header it was sent', inputSchema: z.object({}) },
      async () => ({ content: [{ type: 'text', text: ctx.requestInfo?.headers.get('authorization') ?? 'none' }] }));
    server.registerTool('located', {
      description: 'The Mcp-Param-Region header it was sent for its region parameter',
      inputSchema: z.object({ region: z.string().meta({ 'x-mcp-header': 'Region' }) }),
    }, async () => ({ content: [{ type: 'text', text: ctx.requestInfo?.headers.get('mcp-param-region') ?? 'none' }] }));
    server.registerTool('greet', { description: 'Changes the greeting resource and says the tools changed', inputSchema: z.object({ greeting: z.string() }) },
      async (args) => {
        greeting = args.greeting;
        handler.notify.resourceUpdated(GREETING);
        handler.notify.toolsChanged();
        return { content: [{ type: 'text', text: 'greeted' }] };
      });
    server.registerResource('greeting', GREETING, { mimeType: 'text/plain' },
      async (uri) => ({ contents: [{ uri: uri.href, text: greeting }] }));
    return server;
  },
  { legacy: 'reject' },
);

const listener = http.createServer(async (req, res) => {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const body = chunks.length ? Buffer.concat(chunks) : undefined;
  const request = new Request(`http://${req.headers.host}${req.url}`, {
    method: req.method,
    headers: Object.entries(req.headers).flatMap(([k, v]) => (Array.isArray(v) ? v.map((x) => [k, x]) : [[k, v]])),
    body: req.method === 'GET' || req.method === 'HEAD' ? undefined : body,
  });
  const response = await handler.fetch(request);
  res.writeHead(response.status, Object.fromEntries(response.headers));
  if (response.body) {
    for await (const chunk of response.body) res.write(chunk);
  }
  res.end();
});
listener.listen(0, '127.0.0.1', () => console.log(`listening on ${listener.address().port}`));

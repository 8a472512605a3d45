// A 2026-07-28-only MCP server (the TypeScript SDK v2, legacy requests rejected), serving
// Streamable HTTP on a free loopback port, for the gateway's tests. Prints "listening on PORT".
import http from 'node:http';
import { McpServer, createMcpHandler } from '@modelcontextprotocol/server';
import * as z from 'zod';

const handler = createMcpHandler(
  (ctx) => {
    const server = new McpServer({ name: 'modern-only', version: '2.4.0' }, { instructions: 'A server of 2026-07-28 only.' });
    server.registerTool('echo', { description: 'Echoes its text', inputSchema: z.object({ text: z.string() }) },
      async ({ text }) => ({ content: [{ type: 'text', text }] }));
    server.registerTool('region', { description: 'The Mcp-Param-Region header it was sent', inputSchema: z.object({}) },
      async () => ({ content: [{ type: 'text', text: ctx.requestInfo?.headers.get('mcp-param-region') ?? 'none' }] }));
    server.registerTool('whoami', { description: 'The Authorization header it was sent', inputSchema: z.object({}) },
      async () => ({ content: [{ type: 'text', text: ctx.requestInfo?.headers.get('authorization') ?? 'none' }] }));
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

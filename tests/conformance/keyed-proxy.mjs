// A loopback proxy that adds an API key to every request: the conformance suite's CLI cannot
// send one. Streams both ways, so that event streams pass as they come.
// node keyed-proxy.mjs PORT TARGET_URL KEY
import http from "node:http";

const [port, target, key] = [Number(process.argv[2]), new URL(process.argv[3]), process.argv[4]];

http
  .createServer((req, res) => {
    const headers = { ...req.headers, host: target.host, authorization: `Bearer ${key}` };
    const query = req.url.includes("?") ? req.url.slice(req.url.indexOf("?")) : "";
    const options = { host: target.hostname, port: target.port, method: req.method, path: target.pathname + query, headers };
    const upstream = http.request(options, (answer) => {
      res.writeHead(answer.statusCode, answer.headers);
      answer.pipe(res);
    });
    upstream.on("error", () => {
      res.writeHead(502);
      res.end();
    });
    req.pipe(upstream);
    res.on("close", () => upstream.destroy());
  })
  .listen(port, "127.0.0.1");

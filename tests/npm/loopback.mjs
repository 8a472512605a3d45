// Preloaded (`node --import`) into the reference servers the tests start: a server that
// listens on a port without naming a host listens on 127.0.0.1 only, never on every interface.
import net from "node:net";

const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  const port = args[0];
  const portOnly = typeof port === "number" || (typeof port === "string" && /^\d+$/.test(port));
  if (portOnly && (args.length === 1 || typeof args[1] === "function")) {
    return listen.call(this, Number(port), "127.0.0.1", ...args.slice(1));
  }
  return listen.apply(this, args);
};

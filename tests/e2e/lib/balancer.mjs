// A TCP load balancer on loopback, as a Kubernetes Service would be: each new
// connection goes to the next upstream whose /readyz answers 200, so a
// draining edge gets no new clients. Connections already open stay where
// they are.

import http from 'node:http';
import net from 'node:net';
import { readyzStatus } from './process.mjs';

/**
 * `startBalancer([{ httpUrl, adminUrl }, ...])` → { url, stop() }. Readiness is
 * polled every `pollMs`.
 */
export async function startBalancer(upstreams, { pollMs = 50 } = {}) {
  const ready = upstreams.map(() => true);
  let next = 0;
  let polling = true;
  const poll = (async () => {
    while (polling) {
      await Promise.all(
        upstreams.map(async (u, i) => {
          ready[i] = (await readyzStatus(u.adminUrl)) === 200;
        }),
      );
      await new Promise((r) => setTimeout(r, pollMs));
    }
  })();
  const open = new Set();
  const server = net.createServer((client) => {
    const candidates = upstreams.map((_, i) => i).filter((i) => ready[i]);
    if (!candidates.length) {
      client.destroy();
      return;
    }
    const i = candidates[next++ % candidates.length];
    const { port } = new URL(upstreams[i].httpUrl);
    const upstream = net.connect(Number(port), '127.0.0.1');
    open.add(client);
    open.add(upstream);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      open.delete(client);
      open.delete(upstream);
    };
    client.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    async stop() {
      polling = false;
      await poll;
      for (const s of open) s.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/**
 * An HTTP load balancer on loopback without any session affinity: each
 * request of an Engine.IO session (and its WebSocket upgrade) goes to another
 * upstream than the session's previous request. It listens on one port per
 * upstream, its `urls`: a request that opens a session (no `sid`) goes to
 * that port's upstream, so a test still chooses the edge that holds a
 * session; every later request of the session moves on to the next edge.
 * Nothing is kept alive towards the upstreams, so no request can follow
 * another to the same edge. `startRequestBalancer(httpUrls)` →
 * { urls, requests, stop() }; `requests` counts the requests each upstream got.
 */
export async function startRequestBalancer(httpUrls) {
  const ports = httpUrls.map((u) => Number(new URL(u).port));
  const lastBySid = new Map();
  const requests = ports.map(() => 0);
  const pick = (url, home) => {
    const sid = new URL(url, 'http://x').searchParams.get('sid');
    let i = home;
    if (sid) i = ((lastBySid.has(sid) ? lastBySid.get(sid) : home) + 1) % ports.length;
    if (sid) lastBySid.set(sid, i);
    requests[i] += 1;
    return i;
  };
  const open = new Set();
  const track = (s) => {
    open.add(s);
    s.on('close', () => open.delete(s));
  };
  const serve = (home) => async (req, res) => {
    // The body is read first, so a request can go to the next upstream when
    // one is down (as a balancer's health checks would skip it).
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    const body = Buffer.concat(chunks);
    const send = (i, tries) => {
      const upstream = http.request(
        { host: '127.0.0.1', port: ports[i], method: req.method, path: req.url, headers: req.headers, agent: false },
        (up) => {
          res.writeHead(up.statusCode, up.headers);
          up.pipe(res);
        },
      );
      upstream.on('error', (err) => {
        if (err.code === 'ECONNREFUSED' && tries < ports.length) {
          send(pick(req.url, (i + 1) % ports.length), tries + 1);
          return;
        }
        if (!res.headersSent) res.writeHead(502);
        res.end();
      });
      res.on('close', () => upstream.destroy());
      upstream.end(body);
    };
    send(pick(req.url, home), 1);
  };
  const upgrade = (home) => (req, socket, head) => {
    const i = pick(req.url, home);
    const upstream = net.connect(ports[i], '127.0.0.1', () => {
      const lines = [`${req.method} ${req.url} HTTP/1.1`];
      for (let k = 0; k < req.rawHeaders.length; k += 2) lines.push(`${req.rawHeaders[k]}: ${req.rawHeaders[k + 1]}`);
      upstream.write(`${lines.join('\r\n')}\r\n\r\n`);
      if (head?.length) upstream.write(head);
      socket.pipe(upstream);
      upstream.pipe(socket);
    });
    track(upstream);
    const drop = () => {
      socket.destroy();
      upstream.destroy();
    };
    socket.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
  };
  const servers = await Promise.all(
    ports.map(async (_, home) => {
      const server = http.createServer(serve(home));
      server.on('connection', track);
      server.on('upgrade', upgrade(home));
      await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
      return server;
    }),
  );
  return {
    urls: servers.map((s) => `http://127.0.0.1:${s.address().port}`),
    requests,
    async stop() {
      for (const s of open) s.destroy();
      await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
    },
  };
}

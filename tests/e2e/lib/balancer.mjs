// A TCP load balancer on loopback, as a Kubernetes Service would be: each new
// connection goes to the next upstream whose /readyz answers 200, so a
// draining edge gets no new clients. Connections already open stay where
// they are.

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

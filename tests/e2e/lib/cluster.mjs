// A roomcast cluster on loopback: nats-server(s), edges (client-facing) and
// control planes (the gRPC API), every process given every NATS URL. And the
// target a suite runs against: one standalone process, or a cluster when
// ROOMCAST_E2E_TARGET=cluster.

import { startRequestBalancer } from './balancer.mjs';
import { startNats } from './nats.mjs';
import { startControl, startEdge, startStandalone } from './process.mjs';

/**
 * Flags that configure the gRPC API; in a cluster they go to the control
 * planes (an edge refuses them).
 */
const CONTROL_FLAGS = new Set([
  '--api-key',
  '--request-timeout-ms',
  '--max-selector-size',
  '--command-routing',
  '--edge-ttl-ms',
  '--delivery-resend-ms',
  '--delivery-max-resend-ms',
  '--delivery-lease-ttl-ms',
  '--delivery-inbox-max',
  '--delivery-max-ttl-ms',
]);
/**
 * Flags every process takes: cluster name, logging, presence, which edges
 * (socket records, connection limit, online announcements) and control planes
 * (grace period, lease expiry, GetPresence) both act on, and connection state
 * recovery (control planes keep the history, edges replay it).
 */
const SHARED_FLAGS = new Set([
  '--cluster',
  '--log',
  '--log-format',
  '--presence',
  '--presence-grace-ms',
  '--presence-lease-ttl-ms',
  '--presence-audience',
  '--presence-namespace',
  '--presence-replicas',
  '--max-connections-per-user',
  '--recovery-room',
  '--recovery-window-ms',
  '--recovery-history-max-age-ms',
  '--recovery-history-max-bytes',
  '--recovery-replicas',
]);
/** Flags without a value (`--presence` only as a switch: write `--presence=false` to turn it off). */
const SWITCHES = new Set(['--allow-anonymous', '--presence']);

/**
 * Splits standalone flags into those for edges and those for control planes:
 * API keys go to controls, cluster name, logging and presence settings to
 * both, the rest (the client-facing settings) to edges.
 */
export function splitStandaloneArgs(args) {
  const edge = [];
  const control = [];
  for (let i = 0; i < args.length; i++) {
    const flag = args[i];
    const name = flag.split('=')[0];
    const takesValue = name.startsWith('--') && !flag.includes('=') && !SWITCHES.has(name);
    const group = takesValue ? [flag, args[++i]] : [flag];
    if (CONTROL_FLAGS.has(name) || SHARED_FLAGS.has(name)) control.push(...group);
    if (!CONTROL_FLAGS.has(name)) edge.push(...group);
  }
  return { edge, control };
}

/** Runs every thunk; if any fails, stops those that started and rethrows. */
async function startAll(thunks) {
  const results = await Promise.allSettled(thunks.map((start) => start()));
  const started = results.filter((r) => r.status === 'fulfilled').map((r) => r.value);
  const failed = results.find((r) => r.status === 'rejected');
  if (failed) {
    await Promise.allSettled(started.map((p) => p.stop()));
    throw failed.reason;
  }
  return started;
}

/**
 * Starts nats-server (`natsNodes` nodes), `edges` edges and `controls` control
 * planes, and waits until every roomcast process answers `/readyz` with 200.
 * Edges are named `edge-1`, `edge-2`, …, controls `control-1`, …; `cluster` is
 * the roomcast cluster name (default: the binary's, "roomcast"). `controlArgs` go to
 * every control plane, `perControlArgs[i]` (optional) to control i only, after them
 * (e.g. one control plane with another `--command-routing`). Resolves to:
 *   httpUrls   every edge's client URL; httpUrl the first one
 *   grpcAddrs  every control's gRPC address; grpcAddr the first one
 *   edges      handles with httpUrl, adminUrl, nodeId, stop(), restart() (same ports)
 *   controls   handles with grpcAddr, adminUrl, nodeId, stop(), restart()
 *   nats       the nats-servers (see startNats): servers, urls, connection(name), …
 *   common     the flags every process got (NATS URLs, cluster name): to start
 *              another edge or control plane into the same cluster
 *   cluster    the roomcast cluster name
 *   stop()     stops the roomcast processes, then nats-server
 */
export async function startCluster({
  natsNodes = 1,
  edges = 3,
  controls = 1,
  edgeArgs = [],
  controlArgs = [],
  perControlArgs = [],
  cluster,
} = {}) {
  const nats = await startNats({ nodes: natsNodes });
  try {
    const common = [
      ...nats.urls.flatMap((url) => ['--nats-url', url]),
      ...(cluster ? ['--cluster', cluster] : []),
    ];
    const node = (start, kind, i, extra) => () => {
      const nodeId = `${kind}-${i + 1}`;
      return start([...common, '--node-id', nodeId, ...extra], `roomcast ${nodeId}`);
    };
    const range = (n) => Array.from({ length: n }, (_, i) => i);
    const edgeHandles = await startAll(range(edges).map((i) => node(startEdge, 'edge', i, edgeArgs)));
    let controlHandles;
    try {
      controlHandles = await startAll(range(controls).map((i) => node(startControl, 'control', i, [...controlArgs, ...(perControlArgs[i] ?? [])])));
    } catch (err) {
      await Promise.allSettled(edgeHandles.map((e) => e.stop()));
      throw err;
    }
    const roomcast = [...edgeHandles, ...controlHandles];
    return {
      kind: 'cluster',
      cluster: cluster ?? 'roomcast',
      common,
      nats,
      edges: edgeHandles,
      controls: controlHandles,
      httpUrls: edgeHandles.map((e) => e.httpUrl),
      httpUrl: edgeHandles[0]?.httpUrl,
      grpcAddrs: controlHandles.map((c) => c.grpcAddr),
      grpcAddr: controlHandles[0]?.grpcAddr,
      get alive() {
        return roomcast.every((p) => p.alive);
      },
      /** Each process's last log lines, under its node id. */
      stderrTail: () => roomcast.map((p) => `--- ${p.nodeId}\n${p.stderrTail()}`).join('\n'),
      async stop() {
        const results = await Promise.allSettled(roomcast.map((p) => p.stop()));
        await nats.stop();
        const failed = results.find((r) => r.status === 'rejected');
        if (failed) throw failed.reason;
        return results.map((r) => r.value);
      },
    };
  } catch (err) {
    await nats.stop();
    throw err;
  }
}

/** `standalone` unless ROOMCAST_E2E_TARGET=cluster. */
export function targetKind() {
  const kind = process.env.ROOMCAST_E2E_TARGET || 'standalone';
  if (kind !== 'standalone' && kind !== 'cluster') {
    throw new Error(`ROOMCAST_E2E_TARGET must be "standalone" or "cluster", not "${kind}"`);
  }
  return kind;
}

/**
 * What a target-agnostic suite runs against, started with standalone flags
 * `args`: one `roomcast standalone`, or (ROOMCAST_E2E_TARGET=cluster) a cluster of
 * one nats-server, `edges` edges (default three, given the client-facing flags)
 * and one control plane (given the API keys; presence settings go to both, see
 * splitStandaloneArgs). Both handles have:
 *   kind         "standalone" or "cluster"
 *   httpUrl      a client URL; httpUrls every client URL (give them to SocketPool)
 *   grpcAddr     the gRPC API
 *   stopEdges()  SIGTERM to every process clients connect to (the standalone
 *                process, or every edge); resolves with each one's {code, signal}
 *   restart()    restarts those processes on the same ports
 *   stop()       stops everything
 *   alive, stderrTail()
 */
export async function startTarget(args = [], { edges = 3 } = {}) {
  if (targetKind() === 'standalone') {
    const server = await startStandalone(args);
    return Object.assign(server, {
      kind: 'standalone',
      httpUrls: [server.httpUrl],
      stopEdges: async () => [await server.stop()],
    });
  }
  const { edge, control } = splitStandaloneArgs(args);
  const cluster = await startCluster({ natsNodes: 1, edges, controls: 1, edgeArgs: edge, controlArgs: control });
  const target = Object.assign(cluster, {
    stopEdges: () => Promise.all(cluster.edges.map((e) => e.stop())),
    restart: () => Promise.all(cluster.edges.map((e) => e.restart())),
  });
  if (balancerKind() !== 'request') return target;
  // Clients reach the edges only through a balancer without affinity: the
  // i-th URL opens sessions on the i-th edge, and each later request of a
  // session goes to another edge than its last one.
  const balancer = await startRequestBalancer(cluster.httpUrls);
  const stopCluster = cluster.stop.bind(cluster);
  for (const [i, edge] of cluster.edges.entries()) edge.balancedUrl = balancer.urls[i];
  return Object.assign(target, {
    balancer,
    httpUrls: balancer.urls,
    httpUrl: balancer.urls[0],
    async stop() {
      await balancer.stop();
      return stopCluster();
    },
  });
}

/**
 * How clients reach a cluster target: `direct` (each client is given an
 * edge's URL) unless ROOMCAST_E2E_BALANCER=request (one URL, a balancer that
 * sends each HTTP request of a session to another edge than its last one).
 */
export function balancerKind() {
  const kind = process.env.ROOMCAST_E2E_BALANCER || 'direct';
  if (kind !== 'direct' && kind !== 'request') {
    throw new Error(`ROOMCAST_E2E_BALANCER must be "direct" or "request", not "${kind}"`);
  }
  return kind;
}

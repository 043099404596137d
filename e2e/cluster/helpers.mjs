// Small helpers shared by the cluster tests (cluster/*.test.mjs).
import { waitFor } from '../lib/client.mjs';

/** Waits like `waitFor` and resolves to the time (Date.now()) the matching event was received. */
export async function arrival(socket, event, predicate, timeoutMs) {
  const payload = await waitFor(socket, event, predicate, timeoutMs);
  const entry = socket.e2e.log.find((e) => e.event === event && e.payload === payload);
  return entry.at;
}

/** The p-th percentile (0..100) of `values` (nearest rank). */
export function percentile(values, p) {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1];
}

/** The last `max` characters of every node's output, for failure reports. */
export function logTail(cluster, max = 6000) {
  return cluster.nodes
    .map((n) => {
      const out = n.output();
      return `----- node ${n.nodeId} (${n.alive() ? 'running' : `exited ${JSON.stringify(n.exitStatus())}`}) -----\n${out.length > max ? `…${out.slice(-max)}` : out}`;
    })
    .join('\n');
}

/** Runs `fn`; when it throws, prints the tail of every node's log first, then rethrows. */
export async function withLogs(cluster, fn) {
  try {
    return await fn();
  } catch (err) {
    if (cluster) console.error(`\n=== node logs at the failure ===\n${logTail(cluster)}\n=== end of node logs ===\n`);
    throw err;
  }
}

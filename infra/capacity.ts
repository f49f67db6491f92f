/**
 * How many WebSockets one Cloud Run instance can hold, from the figures the
 * benches measured (docs/benchmarks.md; the capacity model is written out in
 * docs/operations.md#capacity). Cloud Run counts every open WebSocket as one
 * concurrent request, and takes at most 1000 per instance
 * (https://cloud.google.com/run/docs/about-concurrency), so `concurrency` is
 * the number of sockets an instance holds and `maxInstances × concurrency`
 * the number of users a stack serves at once.
 */

/** Cloud Run's per-instance maximum of maxInstanceRequestConcurrency. */
export const CLOUD_RUN_MAX_CONCURRENCY = 1000;

/** docs/benchmarks.md, run of 2026-11-30; bench 4 (10,000 idle authenticated connections), gateway row. */
export const MEASURED = {
  /** RSS before any connection, MiB. */
  baseRssMiB: 95.4,
  /** RSS per open authenticated socket, KiB. */
  rssKiBPerSocket: 7.94,
  /** CPU per heartbeat round per socket, µs (624 ms over 10,000 sockets). */
  heartbeatCpuUsPerSocket: 62.4,
  /** Bench 3, 1000 sequential full connects (ticket + upgrade + connection_established): server CPU per connect, ms. */
  connectCpuMs: 1.96,
  /** Bench 5, max throughput: gateway CPU per delivered event, µs. */
  deliveryCpuUs: 195,
} as const;

/**
 * Half the memory limit is for sockets, the rest for the base process, send
 * buffers of slow consumers and GC headroom: a socket is ~8 KiB idle, but a
 * slow one may hold up to MAX_SEND_BUFFER_BYTES (1 MiB) before 4429.
 */
export const SOCKET_MEMORY_SHARE = 0.5;

/** Cloud Run memory limit (`512Mi`, `2Gi`) in MiB. */
export function memoryMiB(limit: string): number {
  const m = /^(\d+)(Mi|Gi)$/.exec(limit);
  if (!m) throw new Error(`not a Cloud Run memory limit: ${limit}`);
  return Number(m[1]) * (m[2] === "Gi" ? 1024 : 1);
}

/** The sockets an instance with this memory limit holds by the measured figures, capped at Cloud Run's 1000. */
export function socketsPerInstance(memoryLimit: string): number {
  const budgetKiB = (memoryMiB(memoryLimit) * SOCKET_MEMORY_SHARE - MEASURED.baseRssMiB) * 1024;
  return Math.max(0, Math.min(CLOUD_RUN_MAX_CONCURRENCY, Math.floor(budgetKiB / MEASURED.rssKiBPerSocket)));
}

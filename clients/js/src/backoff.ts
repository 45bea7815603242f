// Reconnect delays: exponential backoff with full jitter ("Exponential Backoff and Jitter",
// AWS Architecture Blog, 2015): attempt n waits a uniformly random time in
// [0, min(cap, base · 2^n)]. Full jitter spreads the clients of a restarted server evenly over the
// window instead of letting them come back in synchronised waves.

/** Backoff settings. */
export interface BackoffOptions {
  /** The window of the first attempt, in ms. Defaults to 1000. A server's reconnection hint
   *  (SSE `retry:`, `Retry-After`, a `retry` field in a reconnect notice) replaces it. */
  base?: number;
  /** The largest window, in ms. Defaults to 30000. */
  max?: number;
}

export const DEFAULT_BASE = 1000;
export const DEFAULT_MAX = 30000;

/**
 * The delay before reconnect attempt `attempt` (0 for the first), in ms: uniformly random in
 * `[0, min(max, base · 2^attempt)]`. `hint` (the server's reconnection time, ms) replaces `base`.
 */
export function backoffDelay(
  attempt: number,
  options: BackoffOptions = {},
  hint?: number,
  random: () => number = Math.random,
): number {
  const base = hint !== undefined && hint >= 0 ? hint : (options.base ?? DEFAULT_BASE);
  const max = Math.max(options.max ?? DEFAULT_MAX, 0);
  const window = Math.min(max, base * 2 ** Math.min(Math.max(attempt, 0), 30));
  return Math.floor(random() * window);
}

/** Parses an HTTP `Retry-After` header (seconds or an HTTP date) into ms, if present. */
export function retryAfterMs(value: string | null, now: number = Date.now()): number | undefined {
  if (!value) return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
  const t = Date.parse(value);
  return Number.isNaN(t) ? undefined : Math.max(0, t - now);
}

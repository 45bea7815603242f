/** Backoff settings. */
export interface BackoffOptions {
    /** The window of the first attempt, in ms. Defaults to 1000. A server's reconnection hint
     *  (SSE `retry:`, `Retry-After`, a `retry` field in a reconnect notice) replaces it. */
    base?: number;
    /** The largest window, in ms. Defaults to 30000. */
    max?: number;
}
export declare const DEFAULT_BASE = 1000;
export declare const DEFAULT_MAX = 30000;
/**
 * The delay before reconnect attempt `attempt` (0 for the first), in ms: uniformly random in
 * `[0, min(max, base · 2^attempt)]`. `hint` (the server's reconnection time, ms) replaces `base`.
 */
export declare function backoffDelay(attempt: number, options?: BackoffOptions, hint?: number, random?: () => number): number;
/** Parses an HTTP `Retry-After` header (seconds or an HTTP date) into ms, if present. */
export declare function retryAfterMs(value: string | null, now?: number): number | undefined;

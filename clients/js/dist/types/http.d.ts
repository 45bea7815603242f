import type { Envelope, PresenceEvent } from './types.js';
/** An error answered by the server (`{"error":{"code","message"}}`) or met on the way. */
export declare class CometError extends Error {
    /** The server's stable code (`bad_channel`, `too_large`…), or `network`, `disconnected`. */
    readonly code: string;
    /** The HTTP status, when there was one. */
    readonly status: number | undefined;
    /** The server's reconnection hint (`Retry-After`), ms. */
    readonly retry: number | undefined;
    constructor(code: string, message: string, status?: number, retry?: number);
}
/** `base + /sub/{channels}?params` (+ `token`), channels and values URL-encoded. */
export declare function subURL(base: string, channels: readonly string[], params: Record<string, string | number | undefined>, token?: string): string;
/** `url` with its `token` parameter hidden, for logs. */
export declare function redact(url: string): string;
/** `?a=1&b=2` from the defined entries; empty when none. */
export declare function query(params: Record<string, string | number | undefined>): string;
/** Turns a non-2xx response into a [`CometError`]. */
export declare function errorOf(res: Response): Promise<CometError>;
/** A poll or long-poll answer. */
export interface PollAnswer {
    messages: Envelope[];
    cursor: string;
    gaps: string[];
    /** Joins and leaves seen while a long poll was held (`{"type":"join"|"leave",…}`). */
    presence: (PresenceEvent & {
        type: string;
    })[];
    /** The poller's id in presence channels, to send back as `?client=`. */
    client?: string;
    /** The server API disconnected this user (docs/protocol.md "Server API"). */
    disconnect?: {
        reconnect?: boolean;
    };
    /** Channels the server API unsubscribed this user from. */
    unsubscribed?: string[];
    /** The raw body, for the frame log. */
    raw: string;
}
/** One poll (`timeout` undefined) or long poll. Throws [`CometError`] on failure. */
export declare function pollOnce(f: typeof fetch, url: string, token: string | undefined, signal?: AbortSignal): Promise<PollAnswer>;

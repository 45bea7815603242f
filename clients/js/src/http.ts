// HTTP helpers shared by the client and the fetch-based transports.

import { retryAfterMs } from './backoff.js';
import type { Envelope, PresenceEvent } from './types.js';

/** An error answered by the server (`{"error":{"code","message"}}`) or met on the way. */
export class CometError extends Error {
  /** The server's stable code (`bad_channel`, `too_large`…), or `network`, `disconnected`. */
  readonly code: string;
  /** The HTTP status, when there was one. */
  readonly status: number | undefined;
  /** The server's reconnection hint (`Retry-After`), ms. */
  readonly retry: number | undefined;

  constructor(code: string, message: string, status?: number, retry?: number) {
    super(message);
    this.name = 'CometError';
    this.code = code;
    this.status = status;
    this.retry = retry;
  }
}

/** `base + /sub/{channels}?params` (+ `token`), channels and values URL-encoded. */
export function subURL(
  base: string,
  channels: readonly string[],
  params: Record<string, string | number | undefined>,
  token?: string,
): string {
  const path = channels.map(encodeURIComponent).join(',');
  return base + '/sub/' + path + query({ ...params, token });
}

/** `url` with its `token` parameter hidden, for logs. */
export function redact(url: string): string {
  return url.replace(/([?&]token=)[^&]*/, '$1…');
}

/** `?a=1&b=2` from the defined entries; empty when none. */
export function query(params: Record<string, string | number | undefined>): string {
  const parts: string[] = [];
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== '') parts.push(k + '=' + encodeURIComponent(String(v)));
  }
  return parts.length ? '?' + parts.join('&') : '';
}

/** Turns a non-2xx response into a [`CometError`]. */
export async function errorOf(res: Response): Promise<CometError> {
  let code = 'http_' + res.status;
  let message = `HTTP ${res.status}`;
  try {
    const body = (await res.json()) as { error?: { code?: string; message?: string } };
    if (body.error?.code) code = body.error.code;
    if (body.error?.message) message = body.error.message;
  } catch {
    // not JSON (a proxy's page): keep the status
  }
  return new CometError(code, message, res.status, retryAfterMs(res.headers.get('retry-after')));
}

/** A poll or long-poll answer. */
export interface PollAnswer {
  messages: Envelope[];
  cursor: string;
  gaps: string[];
  /** Joins and leaves seen while a long poll was held (`{"type":"join"|"leave",…}`). */
  presence: (PresenceEvent & { type: string })[];
  /** The poller's id in presence channels, to send back as `?client=`. */
  client?: string;
  /** The server API disconnected this user (docs/protocol.md "Server API"). */
  disconnect?: { reconnect?: boolean };
  /** Channels the server API unsubscribed this user from. */
  unsubscribed?: string[];
  /** The raw body, for the frame log. */
  raw: string;
}

/** One poll (`timeout` undefined) or long poll. Throws [`CometError`] on failure. */
export async function pollOnce(
  f: typeof fetch,
  url: string,
  token: string | undefined,
  signal?: AbortSignal,
): Promise<PollAnswer> {
  let res: Response;
  try {
    res = await f(url, {
      headers: token ? { authorization: 'Bearer ' + token } : {},
      cache: 'no-store',
      signal: signal ?? null,
    });
  } catch (e) {
    if (signal?.aborted) throw new CometError('aborted', 'aborted');
    throw new CometError('network', 'network error: ' + String((e as Error)?.message ?? e));
  }
  if (!res.ok) throw await errorOf(res);
  const raw = await res.text();
  let body: {
    messages?: Envelope[];
    cursor?: string;
    gap?: boolean;
    gaps?: string[];
    presence?: (PresenceEvent & { type: string })[];
    client?: string;
    disconnect?: { reconnect?: boolean };
    unsubscribed?: string[];
  };
  try {
    body = JSON.parse(raw);
  } catch {
    throw new CometError('bad_answer', 'the poll answer is not JSON', res.status);
  }
  if (!Array.isArray(body.messages) || typeof body.cursor !== 'string') {
    throw new CometError('bad_answer', 'the poll answer has no messages or cursor', res.status);
  }
  return {
    messages: body.messages,
    cursor: body.cursor,
    gaps: body.gap ? (body.gaps ?? []) : [],
    presence: Array.isArray(body.presence) ? body.presence : [],
    ...(typeof body.client === 'string' ? { client: body.client } : {}),
    ...(body.disconnect && typeof body.disconnect === 'object' ? { disconnect: body.disconnect } : {}),
    ...(Array.isArray(body.unsubscribed) ? { unsubscribed: body.unsubscribed.filter((c) => typeof c === 'string') } : {}),
    raw,
  };
}

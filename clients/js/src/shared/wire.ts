// What the tabs of one origin say to the holder of their shared connection (the hub), and back
// (README "Sharing one connection between tabs"). Messages are plain objects, copied by the
// structured clone of `MessagePort.postMessage` (SharedWorker) or `BroadcastChannel.postMessage`
// (Web Locks election); the sync is declarative, so a tab can send it again at any time — to a
// new hub after a takeover — and the hub works out what changed.

import type { BackoffOptions } from '../backoff.js';
import { CometError } from '../http.js';
import type { Envelope, Frame, PresenceEvent, PublishResult, StateChange, TransportName } from '../types.js';

/** The options a hub builds its connection from; every tab sharing it has the same (see [`shareKey`]). */
export interface SharedOptions {
  url: string;
  token?: string;
  transports: TransportName[];
  pollInterval?: number;
  longpollTimeout?: number;
  heartbeatTimeout?: number;
  connectTimeout?: number;
  backoff?: BackoffOptions;
}

/** One channel a tab wants, and where it stands on it (its last delivered cursor or watermark). */
export interface WantedChannel {
  channel: string;
  /** The tab's cursor; the hub resumes from it when it does not carry the channel yet. */
  since?: string;
}

/** An error, as it can cross a `postMessage` (a class instance would lose its fields). */
export interface WireError {
  code: string;
  message: string;
  status?: number;
  retry?: number;
}

/** Tab → hub. */
export type ToHub =
  /** Everything the tab wants now: the hub subscribes what is new, unsubscribes what is gone. */
  | { t: 'sync'; tab: string; channels: WantedChannel[]; events: string[]; frames: boolean }
  /** A publish over the shared connection; answered by a `reply` with the same `ref`. */
  | { t: 'call'; tab: string; ref: number; channel: string; data: string; event?: string }
  /** The tab is going away (page hidden, client closed): release its subscriptions. */
  | { t: 'bye'; tab: string };

/** Hub → one tab. */
export type ToTab =
  | { t: 'msg'; env: Envelope }
  /** The server said history no longer reached the hub's cursor on `channel`. */
  | { t: 'gap'; channel: string }
  | { t: 'presence'; joined: boolean; event: PresenceEvent }
  /** The server ended `channel` for this connection (the server API). */
  | { t: 'unsubscribed'; channel: string }
  | { t: 'state'; state: StateChange }
  | { t: 'frame'; frame: Frame }
  | { t: 'error'; error: WireError }
  /** The server disconnected the connection's user for good (`reconnect: false`). */
  | { t: 'disconnected' }
  | { t: 'reply'; ref: number; result?: PublishResult; error?: WireError };

/** Tab ↔ SharedWorker port: `open` (first, with the options), then [`ToHub`]; back `ready`, then [`ToTab`]. */
export type ToWorker = { t: 'open'; options: SharedOptions } | ToHub;

/** On the BroadcastChannel of the Web Locks mode: the election's announcements, [`ToHub`] from
 *  every tab, and [`ToTab`] addressed to one tab. */
export type Broadcast =
  | { t: 'hello'; tab: string }
  | { t: 'leader'; id: string }
  | { t: 'resign'; id: string }
  | { t: 'ev'; to: string; ev: ToTab }
  | ToHub;

export function toWire(e: unknown): WireError {
  const err = e as Partial<CometError> & { message?: unknown };
  return {
    code: typeof err?.code === 'string' ? err.code : 'error',
    message: String(err?.message ?? e),
    ...(typeof err?.status === 'number' ? { status: err.status } : {}),
    ...(typeof err?.retry === 'number' ? { retry: err.retry } : {}),
  };
}

export function fromWire(w: WireError): CometError {
  return new CometError(w.code, w.message, w.status, w.retry);
}

/** FNV-1a 64 of `text`, hex (a name, not a secret: the token is hashed so it is not spelled out
 *  in lock and channel names that any script of the origin can list). */
export function fnv1a64(text: string): string {
  let h = 0xcbf29ce484222325n;
  for (const b of new TextEncoder().encode(text)) h = ((h ^ BigInt(b)) * 0x100000001b3n) & 0xffffffffffffffffn;
  return h.toString(16).padStart(16, '0');
}

/**
 * What tabs must agree on to share a connection: the client's version (the messages above), the
 * server URL, the transports in order, the token and the connection's tuning. Tabs whose options
 * differ in any of these get different keys, hence different workers, locks and channels.
 */
export function shareKey(o: SharedOptions, version: string): string {
  return fnv1a64(
    JSON.stringify([
      version,
      o.url,
      o.transports,
      o.token ?? null,
      o.pollInterval ?? null,
      o.longpollTimeout ?? null,
      o.heartbeatTimeout ?? null,
      o.connectTimeout ?? null,
      o.backoff ?? null,
    ]),
  );
}

// comet.js: the browser client of Comet. One API over six transports (WebSocket, Server-Sent
// Events, HTTP streaming, hidden-iframe streaming, long polling, short polling) with fallback,
// resume by cursor and de-duplication. The wire protocol is docs/protocol.md.

export { Client, Subscription } from './client.js';
export { CometError } from './http.js';
export { backoffDelay } from './backoff.js';
export { ALL_TRANSPORTS } from './types.js';
export type {
  ClientEvents,
  ClientOptions,
  ConnectionState,
  Frame,
  GapInfo,
  Message,
  PresenceEntry,
  PresenceEvent,
  PublishResult,
  StateChange,
  SubscribeOptions,
  TransportName,
} from './types.js';
export type { BackoffOptions } from './backoff.js';

/** The version of this client. */
export const VERSION = '0.1.0';

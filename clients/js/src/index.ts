// comet.js: the browser client of Comet. One API over six transports (WebSocket, Server-Sent
// Events, HTTP streaming, hidden-iframe streaming, long polling, short polling) with fallback,
// resume by cursor and de-duplication. The wire protocol is docs/protocol.md.

import { Client } from './client.js';
import { serveSharedWorker } from './shared/worker.js';

export { Client, Subscription, VERSION } from './client.js';
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

// Loaded as a SharedWorker's script (`shared: true`), the bundle serves the tabs' shared connection.
serveSharedWorker((o) => new Client(o.url, { ...o }));

// Public types of comet.js, and the small contract between the client and its transports.

import type { BackoffOptions } from './backoff.js';

/** The six transports, by the names used in `transports: [...]`. */
export type TransportName = 'websocket' | 'sse' | 'stream' | 'iframe' | 'longpoll' | 'poll';

/** Every transport, in the default order of preference. */
export const ALL_TRANSPORTS: readonly TransportName[] = ['websocket', 'sse', 'stream', 'iframe', 'longpoll', 'poll'];

/** A message as the application sees it: the envelope of docs/protocol.md. */
export interface Message {
  /** The channel it was published to. */
  channel: string;
  /** Its cursor, `<epoch>-<offset>`. */
  id: string;
  /** Its event name; `"message"` when the publisher gave none. */
  event: string;
  /** The published text, exactly as sent. */
  data: string;
  /** When it was published, ms since the Unix epoch. */
  time: number;
}

/** What `onGap` receives: history no longer reached this client's cursor for `channel`. */
export interface GapInfo {
  channel: string;
  /** The last cursor delivered (or the subscription's start) before the gap, if any. */
  after?: string;
  /** `"history"` (the server said so), `"epoch"` (a message of a new epoch came without a
   *  notice), `"bad_cursor"` (the server rejected the cursor; the client restarts live), or
   *  `"missed"` (messages were skipped in transit and could not be fetched again). */
  reason: 'history' | 'epoch' | 'bad_cursor' | 'missed';
}

/** One client in a channel's presence (docs/protocol.md "Presence"). */
export interface PresenceEntry {
  /** The connection's id, unique in the cluster. */
  client: string;
  /** The token's `sub`; `""` for anonymous clients. */
  user: string;
  /** The token's `comet.info` object, if it has one. */
  info?: Record<string, unknown>;
  /** `sse`, `stream`, `iframe` or `ws`. */
  transport: string;
  /** When it joined, ms since the Unix epoch. */
  since: number;
}

/** What `onJoin` and `onLeave` receive (namespaces with `join_leave = true`). */
export interface PresenceEvent {
  channel: string;
  client: string;
  user: string;
  info?: Record<string, unknown>;
}

/** Options of [`Client.subscribe`]. */
export interface SubscribeOptions {
  /** Where to start: absent = from now on; `"earliest"` = all history the server holds; a cursor
   *  = what follows it. Only the first subscription to a channel decides. */
  since?: string;
  /** Called once per message, in order. */
  onMessage?: (msg: Message) => void;
  /** Called when messages were lost (history no longer reached the cursor). */
  onGap?: (info: GapInfo) => void;
  /** Called when a client joins the channel (a namespace with `join_leave = true`). Not history:
   *  joins made while this client was disconnected are not replayed; ask `client.presence()`. */
  onJoin?: (event: PresenceEvent) => void;
  /** Called when a client leaves the channel (as `onJoin`). */
  onLeave?: (event: PresenceEvent) => void;
  /** Called when the server ends this subscription (the server API's
   *  `POST /admin/users/{user}/unsubscribe/{channel}`, or a refreshed token that no longer grants
   *  the channel); the subscription is then over, as after `unsubscribe()`. */
  onUnsubscribe?: (info: { channel: string; reason: string }) => void;
  /** Event names used on this channel. Only needed by the `sse` transport, whose `EventSource`
   *  delivers a named event only to a listener of that name (see README, "Named events"). */
  events?: string[];
}

/** The connection states. */
export type ConnectionState = 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed';

/** What `client.on("state", fn)` receives. */
export interface StateChange {
  state: ConnectionState;
  /** The transport in use or being tried; `null` when none. */
  transport: TransportName | null;
  /** Why (a transport that failed to open, a dropped connection, `offline`…). */
  reason?: string;
  /** For `reconnecting`: the wait before the next attempt, ms. */
  delay?: number;
  /** For `reconnecting`: how many attempts failed in a row. */
  attempt?: number;
}

/** What `client.on("frame", fn)` receives: one unit of raw traffic (for inspectors and logs). */
export interface Frame {
  transport: TransportName | 'http';
  direction: 'in' | 'out';
  /** The raw text (an SSE event, an NDJSON line, a WebSocket frame, a poll body, a URL…). */
  text: string;
  time: number;
}

/** The answer to a publish. */
export interface PublishResult {
  channel: string;
  /** The cursor of the published message. */
  id: string;
}

/** Options of the [`Client`]. */
export interface ClientOptions {
  /** A token sent as `Authorization: Bearer` where headers can be set, else as `?token=`. */
  token?: string;
  /** The transports to try, in order of preference. Defaults to all six. */
  transports?: TransportName[];
  /** The `poll` transport's interval, ms. Defaults to 2000. */
  pollInterval?: number;
  /** The `longpoll` transport's hold time, seconds. Defaults to 25. */
  longpollTimeout?: number;
  /** How long a streaming connection (WebSocket, stream, iframe) may stay silent before it is
   *  considered dead and replaced, ms. The server sends a heartbeat every 15 s (`heartbeat_secs`),
   *  and the WebSocket transport pings every half of this. Defaults to 45000. */
  heartbeatTimeout?: number;
  /** How long a transport may take to open before the next one is tried, ms. Defaults to 10000. */
  connectTimeout?: number;
  /** Reconnect backoff. */
  backoff?: BackoffOptions;
  /** Event names to listen for on the `sse` transport (see [`SubscribeOptions.events`]). */
  events?: string[];
  /** The `fetch` to use (tests, or to add headers). Defaults to the global one. A client with its
   *  own `fetch` is not shared (a function cannot be handed to another tab or a worker). */
  fetch?: typeof fetch;
  /** Share one connection among the tabs of this origin whose clients have the same `url`,
   *  `transports`, `token` and tuning options: a SharedWorker where the browser has one, else the
   *  tab that wins a Web Lock, else (neither) an unshared connection. See README, "Sharing one
   *  connection between tabs". Defaults to false. */
  shared?: boolean;
  /** The SharedWorker script: a same-origin URL of comet.js (it serves as its own worker). Defaults
   *  to the URL this bundle was loaded from; `.mjs` URLs start a module worker. */
  sharedWorkerUrl?: string;
}

/** The events of a [`Client`]. */
export interface ClientEvents {
  state: StateChange;
  frame: Frame;
  /** Errors that do not end anything (e.g. a WebSocket `error` frame without a `ref`). */
  error: Error;
}

// ---------------------------------------------------------------- client ↔ transport contract

/** A server envelope (what every transport carries). */
export interface Envelope {
  channel: string;
  id: string;
  event?: string;
  data: string;
  time?: number;
}

/** How a transport reports to the client. Calls from a stopped transport are ignored. */
export interface Sink {
  /** The connection is open (the first response started, the socket opened…). */
  opened(): void;
  message(env: Envelope): void;
  gap(channel: string): void;
  /** A join (`joined`) or leave in a channel's presence. */
  presence(joined: boolean, event: PresenceEvent): void;
  /** A resume position from the server (a poll's `cursor`, a reconnect notice). */
  position(text: string): void;
  frame(direction: 'in' | 'out', text: string): void;
  /** An error that ends nothing (a WebSocket `error` frame without a `ref`). */
  error(e: Error): void;
  /** The server disconnected this client's user (docs/protocol.md "Server API"); with
   *  `reconnect: false` the client stops for good. */
  disconnected(reconnect: boolean): void;
  /** The server stopped delivering `channel` to this connection. */
  unsubscribed(channel: string): void;
  /** The connection is over. `retry`: the server's reconnection hint, ms. `badCursor`: the server
   *  rejected the position (the client then restarts its channels at the live edge). */
  ended(reason: string, info?: { retry?: number; badCursor?: boolean }): void;
}

/** What a transport gets to open one connection. */
export interface TransportContext {
  /** The server's base URL, without a trailing slash. */
  base: string;
  token: string | undefined;
  channels: readonly string[];
  /** The current resume position (`chan=cursor,…`) of `channels`. */
  position(): string;
  /** Event names to listen for (the `sse` transport). */
  events: ReadonlySet<string>;
  options: Required<Pick<ClientOptions, 'pollInterval' | 'longpollTimeout' | 'heartbeatTimeout'>>;
  fetch: typeof fetch;
  sink: Sink;
}

/** One connection over one transport. Created per attempt; `stop` ends it for good. */
export interface Transport {
  readonly name: TransportName;
  start(): void;
  stop(): void;
  /** Changes the channel set without reconnecting, where the transport can (WebSocket). */
  update?(added: readonly string[], removed: readonly string[]): boolean;
  /** Publishes over this connection, where it can (WebSocket). */
  publish?(channel: string, data: string, event?: string): Promise<PublishResult>;
}

/** Builds a transport, or says why it cannot run here (the client then tries the next). */
export interface TransportFactory {
  unavailable(base: string): string | null;
  create(ctx: TransportContext): Transport;
}

// The client: one connection shared by every subscription, over the first transport (in the
// application's order of preference) that opens; resume by cursor on every reconnect;
// de-duplication by cursor; reconnects with full-jitter backoff.

import { backoffDelay } from './backoff.js';
import { CursorBook, isChannel, isEventName, parseCursor, parsePosition } from './cursor.js';
import { Emitter, safeCall } from './emitter.js';
import { CometError, errorOf, pollOnce, query, redact, subURL } from './http.js';
import { iframe } from './transports/iframe.js';
import { longpoll, poll } from './transports/polling.js';
import { sse } from './transports/sse.js';
import { stream } from './transports/stream.js';
import { websocket } from './transports/websocket.js';
import { TabLink, type ShareMode } from './shared/tab.js';
import type { SharedOptions } from './shared/wire.js';
import {
  ALL_TRANSPORTS,
  type ClientEvents,
  type ClientOptions,
  type ConnectionState,
  type Envelope,
  type GapInfo,
  type Message,
  type PresenceEntry,
  type PresenceEvent,
  type PublishResult,
  type Sink,
  type StateChange,
  type SubscribeOptions,
  type Transport,
  type TransportFactory,
  type TransportName,
} from './types.js';

/** The transport implementations, by name (replaceable in tests). */
export const FACTORIES: Record<TransportName, TransportFactory> = { websocket, sse, stream, iframe, longpoll, poll };

/** A connection that stays open this long is healthy: its loss restarts the backoff. */
const STABLE_MS = 5000;
/** The server's batch size: a poll answer this long means more is waiting. */
const FULL_BATCH = 256;
/** The version of this client; tabs share a connection only with the same version. */
export const VERSION = '0.1.0';

interface Channel {
  subs: Set<Subscription>;
  /** `undefined` (live edge) or `"earliest"`, until the channel has a watermark. */
  since: string | undefined;
  last: string | undefined;
}

/** One application subscription to one channel. Several may share a channel and a connection. */
export class Subscription {
  /** The channel. */
  readonly channel: string;
  private active = true;

  /** @internal Created by [`Client.subscribe`]. */
  constructor(
    channel: string,
    private readonly options: SubscribeOptions,
    private readonly remove: (sub: Subscription) => void,
    private readonly lastId: () => string | undefined,
  ) {
    this.channel = channel;
  }

  /** The cursor of the last message delivered on this channel, to resume from later. */
  get cursor(): string | undefined {
    return this.lastId();
  }

  /** Stops this subscription; the channel is left when its last subscription goes. */
  unsubscribe(): void {
    if (!this.active) return;
    this.active = false;
    this.remove(this);
  }

  /** @internal */
  deliver(msg: Message): void {
    if (this.active && this.options.onMessage) safeCall(this.options.onMessage, msg);
  }

  /** @internal */
  gap(info: GapInfo): void {
    if (this.active && this.options.onGap) safeCall(this.options.onGap, info);
  }

  /** @internal The server ended it. */
  ended(reason: string): void {
    if (!this.active) return;
    this.active = false;
    if (this.options.onUnsubscribe) safeCall(this.options.onUnsubscribe, { channel: this.channel, reason });
  }

  /** @internal */
  presence(joined: boolean, event: PresenceEvent): void {
    const call = joined ? this.options.onJoin : this.options.onLeave;
    if (this.active && call) safeCall(call, event);
  }

  /** @internal */
  get events(): readonly string[] {
    return this.options.events ?? [];
  }
}

/**
 * A Comet client: `new Client("https://host", options)`. It connects when the first subscription
 * is made and stays connected (reconnecting as needed) until [`close`](Client.close).
 */
export class Client extends Emitter<ClientEvents> {
  /** The server's base URL. */
  readonly url: string;
  private readonly opts: ClientOptions;
  private readonly order: TransportName[];
  private readonly channels = new Map<string, Channel>();
  private readonly book = new CursorBook();
  private readonly fetch: typeof fetch;

  private transport: Transport | null = null;
  private transportOpen = false;
  /** The channels of the current connection (or attempt). */
  private connected: string[] = [];
  /** Incremented per connection attempt: callbacks of older ones are ignored. */
  private gen = 0;
  /** Index in `order` of the transport in use or being tried. */
  private idx = 0;
  /** Failed attempts in a row (the backoff exponent). */
  private attempt = 0;
  private openedAt = 0;
  private everOpened = false;
  private timer: ReturnType<typeof setTimeout> | undefined;
  /** The current attempt's "did not open in time" timer. */
  private openTimer: ReturnType<typeof setTimeout> | undefined;
  private syncQueued = false;
  private closed = false;
  private current: StateChange = { state: 'idle', transport: null };
  private readonly unlisten: (() => void)[] = [];
  /** Channels being repaired (see [`repair`]), with the messages that arrived meanwhile. */
  private readonly repairing = new Map<string, Envelope[]>();
  /** Channels whose repair found nothing: their offsets are not contiguous; do not retry. */
  private readonly noRepair = new Set<string>();
  /** With `shared: true`: this tab's membership in the group sharing one connection. The hub
   *  then stands in for the transport, and its states are this client's. */
  private readonly link: TabLink | null;
  /** The hub's last state (shared clients). */
  private hubState: StateChange | null = null;
  /** Whether the shared connection was ever open (its `connecting` is then a `reconnecting`). */
  private hubOpened = false;

  constructor(url?: string, options: ClientOptions = {}) {
    super();
    const here = typeof location !== 'undefined' ? location.href : undefined;
    if (url === undefined && here === undefined) throw new TypeError('Comet.Client needs the server URL');
    this.url = new URL(url ?? '/', here).href.replace(/\/+$/, '');
    this.opts = options;
    this.order = [...(options.transports ?? ALL_TRANSPORTS)];
    if (!this.order.length) throw new TypeError('transports: give at least one');
    for (const t of this.order) {
      if (!(t in FACTORIES)) throw new TypeError(`unknown transport ${JSON.stringify(t)}; use ${ALL_TRANSPORTS.join(', ')}`);
    }
    const f = options.fetch ?? (typeof fetch === 'function' ? fetch : undefined);
    this.fetch = f ? (input, init) => f(input, init) : () => Promise.reject(new Error('fetch is not available'));
    this.link = options.shared && !options.fetch ? this.joinShared(options) : null;
    this.listenToPage();
  }

  private joinShared(o: ClientOptions): TabLink | null {
    const shared: SharedOptions = { url: this.url, transports: this.order };
    for (const k of ['token', 'pollInterval', 'longpollTimeout', 'heartbeatTimeout', 'connectTimeout', 'backoff'] as const) {
      if (o[k] !== undefined) (shared as unknown as Record<string, unknown>)[k] = o[k];
    }
    return TabLink.create(shared, VERSION, o.sharedWorkerUrl, (so) => new Client(so.url, { ...so }), {
      state: (s) => this.setState(s, true),
      frame: (fr) => this.emit('frame', fr),
    });
  }

  /** How this client shares its connection: `"worker"` (a SharedWorker), `"locks"` (the tab
   *  holding a Web Lock), `"alone"` (the SharedWorker failed and there are no Web Locks: its own
   *  connection), or `null` (unshared, or not decided yet: sharing starts with the first
   *  subscription). */
  get sharing(): ShareMode | null {
    return this.link?.mode ?? null;
  }

  override on<K extends keyof ClientEvents>(type: K, fn: (value: ClientEvents[K]) => void): () => void {
    if (type === 'frame') this.link?.wantFrames();
    return super.on(type, fn);
  }

  /** The current state. */
  get state(): ConnectionState {
    return this.current.state;
  }

  /** The transport in use (or being tried). */
  get transportName(): TransportName | null {
    return this.current.transport;
  }

  /** Subscribes to `channel`. Throws `TypeError` on a bad channel name or `since`. */
  subscribe(channel: string, options: SubscribeOptions = {}): Subscription {
    if (this.closed) throw new Error('this client is closed');
    if (!isChannel(channel)) throw new TypeError(`bad channel name ${JSON.stringify(channel)}: 1–255 of [A-Za-z0-9_.:@-]`);
    const since = options.since;
    if (since !== undefined && since !== 'earliest' && !parseCursor(since)) {
      throw new TypeError(`bad since ${JSON.stringify(since)}: "earliest" or a cursor <epoch>-<offset>`);
    }
    let ch = this.channels.get(channel);
    if (!ch) {
      ch = { subs: new Set(), since: since === 'earliest' ? since : undefined, last: undefined };
      this.channels.set(channel, ch);
      if (since && since !== 'earliest') {
        this.book.set(channel, parseCursor(since)!);
        ch.last = since;
      }
    }
    const entry = ch;
    const sub = new Subscription(channel, options, (s) => this.remove(s), () => entry.last);
    ch.subs.add(sub);
    this.queueSync();
    return sub;
  }

  /**
   * Who is subscribed to `channel` (a namespace with `presence = true`): `GET
   * /channels/{channel}/presence`. Rejects with a [`CometError`] (`presence_off`,
   * `unauthorized`, …).
   */
  async presence(channel: string): Promise<PresenceEntry[]> {
    if (!isChannel(channel)) throw new TypeError(`bad channel name ${JSON.stringify(channel)}`);
    const url = this.url + '/channels/' + channel + '/presence';
    this.frame('http', 'out', 'GET ' + url);
    let res: Response;
    try {
      res = await this.fetch(url, {
        headers: this.opts.token ? { authorization: 'Bearer ' + this.opts.token } : {},
        cache: 'no-store',
      });
    } catch (e) {
      throw new CometError('network', 'presence failed: ' + String((e as Error)?.message ?? e));
    }
    if (!res.ok) throw await errorOf(res);
    const body = (await res.json()) as { clients?: PresenceEntry[] };
    this.frame('http', 'in', JSON.stringify(body));
    return Array.isArray(body.clients) ? body.clients : [];
  }

  /**
   * Publishes `data` to `channel`: over the WebSocket when one is open, else `POST /pub/{channel}`.
   * Resolves to the message's cursor; rejects with a [`CometError`] (`code`: the server's code).
   */
  async publish(channel: string, data: string, options: { event?: string } = {}): Promise<PublishResult> {
    if (!isChannel(channel)) throw new TypeError(`bad channel name ${JSON.stringify(channel)}`);
    const event = options.event;
    if (event !== undefined && !isEventName(event)) throw new TypeError(`bad event name ${JSON.stringify(event)}`);
    const t = this.transport;
    if (t?.publish && this.transportOpen) return t.publish(channel, String(data), event);
    const url = this.url + '/pub/' + channel + query({ event, token: this.opts.token });
    this.frame('http', 'out', 'POST ' + redact(url) + '\n\n' + data);
    let res: Response;
    try {
      res = await this.fetch(url, {
        method: 'POST',
        body: String(data),
        headers: {
          'content-type': 'text/plain; charset=utf-8',
          ...(this.opts.token ? { authorization: 'Bearer ' + this.opts.token } : {}),
        },
      });
    } catch (e) {
      throw new CometError('network', 'publish failed: ' + String((e as Error)?.message ?? e));
    }
    if (res.status !== 201 && res.status !== 200) throw await errorOf(res);
    const body = (await res.json()) as PublishResult;
    this.frame('http', 'in', res.status + ' ' + JSON.stringify(body));
    return body;
  }

  /** Ends every subscription and the connection, for good. */
  close(): void {
    this.shut();
  }

  private shut(reason?: string): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.timer);
    this.stopTransport();
    this.link?.close();
    for (const off of this.unlisten.splice(0)) off();
    this.setState(reason ? { state: 'closed', transport: null, reason } : { state: 'closed', transport: null });
  }

  /** The server ended `channel`'s subscriptions: they are over, and the channel is left. */
  private serverUnsubscribed(channel: string): void {
    const ch = this.channels.get(channel);
    if (!ch) return;
    for (const sub of [...ch.subs]) sub.ended('unsubscribed by the server');
    this.channels.delete(channel);
    this.book.delete(channel);
    this.repairing.delete(channel);
    this.queueSync();
  }

  // ------------------------------------------------------------------ channels

  private remove(sub: Subscription): void {
    const ch = this.channels.get(sub.channel);
    if (!ch || !ch.subs.delete(sub) || ch.subs.size) return;
    this.channels.delete(sub.channel);
    this.book.delete(sub.channel);
    this.repairing.delete(sub.channel);
    this.queueSync();
  }

  private queueSync(): void {
    if (this.syncQueued) return;
    this.syncQueued = true;
    queueMicrotask(() => {
      this.syncQueued = false;
      this.sync();
    });
  }

  /** Brings the connection to the current channel set. */
  private sync(): void {
    if (this.closed) return;
    const want = [...this.channels.keys()];
    const have = this.connected;
    const same = want.length === have.length && want.every((c) => have.includes(c));
    if (this.timer !== undefined) {
      if (!want.length) this.connect(); // nothing left to wait for
      return; // the pending retry connects with the new set
    }
    if (same && (this.transport || this.gen > 0)) return;
    const t = this.transport;
    if (t?.update && this.transportOpen && want.length) {
      const added = want.filter((c) => !have.includes(c));
      const removed = have.filter((c) => !want.includes(c));
      const gen = this.gen;
      this.connected = want;
      void this.anchor(added, gen).then((ok) => {
        if (ok && gen === this.gen && this.transport === t && !t.update!(added, removed)) this.connect();
      });
      return;
    }
    // A transport that can change channels in place is still opening: leave it; `opened` syncs
    // again (a shared connection's tabs arrive one by one, each with its channels).
    if (t?.update && !this.transportOpen && want.length) return;
    this.connect();
  }

  // ------------------------------------------------------------------ connection

  private connect(reason?: string): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.stopTransport();
    if (this.closed) return;
    const channels = [...this.channels.keys()];
    this.connected = channels;
    const gen = ++this.gen;
    if (!channels.length) {
      this.link?.idle();
      return this.setState({ state: 'idle', transport: null });
    }
    if (!this.link && this.offline()) return this.waitOnline();
    const name = this.order[this.idx]!;
    const factory = this.link ? this.link.factory(name, (c) => this.book.get(c)) : FACTORIES[name];
    const why = factory.unavailable(this.url);
    if (why) return this.failedToOpen(name, why);
    this.setState({ state: this.everOpened ? 'reconnecting' : 'connecting', transport: name, reason });
    void this.anchor(channels, gen).then((ok) => {
      if (ok && gen === this.gen) this.open(name, factory, channels, gen);
    });
  }

  private open(name: TransportName, factory: TransportFactory, channels: string[], gen: number): void {
    let opened = false;
    let done = false;
    const live = () => gen === this.gen && !done;
    const sink: Sink = {
      opened: () => {
        if (!live() || opened) return;
        opened = true;
        clearTimeout(this.openTimer);
        this.transportOpen = true;
        this.everOpened = true;
        this.openedAt = Date.now();
        this.setState({ state: 'open', transport: name });
        this.queueSync(); // the channel set may have changed while connecting
      },
      message: (env) => live() && this.deliver(env),
      gap: (channel) => live() && this.gapNotice(channel, 'history'),
      presence: (joined, event) => {
        if (!live()) return;
        for (const s of [...(this.channels.get(event.channel)?.subs ?? [])]) s.presence(joined, event);
      },
      position: (text) => live() && this.book.advance(parsePosition(text, channels)),
      frame: (direction, text) => live() && this.frame(name, direction, text),
      error: (e) => live() && this.emit('error', e),
      disconnected: (reconnect) => {
        if (!live()) return;
        // `reconnect: false`: the application asked this client to stop (the server API).
        if (!reconnect) this.shut('disconnected by the server');
      },
      unsubscribed: (channel) => live() && this.serverUnsubscribed(channel),
      ended: (why, info = {}) => {
        if (!live()) return;
        done = true;
        this.stopTransport();
        if (info.badCursor) this.resetCursors();
        if (opened) this.lost(`${name}: ${why}`, info.retry);
        else this.failedToOpen(name, why, info.retry);
      },
    };
    const ms = this.opts.connectTimeout ?? 10_000;
    this.openTimer = setTimeout(() => sink.ended(`did not open within ${ms} ms`), ms);
    const ctx = {
      base: this.url,
      token: this.opts.token,
      channels,
      // The current channel set, not the attempt's first one: a channel the WebSocket adds in place
      // (`update`) is subscribed from its cursor too.
      position: () => this.book.position(gen === this.gen ? this.connected : channels),
      events: this.eventNames(),
      options: {
        pollInterval: this.opts.pollInterval ?? 2000,
        longpollTimeout: this.opts.longpollTimeout ?? 25,
        heartbeatTimeout: this.opts.heartbeatTimeout ?? 45_000,
      },
      fetch: this.fetch,
      sink,
    };
    try {
      this.transport = factory.create(ctx);
      this.transportOpen = false;
      this.transport.start();
    } catch (e) {
      sink.ended(String((e as Error)?.message ?? e));
    }
  }

  /** A transport that never opened: try the next one; after the last, wait and start over. */
  private failedToOpen(name: TransportName, why: string, retry?: number): void {
    const reason = `${name} failed: ${why}`;
    this.idx += 1;
    if (this.idx < this.order.length) return this.connect(reason);
    this.idx = 0;
    this.retry(reason, retry);
  }

  /** An open connection was lost: reconnect on the same transport after a backoff. */
  private lost(reason: string, retry?: number): void {
    if (Date.now() - this.openedAt >= STABLE_MS) this.attempt = 0;
    this.retry(reason, retry);
  }

  private retry(reason: string, hint?: number): void {
    this.stopTransport();
    if (this.offline()) return this.waitOnline();
    const delay = backoffDelay(this.attempt, this.opts.backoff, hint);
    this.attempt += 1;
    this.setState({
      state: this.everOpened ? 'reconnecting' : 'connecting',
      transport: this.order[this.idx]!,
      reason,
      delay,
      attempt: this.attempt,
    });
    this.timer = setTimeout(() => this.connect(), delay);
  }

  private stopTransport(): void {
    const t = this.transport;
    this.transport = null;
    this.transportOpen = false;
    clearTimeout(this.openTimer);
    this.gen += 1; // silences the old transport's callbacks
    t?.stop();
  }

  // ------------------------------------------------------------------ cursors and delivery

  /**
   * Gives every channel of `channels` without a watermark one, with a short poll (one per kind of
   * start: live edge or `earliest`), delivering what `earliest` replays. From then on every
   * connection sends a full position, so a channel that had no message yet is resumed exactly too
   * (the streaming transports do not tell the client where a channel stood when it subscribed).
   * Returns false when the server could not be reached (a retry is then scheduled).
   */
  private async anchor(channels: readonly string[], gen: number): Promise<boolean> {
    const groups = new Map<string | undefined, string[]>();
    for (const c of channels) {
      const ch = this.channels.get(c);
      if (!ch || this.book.has(c)) continue;
      const list = groups.get(ch.since) ?? [];
      list.push(c);
      groups.set(ch.since, list);
    }
    try {
      for (const [since, list] of groups) {
        let from = since;
        for (;;) {
          const url = subURL(this.url, list, { transport: 'poll', since: from }, this.opts.token);
          this.frame('http', 'out', 'GET ' + redact(url));
          const answer = await pollOnce(this.fetch, url, this.opts.token);
          if (gen !== this.gen) return false;
          this.frame('http', 'in', answer.raw);
          for (const ch of answer.gaps) this.gapNotice(ch, 'history');
          for (const m of answer.messages) this.deliver(m);
          this.book.advance(parsePosition(answer.cursor, list));
          if (answer.messages.length < FULL_BATCH) break;
          from = answer.cursor;
        }
      }
      return true;
    } catch (e) {
      if (gen !== this.gen) return false;
      const err = e as CometError;
      this.stopTransport();
      this.retry(`cannot reach the server: ${err.message}`, err.retry);
      return false;
    }
  }

  private deliver(env: Envelope, repaired = false): void {
    const ch = this.channels.get(env.channel);
    if (!ch) return; // a channel left meanwhile
    const waiting = this.repairing.get(env.channel);
    if (waiting) return void waiting.push(env);
    if (!repaired && !this.noRepair.has(env.channel) && this.book.hole(env.channel, env.id)) {
      return void this.repair(env.channel, env);
    }
    const before = ch.last;
    const verdict = this.book.accept(env.channel, env.id);
    if (verdict === 'duplicate') return;
    if (verdict === 'new-epoch') {
      for (const s of [...ch.subs]) s.gap({ channel: env.channel, after: before, reason: 'epoch' });
    }
    ch.last = env.id;
    const msg: Message = {
      channel: env.channel,
      id: env.id,
      event: env.event ?? 'message',
      data: String(env.data),
      time: typeof env.time === 'number' ? env.time : Date.now(),
    };
    for (const s of [...ch.subs]) s.deliver(msg);
  }

  /**
   * A message skipped offsets with no gap notice: something was lost in transit (e.g. a named
   * event that an `EventSource` had no listener for). Hold the channel's messages, fetch what
   * follows the watermark with one short poll, deliver it, then what arrived meanwhile.
   */
  private async repair(channel: string, first: Envelope): Promise<void> {
    const held = [first];
    this.repairing.set(channel, held);
    const since = this.book.get(channel);
    let fetched: Envelope[] = [];
    let failed = false;
    try {
      const url = subURL(this.url, [channel], { transport: 'poll', since }, this.opts.token);
      this.frame('http', 'out', 'GET ' + redact(url) + ' (repair)');
      const answer = await pollOnce(this.fetch, url, this.opts.token);
      this.frame('http', 'in', answer.raw);
      if (answer.gaps.length) this.book.gap(channel);
      fetched = answer.messages;
    } catch {
      failed = true;
    }
    if (this.repairing.get(channel) !== held) return; // the channel was left meanwhile
    this.repairing.delete(channel);
    // What follows the watermark still skips offsets: those messages are gone (or this channel's
    // offsets are not contiguous). Say so, and do not try again on this channel.
    if (failed || this.book.hole(channel, (fetched[0] ?? first).id)) {
      if (!failed) this.noRepair.add(channel);
      this.gapNotice(channel, 'missed');
    }
    for (const m of fetched) this.deliver(m, true);
    for (const m of held) this.deliver(m, true);
  }

  private gapNotice(channel: string, reason: GapInfo['reason']): void {
    const ch = this.channels.get(channel);
    if (!ch) return;
    this.book.gap(channel);
    for (const s of [...ch.subs]) s.gap({ channel, after: ch.last, reason });
  }

  /** The server rejected our position: start every channel over at the live edge. */
  private resetCursors(): void {
    for (const [name, ch] of this.channels) {
      this.book.delete(name);
      ch.since = undefined;
      for (const s of [...ch.subs]) s.gap({ channel: name, after: ch.last, reason: 'bad_cursor' });
    }
  }

  private eventNames(): Set<string> {
    const names = new Set<string>(this.opts.events ?? []);
    for (const ch of this.channels.values()) for (const s of ch.subs) for (const e of s.events) names.add(e);
    return names;
  }

  // ------------------------------------------------------------------ state, frames, page life

  private setState(s: StateChange, fromHub = false): void {
    if (this.link) {
      // A shared client's connection is the hub's: its states are this client's while the link
      // is up and the client has channels. Its own only say where the link stands.
      if (fromHub) {
        if (s.state === 'idle' || s.state === 'closed') return;
        if (s.state === 'connecting' && this.hubOpened) s = { ...s, state: 'reconnecting' };
        if (s.state === 'open') this.hubOpened = true;
        this.hubState = s;
        if (!this.transportOpen || this.closed || !this.channels.size) return;
      } else if (s.state === 'open') {
        if (!this.hubState) return;
        s = this.hubState;
      } else if (s.state === 'connecting' || s.state === 'reconnecting') {
        s = { ...s, transport: null };
      }
    }
    this.current = s;
    this.emit('state', s);
  }

  private frame(transport: TransportName | 'http', direction: 'in' | 'out', text: string): void {
    if (this.has('frame')) this.emit('frame', { transport, direction, text, time: Date.now() });
  }

  private offline(): boolean {
    return typeof navigator !== 'undefined' && navigator.onLine === false;
  }

  private waitOnline(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.setState({ state: this.everOpened ? 'reconnecting' : 'connecting', transport: null, reason: 'offline' });
  }

  private listenToPage(): void {
    if (typeof addEventListener !== 'function') return;
    const on = (target: EventTarget, type: string, fn: (e: Event) => void) => {
      target.addEventListener(type, fn);
      this.unlisten.push(() => target.removeEventListener(type, fn));
    };
    // Restored from the back/forward cache: the old connection is gone (a shared client tells
    // the hub again what it wants).
    on(globalThis as unknown as EventTarget, 'pageshow', (e) => {
      if ((e as PageTransitionEvent).persisted && this.channels.size) this.connect('page restored');
    });
    // A shared client's connection is the hub's, and it watches the network itself.
    if (this.link) return;
    // The network came back: reconnect now rather than at the end of a long backoff.
    on(globalThis as unknown as EventTarget, 'online', () => {
      if (this.transportOpen || !this.channels.size) return;
      this.attempt = 0;
      this.connect('back online');
    });
    // The network is gone: whatever is open cannot deliver. Wait for 'online' (the cursors make
    // the reconnect lossless).
    on(globalThis as unknown as EventTarget, 'offline', () => {
      if (!this.channels.size) return;
      this.stopTransport();
      this.waitOnline();
    });
    if (typeof document !== 'undefined') {
      // Visible again: hidden tabs' timers are throttled, so do not sit out a stretched backoff;
      // and a poll is due now rather than at the end of its interval.
      on(document, 'visibilitychange', () => {
        if (document.visibilityState !== 'visible' || !this.channels.size) return;
        if (this.timer !== undefined) this.connect('page visible again');
        else (this.transport as { nudge?: () => void } | null)?.nudge?.();
      });
    }
  }
}

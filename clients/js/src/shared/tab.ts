// A tab's side of sharing: find the hub (a SharedWorker; else the tab that wins a Web Lock,
// reached over a BroadcastChannel), tell it what this tab wants, and hand what it routes here to
// the tab's client through a transport of its own (the "link"). The tab's client keeps all of its
// logic — anchoring, cursors, de-duplication, repair — so a shared tab behaves as an unshared one;
// the link only replaces the network connection.

import { CometError } from '../http.js';
import type { Frame, PublishResult, StateChange, Transport, TransportContext, TransportFactory, TransportName } from '../types.js';
import { Hub, lockManager, tabLockName, type Peer } from './hub.js';
import { fromWire, shareKey, type Broadcast, type SharedOptions, type ToHub, type ToTab, type ToWorker } from './wire.js';
import type { Client } from '../client.js';

/** How long a SharedWorker may take to answer before the tab falls back to Web Locks. */
const WORKER_READY_MS = 5000;

/** Where this bundle was loaded from: the default SharedWorker script (the bundle serves as its
 *  own worker). Read once at load: `document.currentScript` is only set while a classic script
 *  runs; in the ES module build `import.meta.url` says it (esbuild leaves it empty in the IIFE). */
export const BUNDLE: { url: string; type: WorkerType } | null = (() => {
  // Only a file named like comet's own bundle (`comet.js`, `comet.mjs`, `comet.min.js`…): an
  // application's bundle that includes comet.js would start the whole application as a worker.
  const own = /^https?:\/\/[^?#]*\/comet[^/?#]*\.m?js(?:[?#]|$)/;
  const script = typeof document !== 'undefined' ? (document.currentScript as HTMLScriptElement | null) : null;
  if (script?.src) return own.test(script.src) ? { url: script.src, type: 'classic' } : null;
  const url = (import.meta as { url?: string }).url;
  return url && own.test(url) ? { url, type: 'module' } : null;
})();

/** The browser features sharing uses; replaceable in tests (Node has none of the first two). */
export const SHARING: {
  SharedWorker: typeof SharedWorker | undefined;
  BroadcastChannel: typeof BroadcastChannel | undefined;
  locks: () => LockManager | undefined;
} = {
  get SharedWorker() {
    return (globalThis as { SharedWorker?: typeof SharedWorker }).SharedWorker;
  },
  get BroadcastChannel() {
    return (globalThis as { BroadcastChannel?: typeof BroadcastChannel }).BroadcastChannel;
  },
  locks: lockManager,
};

/** What the tab's client hears from the hub beside the link's sink. */
export interface LinkHooks {
  state(s: StateChange): void;
  frame(f: Frame): void;
}

/** `worker`: a SharedWorker holds the connection. `locks`: the tab holding a Web Lock does.
 *  `alone`: the SharedWorker failed and there are no Web Locks: this tab holds its own. */
export type ShareMode = 'worker' | 'locks' | 'alone';

function randomId(): string {
  const c = (globalThis as { crypto?: Crypto }).crypto;
  if (c?.randomUUID) return c.randomUUID();
  return Math.random().toString(36).slice(2) + Date.now().toString(36);
}

interface Pending {
  msg: Extract<ToHub, { t: 'call' }>;
  sent: boolean;
  resolve: (r: PublishResult) => void;
  reject: (e: Error) => void;
}

/** One tab's membership in a sharing group. Created per client; lives until `close`. */
export class TabLink {
  readonly id = randomId();
  readonly key: string;
  /** `worker` or `locks` once decided; `null` before. */
  mode: ShareMode | null = null;
  private started = false;
  private closed = false;
  /** A hub is known and receives what is sent. */
  private ready = false;
  private port: MessagePort | null = null;
  private bc: BroadcastChannel | null = null;
  /** The current leader's tab id (Web Locks mode). */
  private leader: string | null = null;
  /** This tab's hub, while it leads. */
  private hub: Hub | null = null;
  private current: LinkTransport | null = null;
  private readonly pending = new Map<number, Pending>();
  private ref = 0;
  private frames = false;
  /** Cancels the lock requests still waiting (the leader lock of a tab that is not leading). */
  private readonly quit = new AbortController();
  /** Releases the locks held (the tab's life lock, the leader lock). */
  private readonly releases: (() => void)[] = [];
  private readonly self: Peer = { post: (m) => queueMicrotask(() => this.fromHub(m)) };
  private readonly unlisten: (() => void)[] = [];

  /** A link, or `null` where this browser can share nothing (no SharedWorker, no Web Locks). */
  static create(
    options: SharedOptions,
    version: string,
    workerUrl: string | undefined,
    make: (o: SharedOptions) => Client,
    hooks: LinkHooks,
  ): TabLink | null {
    const worker = SHARING.SharedWorker && (workerUrl ?? BUNDLE?.url) ? SHARING.SharedWorker : undefined;
    const locks = SHARING.locks() && SHARING.BroadcastChannel ? true : false;
    if (!worker && !locks) return null;
    return new TabLink(options, shareKey(options, version), workerUrl, make, hooks);
  }

  private constructor(
    private readonly options: SharedOptions,
    key: string,
    private readonly workerUrl: string | undefined,
    private readonly make: (o: SharedOptions) => Client,
    private readonly hooks: LinkHooks,
  ) {
    this.key = key;
  }

  /** The transport factory the tab's client uses in place of the real ones. */
  factory(name: TransportName, cursor: (channel: string) => string | undefined): TransportFactory {
    return { unavailable: () => null, create: (ctx) => new LinkTransport(name, ctx, this, cursor) };
  }

  /** The tab's client listens to frames: have the hub forward the connection's. */
  wantFrames(): void {
    if (this.frames) return;
    this.frames = true;
    this.resync();
  }

  // ------------------------------------------------------------------ to the hub

  attach(t: LinkTransport): void {
    this.current = t;
    if (!this.started) this.start();
    this.resync();
  }

  detach(t: LinkTransport): void {
    if (this.current === t) this.current = null;
  }

  /** The tab's client has no channel left: the hub releases this tab's. */
  idle(): void {
    this.current = null;
    this.resync();
  }

  /** Sends the whole of what this tab wants (idempotent). */
  resync(): void {
    if (this.closed || !this.ready) return;
    this.send({
      t: 'sync',
      tab: this.id,
      channels: this.current?.wanted() ?? [],
      events: this.current ? [...this.current.ctx.events] : [],
      frames: this.frames,
    });
  }

  publish(channel: string, data: string, event?: string): Promise<PublishResult> {
    return new Promise((resolve, reject) => {
      if (this.closed) return reject(new CometError('disconnected', 'this client is closed'));
      const ref = ++this.ref;
      const msg = { t: 'call' as const, tab: this.id, ref, channel, data, ...(event === undefined ? {} : { event }) };
      const p: Pending = { msg, sent: false, resolve, reject };
      this.pending.set(ref, p);
      if (this.ready) {
        p.sent = true;
        this.send(msg);
      }
    });
  }

  private send(m: ToHub): void {
    if (this.port) this.port.postMessage(m satisfies ToWorker);
    else if (this.hub) {
      const hub = this.hub;
      queueMicrotask(() => hub.receive(m, this.self));
    } else this.bc?.postMessage(m satisfies Broadcast);
  }

  /** A hub is (newly) there: tell it everything, and send the calls that waited. */
  private hubUp(): void {
    this.ready = true;
    this.resync();
    for (const p of this.pending.values()) {
      if (p.sent) continue;
      p.sent = true;
      this.send(p.msg);
    }
  }

  /** The hub changed before answering: whether those publishes happened is unknown. */
  private failSent(why: string): void {
    for (const [ref, p] of this.pending) {
      if (!p.sent) continue;
      this.pending.delete(ref);
      p.reject(new CometError('disconnected', why));
    }
  }

  // ------------------------------------------------------------------ from the hub

  private fromHub(m: ToTab): void {
    if (this.closed) return;
    const sink = this.current?.ctx.sink;
    switch (m.t) {
      case 'msg':
        return void sink?.message(m.env);
      case 'gap':
        return void sink?.gap(m.channel);
      case 'presence':
        return void sink?.presence(m.joined, m.event);
      case 'unsubscribed':
        return void sink?.unsubscribed(m.channel);
      case 'error':
        return void sink?.error(fromWire(m.error));
      case 'disconnected':
        return void sink?.disconnected(false);
      case 'state':
        return this.hooks.state(m.state);
      case 'frame':
        return this.hooks.frame(m.frame);
      case 'reply': {
        const p = this.pending.get(m.ref);
        if (!p) return;
        this.pending.delete(m.ref);
        if (m.result) p.resolve(m.result);
        else p.reject(fromWire(m.error ?? { code: 'error', message: 'no answer' }));
      }
    }
  }

  // ------------------------------------------------------------------ finding the hub

  private start(): void {
    this.started = true;
    const locks = SHARING.locks();
    const page = globalThis as unknown as EventTarget;
    if (typeof page.addEventListener === 'function') {
      // The page goes away (or into the back/forward cache): release this tab's channels now
      // rather than when the hub notices. A page restored from the cache syncs again.
      const bye = () => this.ready && this.send({ t: 'bye', tab: this.id });
      page.addEventListener('pagehide', bye);
      this.unlisten.push(() => page.removeEventListener('pagehide', bye));
    }
    if (!locks) return this.findHub();
    // Hold this tab's life lock before anyone hears of the tab, so a hub waiting on it is granted
    // it only when the tab is gone.
    let granted = false;
    const go = () => {
      if (granted) return;
      granted = true;
      if (!this.closed) this.findHub();
    };
    locks
      .request(tabLockName(this.id), () => {
        go();
        return new Promise<void>((r) => this.releases.push(r));
      })
      .catch(go);
  }

  private findHub(): void {
    const SW = SHARING.SharedWorker;
    const url = this.workerUrl ?? BUNDLE?.url;
    // A worker has no document, so no iframe transport: with only that, a tab must hold it.
    if (SW && url && this.options.transports.some((t) => t !== 'iframe')) this.tryWorker(SW, url);
    else this.elect();
  }

  private tryWorker(SW: typeof SharedWorker, url: string): void {
    let worker: SharedWorker;
    const type: WorkerType = this.workerUrl === undefined && BUNDLE ? BUNDLE.type : /\.mjs(\?|#|$)/.test(url) ? 'module' : 'classic';
    try {
      worker = new SW(url, { name: 'comet:' + this.key, type });
    } catch {
      return this.elect(); // a cross-origin URL, a CSP that forbids workers
    }
    const port = worker.port;
    let answered = false;
    const fail = () => {
      if (answered || this.closed) return;
      answered = true;
      clearTimeout(timer);
      port.close();
      this.elect(); // the script did not load, or is not comet.js
    };
    const timer = setTimeout(fail, WORKER_READY_MS);
    worker.addEventListener('error', fail);
    port.onmessage = (e: MessageEvent) => {
      const m = e.data as ToTab | { t: 'ready' };
      if (m.t === 'ready') {
        if (answered) return;
        answered = true;
        clearTimeout(timer);
        this.mode = 'worker';
        this.port = port;
        return this.hubUp();
      }
      if (this.port === port) this.fromHub(m);
    };
    port.postMessage({ t: 'open', options: this.options } satisfies ToWorker);
  }

  /** Web Locks mode: whoever holds the leader lock runs the hub; the others queue for it, so when
   *  the leader goes the next in line takes over at once. */
  private elect(): void {
    const locks = SHARING.locks();
    const BC = SHARING.BroadcastChannel;
    if (this.closed) return;
    if (!locks || !BC) {
      // No way to share (a SharedWorker that failed where Web Locks do not exist): this tab
      // holds its own hub, i.e. its own connection.
      this.mode = 'alone';
      this.lead();
      return;
    }
    this.mode = 'locks';
    const bc = (this.bc = new BC('comet:' + this.key));
    bc.onmessage = (e: MessageEvent) => this.onBroadcast(e.data as Broadcast);
    locks
      .request('comet:leader:' + this.key, { signal: this.quit.signal }, () => {
        if (this.closed) return;
        this.lead();
        return new Promise<void>((r) => this.releases.push(r));
      })
      .catch(() => {}); // aborted by close()
    bc.postMessage({ t: 'hello', tab: this.id } satisfies Broadcast);
  }

  private lead(): void {
    const takeover = this.leader !== null;
    this.leader = this.id;
    this.hub = new Hub(() => this.make(this.options));
    this.failSent('the tab holding the shared connection went away');
    if (takeover) this.hooks.state({ state: 'reconnecting', transport: null, reason: 'this tab takes over the shared connection' });
    this.bc?.postMessage({ t: 'leader', id: this.id } satisfies Broadcast);
    this.hubUp();
  }

  private onBroadcast(m: Broadcast): void {
    if (this.closed) return;
    switch (m.t) {
      case 'hello':
        if (this.hub) this.bc?.postMessage({ t: 'leader', id: this.id } satisfies Broadcast);
        return;
      case 'leader':
        if (m.id === this.id || m.id === this.leader) return;
        if (this.leader !== null) {
          this.failSent('the tab holding the shared connection went away');
          this.hooks.state({ state: 'reconnecting', transport: null, reason: 'another tab takes over the shared connection' });
        }
        this.leader = m.id;
        return this.hubUp();
      case 'resign':
        if (m.id === this.leader) {
          this.ready = false;
          this.failSent('the tab holding the shared connection closed');
          this.hooks.state({ state: 'reconnecting', transport: null, reason: 'the tab holding the shared connection closed' });
        }
        return;
      case 'ev':
        if (m.to === this.id) this.fromHub(m.ev);
        return;
      default:
        // A tab's message to the hub: ours, if we lead. (A BroadcastChannel does not hear itself.)
        if (this.hub) this.hub.receive(m, this.peerOf(m.tab));
    }
  }

  private peerOf(tab: string): Peer {
    const bc = this.bc;
    return { post: (ev) => bc?.postMessage({ t: 'ev', to: tab, ev } satisfies Broadcast) };
  }

  /** Leaves for good: the hub releases this tab's channels; a leader hands over. */
  close(): void {
    if (this.closed) return;
    if (this.ready) this.send({ t: 'bye', tab: this.id });
    this.closed = true;
    this.ready = false;
    for (const off of this.unlisten.splice(0)) off();
    for (const [ref, p] of this.pending) {
      this.pending.delete(ref);
      p.reject(new CometError('disconnected', 'this client is closed'));
    }
    if (this.hub) {
      this.hub.stop();
      this.hub = null;
      this.bc?.postMessage({ t: 'resign', id: this.id } satisfies Broadcast);
    }
    this.quit.abort();
    for (const release of this.releases.splice(0)) release();
    this.port?.close();
    this.port = null;
    this.bc?.close();
    this.bc = null;
  }
}

/** The transport of a shared tab: the hub stands in for the connection. */
export class LinkTransport implements Transport {
  private readonly channels: Set<string>;

  constructor(
    readonly name: TransportName,
    readonly ctx: TransportContext,
    private readonly link: TabLink,
    private readonly cursor: (channel: string) => string | undefined,
  ) {
    this.channels = new Set(ctx.channels);
  }

  start(): void {
    // Open at once: what it sends waits for a hub, and the hub's own states say how the real
    // connection is doing.
    this.ctx.sink.opened();
    this.link.attach(this);
  }

  stop(): void {
    this.link.detach(this);
  }

  update(added: readonly string[], removed: readonly string[]): boolean {
    for (const c of removed) this.channels.delete(c);
    for (const c of added) this.channels.add(c);
    this.link.resync();
    return true;
  }

  publish(channel: string, data: string, event?: string): Promise<PublishResult> {
    return this.link.publish(channel, data, event);
  }

  /** Each channel with this tab's watermark, for the hub to resume from. */
  wanted(): { channel: string; since?: string }[] {
    return [...this.channels].map((channel) => {
      const since = this.cursor(channel);
      return since ? { channel, since } : { channel };
    });
  }
}

// The hub: the one connection the tabs of an origin share, and the routing of what it receives to
// the tabs that subscribed. It runs in the SharedWorker, or in the tab that holds the Web Lock.
//
// The connection is an ordinary unshared client (resume, de-dup, fallback and all). Each tab's
// interest in a channel is one subscription of that client, so the client's own bookkeeping
// decides when a channel is joined and left (the last subscription of any tab), and each
// subscription's callbacks post to its own tab: two tabs on one channel each get each message
// once, and one tab leaving does not touch the other's.

import type { Client, Subscription } from '../client.js';
import type { StateChange } from '../types.js';
import { toWire, type ToHub, type ToTab, type WantedChannel } from './wire.js';

/** How the hub reaches one tab (a worker port, a BroadcastChannel address, or a direct call). */
export interface Peer {
  post(m: ToTab): void;
}

interface Tab {
  peer: Peer;
  subs: Map<string, Subscription>;
  frames: boolean;
  /** Cancels the wait on the tab's life lock. */
  watch: AbortController | undefined;
}

/** The name of the Web Lock each tab holds for its whole life: the hub waits on it to learn that a
 *  tab is gone even when it could not say `bye` (a crash, a killed process). */
export function tabLockName(tab: string): string {
  return 'comet:tab:' + tab;
}

/** The lock manager, where there is one (secure contexts; pages and workers). */
export function lockManager(): LockManager | undefined {
  const nav = (globalThis as { navigator?: Navigator }).navigator;
  return nav && 'locks' in nav ? nav.locks : undefined;
}

export class Hub {
  private client: Client | null = null;
  private readonly tabs = new Map<string, Tab>();
  private offs: (() => void)[] = [];
  private offFrames: (() => void) | null = null;
  private last: StateChange = { state: 'idle', transport: null };
  private stopped = false;

  /** `make` builds the shared connection (an unshared client) when the first tab needs it. */
  constructor(
    private readonly make: () => Client,
    private readonly locks: LockManager | undefined = lockManager(),
  ) {}

  /** Handles one message from a tab; `peer` answers it. */
  receive(m: ToHub, peer: Peer): void {
    if (this.stopped) return;
    if (m.t === 'sync') this.sync(m.tab, m.channels, m.events, m.frames, peer);
    else if (m.t === 'call') this.call(m, peer);
    else if (m.t === 'bye') this.drop(m.tab);
  }

  /** The tabs it serves (tests, logs). */
  get tabCount(): number {
    return this.tabs.size;
  }

  /** Ends the connection and forgets every tab (the leader resigns). */
  stop(): void {
    this.stopped = true;
    for (const id of [...this.tabs.keys()]) this.drop(id);
    this.closeClient();
  }

  private inner(): Client {
    if (this.client && this.client.state !== 'closed') return this.client;
    this.closeClient();
    const c = (this.client = this.make());
    this.last = { state: 'idle', transport: null };
    this.offs = [
      c.on('state', (s) => {
        this.last = s;
        if (s.state === 'closed') {
          // Only the server's `reconnect: false` closes it while tabs use it: they stop too.
          if (c === this.client) this.everyTab({ t: 'disconnected' });
          return;
        }
        this.everyTab({ t: 'state', state: s });
      }),
      c.on('error', (e) => this.everyTab({ t: 'error', error: toWire(e) })),
    ];
    this.frames();
    return c;
  }

  private closeClient(): void {
    for (const off of this.offs.splice(0)) off();
    this.offFrames?.();
    this.offFrames = null;
    const c = this.client;
    this.client = null;
    c?.close();
  }

  /** Frames are formatted only while a listener exists: listen only while a tab wants them. */
  private frames(): void {
    const want = [...this.tabs.values()].some((t) => t.frames);
    if (want && !this.offFrames && this.client) {
      this.offFrames = this.client.on('frame', (f) => {
        for (const t of this.tabs.values()) if (t.frames) t.peer.post({ t: 'frame', frame: f });
      });
    } else if (!want && this.offFrames) {
      this.offFrames();
      this.offFrames = null;
    }
  }

  private everyTab(m: ToTab): void {
    for (const t of this.tabs.values()) t.peer.post(m);
  }

  private sync(id: string, channels: WantedChannel[], events: string[], frames: boolean, peer: Peer): void {
    let tab = this.tabs.get(id);
    const fresh = !tab;
    if (!tab) {
      tab = { peer, subs: new Map(), frames, watch: undefined };
      this.tabs.set(id, tab);
      this.watch(id, tab);
    }
    tab.peer = peer;
    tab.frames = frames;
    const want = new Set(channels.map((c) => c.channel));
    for (const [channel, sub] of tab.subs) {
      if (want.has(channel)) continue;
      tab.subs.delete(channel);
      sub.unsubscribe();
    }
    const client = this.inner();
    const t = tab;
    for (const { channel, since } of channels) {
      if (t.subs.has(channel)) continue;
      try {
        // The first subscription of a channel decides where the connection resumes it: the cursor
        // of the tab that asked first. A tab that stands further back sees the next message skip
        // offsets and fetches what it lacks itself (the client's repair); one further ahead drops
        // what it already has (de-duplication by cursor).
        const sub = client.subscribe(channel, {
          since,
          events,
          onMessage: (msg) => t.peer.post({ t: 'msg', env: msg }),
          // Only the server's own notice is forwarded: the other reasons (a new epoch, skipped
          // offsets, a rejected cursor) each tab finds out from its own cursors.
          onGap: (g) => g.reason === 'history' && t.peer.post({ t: 'gap', channel }),
          onJoin: (event) => t.peer.post({ t: 'presence', joined: true, event }),
          onLeave: (event) => t.peer.post({ t: 'presence', joined: false, event }),
          onUnsubscribe: () => {
            if (t.subs.get(channel) === sub) t.subs.delete(channel);
            t.peer.post({ t: 'unsubscribed', channel });
          },
        });
        t.subs.set(channel, sub);
      } catch (e) {
        t.peer.post({ t: 'error', error: toWire(e) });
      }
    }
    this.frames();
    if (fresh) t.peer.post({ t: 'state', state: this.last });
  }

  private call(m: Extract<ToHub, { t: 'call' }>, peer: Peer): void {
    const client = this.inner();
    client.publish(m.channel, m.data, m.event === undefined ? {} : { event: m.event }).then(
      (result) => peer.post({ t: 'reply', ref: m.ref, result }),
      (e) => peer.post({ t: 'reply', ref: m.ref, error: toWire(e) }),
    );
  }

  /** Forgets tab `id` and its subscriptions (the channels no other tab wants are left). */
  private drop(id: string): void {
    const tab = this.tabs.get(id);
    if (!tab) return;
    this.tabs.delete(id);
    tab.watch?.abort();
    for (const sub of tab.subs.values()) sub.unsubscribe();
    tab.subs.clear();
    this.frames();
  }

  /** Waits on the tab's life lock: granted when the tab is gone, however it went. */
  private watch(id: string, tab: Tab): void {
    if (!this.locks) return;
    const ctl = (tab.watch = new AbortController());
    this.locks
      .request(tabLockName(id), { signal: ctl.signal }, () => {
        if (this.tabs.get(id) === tab) this.drop(id);
      })
      .catch(() => {}); // aborted: the tab said bye, or the hub stopped
  }
}

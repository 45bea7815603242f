// Sharing one connection between tabs, without a browser: the hub's routing against fake
// transports, and three tab clients electing a leader over Node's BroadcastChannel with an
// in-memory Web Locks manager (the SharedWorker path needs Chromium: test/browser/shared.test.mjs).
import { strict as assert } from 'node:assert';
import { afterEach, test } from 'node:test';
import { Client, FACTORIES } from '../../src/client.js';
import { Hub, type Peer } from '../../src/shared/hub.js';
import { SHARING } from '../../src/shared/tab.js';
import type { ToTab } from '../../src/shared/wire.js';
import type { Envelope, PublishResult, Transport, TransportContext, TransportName } from '../../src/types.js';

/** A fake WebSocket-like transport (channels change in place); the test drives its sink. */
class Fake implements Transport {
  readonly name: TransportName = 'websocket';
  stopped = false;
  readonly since: string;
  /** Each `update`: `+chan@position` / `-chan`. */
  readonly updates: string[] = [];
  constructor(readonly ctx: TransportContext) {
    this.since = ctx.position();
  }
  start(): void {}
  stop(): void {
    this.stopped = true;
  }
  update(added: readonly string[], removed: readonly string[]): boolean {
    for (const c of removed) this.updates.push('-' + c);
    for (const c of added) this.updates.push(`+${c}@${this.ctx.position()}`);
    return true;
  }
  publish(channel: string): Promise<PublishResult> {
    return Promise.resolve({ channel, id: 'e-99' });
  }
}

function install(): Fake[] {
  const made: Fake[] = [];
  for (const name of Object.keys(FACTORIES) as TransportName[]) {
    FACTORIES[name] = {
      unavailable: () => null,
      create: (ctx) => {
        const t = new Fake(ctx);
        made.push(t);
        return t;
      },
    };
  }
  return made;
}

const env = (channel: string, n: number): Envelope => ({ channel, id: `e-${n}`, event: 'message', data: `m${n}`, time: 1 });
const tick = (ms = 5) => new Promise((r) => setTimeout(r, ms));
const URL_ = 'http://comet.test';

/** Answers the anchoring polls: every channel at `e-0`. */
const anchorFetch: typeof fetch = async (input) => {
  const url = new URL(String(input));
  const channels = url.pathname.replace('/sub/', '').split(',');
  const cursor = channels.length === 1 ? 'e-0' : channels.map((c) => `${c}=e-0`).join(',');
  return new Response(JSON.stringify({ messages: [], cursor }), { status: 200 });
};

/** Records what the hub posts to each tab. */
function peers() {
  const inbox: Record<string, ToTab[]> = {};
  const peer = (id: string): Peer => ({ post: (m) => void (inbox[id] ??= []).push(m) });
  const msgs = (id: string) => (inbox[id] ?? []).flatMap((m) => (m.t === 'msg' ? [`${m.env.channel} ${m.env.id}`] : []));
  return { inbox, peer, msgs };
}

const sync = (tab: string, channels: { channel: string; since?: string }[]) =>
  ({ t: 'sync', tab, channels, events: [], frames: false }) as const;

test('the hub routes each channel to the tabs that subscribed, once each; one tab leaving does not touch another', async () => {
  const made = install();
  const hub = new Hub(() => new Client(URL_, { transports: ['websocket'] }), undefined);
  const { inbox, peer, msgs } = peers();
  hub.receive(sync('t1', [{ channel: 'a', since: 'e-0' }]), peer('t1'));
  await tick();
  // Tabs that arrive while the connection opens join it, rather than restart it.
  hub.receive(sync('t2', [{ channel: 'a', since: 'e-0' }]), peer('t2'));
  hub.receive(sync('t3', [{ channel: 'b', since: 'e-0' }]), peer('t3'));
  await tick();
  assert.equal(made.length, 1, 'one connection for three tabs');
  const t = made[0]!;
  assert.equal(t.since, 'a=e-0', 'resumed from the cursor the tab gave');
  t.ctx.sink.opened();
  await tick();
  assert.deepEqual(t.updates, ['+b@a=e-0,b=e-0'], 'a channel added while opening is subscribed in place, from its cursor');
  t.ctx.sink.message(env('a', 1));
  t.ctx.sink.message(env('b', 1));
  t.ctx.sink.message(env('a', 1)); // a duplicate on the connection
  t.ctx.sink.message(env('a', 2));
  assert.deepEqual(msgs('t1'), ['a e-1', 'a e-2']);
  assert.deepEqual(msgs('t2'), ['a e-1', 'a e-2']);
  assert.deepEqual(msgs('t3'), ['b e-1']);
  assert.ok(inbox['t3']!.some((m) => m.t === 'state' && m.state.state === 'open'), 'tabs hear the connection state');

  hub.receive(sync('t1', []), peer('t1')); // t1 unsubscribes: t2 still wants a
  await tick();
  t.ctx.sink.message(env('a', 3));
  assert.deepEqual(msgs('t1'), ['a e-1', 'a e-2']);
  assert.deepEqual(msgs('t2'), ['a e-1', 'a e-2', 'a e-3']);
  assert.deepEqual(t.updates.slice(1), [], 'the channel stays while a tab wants it');

  hub.receive({ t: 'bye', tab: 't2' }, peer('t2')); // t2 goes: nobody wants a
  await tick();
  assert.deepEqual(t.updates.slice(1), ['-a']);
  assert.equal(hub.tabCount, 2);

  hub.receive({ t: 'call', tab: 't3', ref: 7, channel: 'b', data: 'hi' }, peer('t3'));
  await tick();
  assert.deepEqual(inbox['t3']!.at(-1), { t: 'reply', ref: 7, result: { channel: 'b', id: 'e-99' } });
  hub.stop();
  assert.ok(t.stopped);
});

test('the hub forwards the server gap notice, presence and server unsubscribes to the channel tabs only', async () => {
  const made = install();
  const hub = new Hub(() => new Client(URL_, { transports: ['websocket'] }), undefined);
  const { inbox, peer } = peers();
  hub.receive(sync('t1', [{ channel: 'a', since: 'e-0' }]), peer('t1'));
  hub.receive(sync('t2', [{ channel: 'b', since: 'e-0' }]), peer('t2'));
  await tick();
  const t = made[0]!;
  t.ctx.sink.opened();
  await tick();
  t.ctx.sink.gap('a');
  t.ctx.sink.presence(true, { channel: 'a', client: 'x', user: 'u' });
  t.ctx.sink.unsubscribed('a');
  const kinds = (id: string) => inbox[id]!.filter((m) => m.t !== 'state').map((m) => m.t);
  assert.deepEqual(kinds('t1'), ['gap', 'presence', 'unsubscribed']);
  assert.deepEqual(kinds('t2'), []);
  hub.stop();
});

// ---------------------------------------------------------------- three tabs, Web Locks

/** An in-memory Web Locks manager: exclusive locks granted in request order. */
function fakeLocks(): LockManager {
  const held = new Set<string>();
  const queues = new Map<string, { cb: LockGrantedCallback; resolve: (v: unknown) => void }[]>();
  const pump = (name: string) => {
    const q = queues.get(name) ?? [];
    if (held.has(name) || !q.length) return;
    const e = q.shift()!;
    held.add(name);
    void Promise.resolve()
      .then(() => e.cb({ name, mode: 'exclusive' } as Lock))
      .then(
        (v) => e.resolve(v),
        () => e.resolve(undefined),
      )
      .finally(() => {
        held.delete(name);
        pump(name);
      });
  };
  return {
    request(name: string, a: LockOptions | LockGrantedCallback, b?: LockGrantedCallback) {
      const cb = (b ?? a) as LockGrantedCallback;
      const signal = b ? (a as LockOptions).signal : undefined;
      return new Promise((resolve, reject) => {
        const entry = { cb, resolve };
        const q = queues.get(name) ?? [];
        queues.set(name, q);
        q.push(entry);
        signal?.addEventListener('abort', () => {
          const i = q.indexOf(entry);
          if (i >= 0) {
            q.splice(i, 1);
            reject(new Error('AbortError'));
          }
        });
        pump(name);
      });
    },
    query: () => Promise.resolve({ held: [], pending: [] }),
  } as unknown as LockManager;
}

const realFetch = globalThis.fetch;
afterEach(() => {
  globalThis.fetch = realFetch;
});

test('Web Locks: tabs elect one holder; when it closes the next takes over from the tabs cursors, no gap, no duplicate', async () => {
  const made = install();
  const locks = fakeLocks();
  Object.defineProperty(SHARING, 'SharedWorker', { value: undefined, configurable: true });
  SHARING.locks = () => locks;
  globalThis.fetch = anchorFetch;
  const got: Record<string, string[]> = { c1: [], c2: [], c3: [] };
  const tab = (name: string, channel: string) => {
    const c = new Client(URL_, { shared: true, transports: ['websocket'] });
    c.subscribe(channel, { onMessage: (m) => got[name]!.push(`${m.channel} ${m.id}`) });
    return c;
  };
  const c1 = tab('c1', 'a');
  await tick(30);
  const c2 = tab('c2', 'b');
  const c3 = tab('c3', 'a');
  await tick(30);
  assert.equal(c1.sharing, 'locks');
  assert.equal(made.length, 1, 'one connection, held by the first tab');
  const first = made[0]!;
  first.ctx.sink.opened();
  await tick(30);
  for (const c of [c1, c2, c3]) assert.equal(c.state, 'open');
  first.ctx.sink.message(env('a', 1));
  first.ctx.sink.message(env('b', 1));
  first.ctx.sink.message(env('a', 2));
  await tick(30);
  assert.deepEqual(got, { c1: ['a e-1', 'a e-2'], c2: ['b e-1'], c3: ['a e-1', 'a e-2'] });

  c1.close(); // the leader goes: its connection ends, c2 (next in line for the lock) takes over
  await tick(50);
  assert.ok(first.stopped);
  assert.equal(made.length, 2, 'one new connection');
  const second = made[1]!;
  second.ctx.sink.opened();
  await tick(30);
  const resumed = [second.since, ...second.updates].join(' ');
  assert.match(resumed, /b=e-1/, `b resumes from the tabs cursor: ${resumed}`);
  assert.match(resumed, /a=e-2/, `a resumes from the tabs cursor: ${resumed}`);
  // The server replays from those cursors (what was published during the takeover), then live.
  second.ctx.sink.message(env('a', 2)); // a duplicate a tab already has
  second.ctx.sink.message(env('a', 3));
  second.ctx.sink.message(env('b', 2));
  await tick(30);
  assert.deepEqual(got, { c1: ['a e-1', 'a e-2'], c2: ['b e-1', 'b e-2'], c3: ['a e-1', 'a e-2', 'a e-3'] });
  assert.equal(c3.state, 'open');
  c2.close();
  c3.close();
  await tick(30);
});

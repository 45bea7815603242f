// The client's connection logic against fake transports and a fake server (no network).
import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { Client, FACTORIES } from '../../src/client.js';
import type { Envelope, Message, StateChange, Transport, TransportContext, TransportFactory, TransportName } from '../../src/types.js';

/** A fake transport: records its context; the test drives its sink. */
class Fake implements Transport {
  stopped = false;
  constructor(readonly name: TransportName, readonly ctx: TransportContext, readonly since: string) {}
  start(): void {}
  stop(): void {
    this.stopped = true;
  }
}

function install(behaviour: Partial<Record<TransportName, 'missing' | 'refuse' | 'ok'>>) {
  const made: Fake[] = [];
  for (const name of Object.keys(FACTORIES) as TransportName[]) {
    const how = behaviour[name] ?? 'ok';
    const f: TransportFactory = {
      unavailable: () => (how === 'missing' ? `${name} is not available` : null),
      create: (ctx) => {
        const t = new Fake(name, ctx, ctx.position());
        made.push(t);
        if (how === 'refuse') t.start = () => ctx.sink.ended('refused by a proxy');
        return t;
      },
    };
    FACTORIES[name] = f;
  }
  return made;
}

/** Answers the anchoring polls: every channel at `e-0`. */
const fakeFetch: typeof fetch = async (input) => {
  const url = new URL(String(input));
  const channels = url.pathname.replace('/sub/', '').split(',');
  const cursor = channels.length === 1 ? 'e-0' : channels.map((c) => `${c}=e-0`).join(',');
  return new Response(JSON.stringify({ messages: [], cursor }), { status: 200 });
};

const env = (channel: string, n: number, epoch = 'e'): Envelope => ({ channel, id: `${epoch}-${n}`, event: 'message', data: `m${n}`, time: 1 });
const tick = (ms = 5) => new Promise((r) => setTimeout(r, ms));

function client(made: Fake[], transports?: TransportName[]) {
  const states: StateChange[] = [];
  const c = new Client('http://comet.test', { transports, fetch: fakeFetch, backoff: { base: 1, max: 4 } });
  c.on('state', (s) => states.push(s));
  return { c, states, last: () => made[made.length - 1]! };
}

test('falls back past a missing and a refused transport, and says why', async () => {
  const made = install({ websocket: 'missing', sse: 'refuse' });
  const { c, states, last } = client(made);
  c.subscribe('a', {});
  await tick();
  assert.equal(last().name, 'stream');
  last().ctx.sink.opened();
  const reasons = states.map((s) => `${s.state} ${s.transport} ${s.reason ?? ''}`.trim());
  assert.deepEqual(reasons, [
    'connecting sse websocket failed: websocket is not available',
    'connecting stream sse failed: refused by a proxy',
    'open stream',
  ]);
  c.close();
  assert.equal(states[states.length - 1]!.state, 'closed');
  assert.ok(last().stopped);
});

test('subscriptions made together share one connection', async () => {
  const made = install({});
  const { c } = client(made, ['sse']);
  c.subscribe('a', {});
  c.subscribe('b', {});
  c.subscribe('a', {});
  await tick();
  assert.equal(made.length, 1);
  assert.deepEqual(made[0]!.ctx.channels, ['a', 'b']);
  assert.equal(made[0]!.since, 'a=e-0,b=e-0', 'anchored: every channel has a cursor from the start');
  c.close();
});

test('resumes with its cursors after a drop, delivering each message once and in order', async () => {
  const made = install({});
  const { c, states, last } = client(made, ['stream']);
  const got: string[] = [];
  c.subscribe('a', { onMessage: (m: Message) => got.push(m.id) });
  c.subscribe('b', { onMessage: (m: Message) => got.push(m.id + '@b') });
  await tick();
  const first = last();
  first.ctx.sink.opened();
  for (const n of [1, 2, 3]) first.ctx.sink.message(env('a', n));
  first.ctx.sink.ended('server asked to reconnect');
  assert.ok(first.stopped);
  const reconnecting = states[states.length - 1]!;
  assert.equal(reconnecting.state, 'reconnecting');
  assert.match(reconnecting.reason!, /stream: server asked to reconnect/);
  assert.ok(reconnecting.delay! >= 0 && reconnecting.delay! <= 1);
  first.ctx.sink.message(env('a', 4)); // a stopped transport is ignored
  await tick(20);
  const second = last();
  assert.notEqual(second, first);
  assert.equal(second.since, 'a=e-3,b=e-0');
  second.ctx.sink.opened();
  for (const n of [2, 3, 4, 5]) second.ctx.sink.message(env('a', n));
  second.ctx.sink.message(env('b', 1));
  assert.deepEqual(got, ['e-1', 'e-2', 'e-3', 'e-4', 'e-5', 'e-1@b']);
  c.close();
});

test('gaps: a notice, and a new epoch without one', async () => {
  const made = install({});
  const { c, last } = client(made, ['websocket']);
  const gaps: string[] = [];
  const got: string[] = [];
  c.subscribe('a', { onMessage: (m) => got.push(m.id), onGap: (g) => gaps.push(`${g.reason} after ${g.after}`) });
  await tick();
  const t = last();
  t.ctx.sink.opened();
  t.ctx.sink.message(env('a', 1));
  t.ctx.sink.gap('a');
  t.ctx.sink.message(env('a', 1, 'f'));
  t.ctx.sink.message(env('a', 1, 'fa'));
  assert.deepEqual(gaps, ['history after e-1', 'epoch after f-1']);
  assert.deepEqual(got, ['e-1', 'f-1', 'fa-1']);
  c.close();
});

test('a transport that keeps failing backs off; a full round of failures starts over from the first', async () => {
  const made = install({ websocket: 'refuse', sse: 'refuse' });
  const { c, states } = client(made, ['websocket', 'sse']);
  c.subscribe('a', {});
  await tick(60);
  c.close();
  const names = made.map((t) => t.name);
  assert.ok(names.length >= 6, `several rounds: ${names}`);
  assert.deepEqual(names.slice(0, 4), ['websocket', 'sse', 'websocket', 'sse']);
  const waits = states.filter((s) => s.delay !== undefined);
  assert.ok(waits.length >= 2);
  assert.ok(waits.every((s) => s.delay! <= 4), 'bounded by max');
  assert.deepEqual(waits.map((s) => s.attempt).slice(0, 3), [1, 2, 3]);
});

test('unsubscribing the last channel goes idle; a bad name is refused at once', async () => {
  const made = install({});
  const { c, states } = client(made, ['sse']);
  const s = c.subscribe('a', {});
  await tick();
  made[0]!.ctx.sink.opened();
  s.unsubscribe();
  await tick();
  assert.ok(made[0]!.stopped);
  assert.equal(states[states.length - 1]!.state, 'idle');
  assert.throws(() => c.subscribe('bad name', {}), TypeError);
  assert.throws(() => c.subscribe('a', { since: 'yesterday' }), TypeError);
  assert.throws(() => new Client('http://x', { transports: ['carrier-pigeon' as TransportName] }), TypeError);
  c.close();
});

test('a hole (skipped offsets, no gap notice) is repaired with one poll, in order', async () => {
  const made = install({});
  const polls: string[] = [];
  const server: Record<string, Envelope[]> = { 'e-1': [env('a', 2), env('a', 3)], 'e-5': [env('a', 7)] };
  const f: typeof fetch = async (input) => {
    const url = new URL(String(input));
    const since = url.searchParams.get('since') ?? '';
    polls.push(since);
    const messages = server[since] ?? [];
    const cursor = messages.length ? messages[messages.length - 1]!.id : 'e-0';
    return new Response(JSON.stringify({ messages, cursor }), { status: 200 });
  };
  const c = new Client('http://comet.test', { transports: ['sse'], fetch: f });
  const got: string[] = [];
  const gaps: string[] = [];
  c.subscribe('a', { onMessage: (m) => got.push(m.id), onGap: (g) => gaps.push(`${g.reason} after ${g.after}`) });
  await tick();
  const t = made[made.length - 1]!;
  t.ctx.sink.opened();
  t.ctx.sink.message(env('a', 1));
  t.ctx.sink.message(env('a', 3)); // e-2 went missing (say, a named event nobody listened for)
  t.ctx.sink.message(env('a', 4)); // arrives while the repair runs: held, then delivered in order
  await tick(20);
  assert.deepEqual(got, ['e-1', 'e-2', 'e-3', 'e-4']);
  assert.deepEqual(polls, ['', 'e-1']);
  t.ctx.sink.message(env('a', 5));
  t.ctx.sink.message(env('a', 7)); // e-6 is gone for good: the repair finds only e-7
  await tick(20);
  assert.deepEqual(got, ['e-1', 'e-2', 'e-3', 'e-4', 'e-5', 'e-7']);
  assert.deepEqual(gaps, ['missed after e-5'], 'never a silent gap');
  c.close();
});

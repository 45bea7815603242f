// comet.js in real Chromium against a real `comet serve`, through a proxy: for each of the six
// transports forced on its own, subscribe to two channels (one shared connection), receive in
// order, lose the connection twice (the server drops it; then the network goes away for a while)
// while messages keep being published, and check that every message arrives exactly once, in
// order. Then: fallback when the proxy refuses WebSocket upgrades; publish from a page to an SSE
// subscriber in another page; navigator.onLine going false and true again.
import { strict as assert } from 'node:assert';
import { after, before, test } from 'node:test';
import { launch, openPage, startComet, startProxy, waitIn, within } from './harness.mjs';

let comet, proxy, blocked, browser;

before(async () => {
  comet = await startComet();
  proxy = await startProxy(comet.url);
  blocked = await startProxy(comet.url, { refuseUpgrades: true });
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await proxy?.stop();
  await blocked?.stop();
  await comet?.stop();
});

/** A page on `base` with a client on `transports`, subscribed to `channels`, recording. */
async function clientPage(base, transports, channels, extra = {}) {
  const context = await browser.newContext();
  const { page, errors } = await openPage(context, base + '/__test.html');
  await page.evaluate(
    ({ transports, channels, extra }) => {
      window.got = [];
      window.gaps = [];
      window.states = [];
      const c = (window.client = new Comet.Client(location.origin, {
        transports,
        pollInterval: 300,
        backoff: { base: 300, max: 2000 },
        heartbeatTimeout: 3500,
        ...extra,
      }));
      c.on('state', (s) => window.states.push(s));
      window.log = [];
      c.on('state', (s) => window.log.push(`${Date.now() % 100000} state ${JSON.stringify(s)}`));
      c.on('frame', (f) => window.log.push(`${Date.now() % 100000} ${f.transport} ${f.direction} ${f.text.slice(0, 300)}`));
      for (const ch of channels) {
        c.subscribe(ch, {
          events: ['say'],
          onMessage: (m) => window.got.push(`${m.channel} ${m.event} ${m.data}`),
          onGap: (g) => window.gaps.push(g),
        });
      }
    },
    { transports, channels, extra },
  );
  return { context, page, errors };
}

const received = (page, n, what) => waitIn(page, what, (n) => window.got.length >= n, n, 20000);
const states = (page) => page.evaluate(() => window.states.map((s) => `${s.state}:${s.transport}`));

const only = process.env.TRANSPORTS?.split(',');
for (const transport of ['websocket', 'sse', 'stream', 'iframe', 'longpoll', 'poll'].filter((t) => !only || only.includes(t))) {
  test(`${transport}: in order, exactly once, across a server drop and a network outage`, { timeout: 90000 }, async () => {
    const a = `t:${transport}:a`;
    const b = `t:${transport}:b`;
    const { context, page, errors } = await clientPage(proxy.url, [transport], [a, b]);
    try {
      await waitIn(page, `${transport} to open`, () => window.client.state === 'open');
      const expected = [];
      let n = 0;
      const publish = async (count) => {
        for (let i = 0; i < count; i++) {
          n += 1;
          const ch = n % 3 === 0 ? b : a;
          await comet.publish(ch, `m${n}`);
          expected.push(`${ch} message m${n}`);
        }
      };
      // 1. live
      await publish(6);
      await received(page, expected.length, 'the first messages');
      process.env.DEBUG_T && console.log('phase 1 ok', await states(page));
      // 2. the server drops every connection (as a restart would), and publishing goes on
      await comet.disconnectAll();
      await publish(6);
      await received(page, expected.length, 'the messages published during the server drop');
      // 3. the network goes away for 1.5 s (connections die, new ones fail), publishing goes on
      proxy.cut(1500);
      await publish(6);
      await new Promise((r) => setTimeout(r, 1600));
      await publish(3);
      await received(page, expected.length, 'the messages published during the outage');
      await new Promise((r) => setTimeout(r, 700)); // anything doubled would arrive by now
      const got = await page.evaluate(() => window.got);
      // Order is per channel (each channel is its own log; a resume replays channel by channel).
      for (const ch of [a, b]) {
        const mine = (list) => list.filter((line) => line.startsWith(ch + ' '));
        assert.deepEqual(mine(got), mine(expected), `${ch}: every message exactly once, in order`);
      }
      assert.equal(got.length, expected.length, 'nothing else');
      // No gap notice at all: nothing was lost. (Regression: the memory broker's sweep used to
      // recreate a quiet channel with a new epoch, turning a valid cursor into a false gap.)
      const gaps = await page.evaluate(() => window.gaps);
      assert.deepEqual(gaps, [], 'no gap notice');
      const seen = await states(page);
      assert.ok(seen.every((s) => s.endsWith(':' + transport) || s.endsWith(':null')), `only ${transport}: ${seen}`);
      assert.ok(seen.includes(`reconnecting:${transport}`), `it reconnected: ${seen}`);
      assert.equal(seen[seen.length - 1], `open:${transport}`, `open again at the end: ${seen}`);
      assert.deepEqual(errors.filter((e) => !/ERR_|Failed to load resource|net::|WebSocket connection to/.test(e)), [], 'no page errors');
    } catch (e) {
      // What the client saw, to tell a client bug from a server one.
      console.log((await page.evaluate(() => window.log).catch(() => [])).join('\n'));
      throw e;
    } finally {
      await page.evaluate(() => window.client.close()).catch(() => {});
      await context.close();
    }
  });
}

test('falls back to SSE when the proxy refuses WebSocket upgrades, and says why', { timeout: 60000 }, async () => {
  const ch = 't:fallback';
  const { context, page } = await clientPage(blocked.url, undefined, [ch]);
  try {
    await waitIn(page, 'a transport to open', () => window.client.state === 'open');
    const all = await page.evaluate(() => window.states);
    const open = all[all.length - 1];
    assert.equal(open.transport, 'sse', `fell back to SSE: ${JSON.stringify(all)}`);
    const why = all.find((s) => s.transport === 'sse' && s.reason);
    assert.match(why.reason, /^websocket failed: WebSocket failed to open/, JSON.stringify(all));
    await comet.publish(ch, 'through the proxy');
    await received(page, 1, 'a message over the fallback');
    assert.deepEqual(await page.evaluate(() => window.got), [`${ch} message through the proxy`]);
  } finally {
    await context.close();
  }
});

test('publish from one page reaches an SSE subscriber in another page', { timeout: 60000 }, async () => {
  const ch = 't:pub';
  const sub = await clientPage(proxy.url, ['sse'], [ch]);
  const pub = await clientPage(proxy.url, ['websocket'], ['t:pub:other']);
  try {
    await waitIn(sub.page, 'the SSE subscriber', () => window.client.state === 'open');
    await waitIn(pub.page, 'the publisher', () => window.client.state === 'open');
    const ids = await pub.page.evaluate(async (ch) => {
      const overWs = await window.client.publish(ch, 'hello over the WebSocket', { event: 'say' });
      // A client with no subscription has no connection: it publishes with a POST.
      const http = await new Comet.Client(location.origin).publish(ch, 'hello over HTTP');
      return [overWs, http];
    }, ch);
    assert.match(ids[0].id, /^[0-9a-f]+-\d+$/);
    assert.match(ids[1].id, /^[0-9a-f]+-\d+$/);
    await received(sub.page, 2, 'both messages at the subscriber');
    assert.deepEqual(await sub.page.evaluate(() => window.got), [
      `${ch} say hello over the WebSocket`,
      `${ch} message hello over HTTP`,
    ]);
    const frames = await pub.page.evaluate(() => window.client.transportName);
    assert.equal(frames, 'websocket');
  } finally {
    await sub.context.close();
    await pub.context.close();
  }
});

test('sse: a named event nobody declared is recovered (by cursor) when the next message shows the hole', { timeout: 60000 }, async () => {
  const ch = 't:named';
  const { context, page } = await clientPage(proxy.url, ['sse'], [ch], { events: [] });
  try {
    await page.evaluate((ch) => {
      window.got2 = [];
      window.client.subscribe(ch, { onMessage: (m) => window.got2.push(`${m.event} ${m.data}`) }); // no `events`
    }, ch);
    await waitIn(page, 'open', () => window.client.state === 'open');
    await comet.publish(ch, 'one');
    await comet.publish(ch, 'two', 'shout'); // an EventSource without a 'shout' listener drops it
    await comet.publish(ch, 'three');
    await waitIn(page, 'all three', () => window.got2.length >= 3);
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(await page.evaluate(() => window.got2), ['message one', 'shout two', 'message three']);
  } finally {
    await context.close();
  }
});

test('navigator.onLine: waits while offline, resumes at once when back online', { timeout: 60000 }, async () => {
  const ch = 't:offline';
  const { context, page } = await clientPage(proxy.url, ['stream'], [ch]);
  try {
    await waitIn(page, 'open', () => window.client.state === 'open');
    await comet.publish(ch, 'before');
    await received(page, 1, 'before');
    await context.setOffline(true);
    await waitIn(page, 'offline state', () => window.states.some((s) => s.reason === 'offline'));
    await comet.publish(ch, 'while offline');
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(await page.evaluate(() => window.got.length), 1, 'nothing arrives while offline');
    await context.setOffline(false);
    await received(page, 2, 'the message published while offline');
    assert.deepEqual(await page.evaluate(() => window.got), [`${ch} message before`, `${ch} message while offline`]);
    const last = await page.evaluate(() => window.states[window.states.length - 1]);
    assert.equal(last.state, 'open');
  } finally {
    await context.close();
  }
});

test('a page that becomes visible again polls at once instead of sitting out its interval', { timeout: 60000 }, async () => {
  const ch = 't:visible';
  const { context, page } = await clientPage(proxy.url, ['poll'], [ch], { pollInterval: 60000 });
  try {
    await waitIn(page, 'open', () => window.client.state === 'open');
    await comet.publish(ch, 'while hidden');
    await page.waitForTimeout(500);
    assert.equal(await page.evaluate(() => window.got.length), 0, 'the next poll is a minute away');
    await page.evaluate(() => document.dispatchEvent(new Event('visibilitychange'))); // the page is visible
    await waitIn(page, 'the message, polled at once', () => window.got.length === 1, undefined, 3000);
  } finally {
    await context.close();
  }
});

test('the bundle loads as an ES module too', { timeout: 30000 }, async () => {
  const context = await browser.newContext();
  const { page, errors } = await openPage(context, proxy.url + '/__test.html');
  try {
    const names = await within(10000, 'import /comet.mjs', page.evaluate(async () => Object.keys(await import('/comet.mjs')).sort()));
    assert.ok(names.includes('Client') && names.includes('CometError'), String(names));
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
  }
});

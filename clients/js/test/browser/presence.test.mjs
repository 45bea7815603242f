// comet.js presence in real Chromium against a real `comet serve` (docs/protocol.md "Presence"):
// pages on WebSocket, SSE and HTTP streaming in a namespace with presence and join_leave on;
// each sees the others join and leave through onJoin/onLeave, and client.presence() lists who is
// there.
import { strict as assert } from 'node:assert';
import { after, before, test } from 'node:test';
import { launch, openPage, startCometWith, startProxy, waitIn } from './harness.mjs';

let comet, proxy, browser;

before(async () => {
  comet = await startCometWith('[namespace."lobby"]\npresence = true\njoin_leave = true\n');
  proxy = await startProxy(comet.url);
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await proxy?.stop();
  await comet?.stop();
});

/** A page whose client, on `transport`, is subscribed to `channel` and records joins and leaves. */
async function member(transport, channel) {
  const context = await browser.newContext();
  const { page, errors } = await openPage(context, proxy.url + '/__test.html');
  await page.evaluate(
    ({ transport, channel }) => {
      window.seen = [];
      const c = (window.client = new Comet.Client(location.origin, { transports: [transport], heartbeatTimeout: 3500 }));
      c.subscribe(channel, {
        onJoin: (e) => window.seen.push(`join ${e.channel} ${e.client}`),
        onLeave: (e) => window.seen.push(`leave ${e.channel} ${e.client}`),
      });
    },
    { transport, channel },
  );
  await waitIn(page, `the ${transport} client`, () => window.client.state === 'open');
  return { context, page, errors };
}

test('pages see each other join and leave on every streaming transport, and presence() lists them', { timeout: 90000 }, async () => {
  const ch = 'lobby:js';
  const presence = (page) => page.evaluate((ch) => window.client.presence(ch), ch);
  const ws = await member('websocket', ch);
  const sse = await member('sse', ch);
  const stream = await member('stream', ch);
  try {
    const listed = await presence(ws.page);
    assert.deepEqual(listed.map((e) => e.transport).sort(), ['sse', 'stream', 'ws']);
    assert.ok(listed.every((e) => e.user === '' && typeof e.client === 'string' && e.since > 0), JSON.stringify(listed));
    const id = (transport) => listed.find((e) => e.transport === transport).client;
    await waitIn(ws.page, 'the joins of the SSE and stream pages', () => window.seen.length >= 2);
    assert.deepEqual(await ws.page.evaluate(() => window.seen), [`join ${ch} ${id('sse')}`, `join ${ch} ${id('stream')}`]);
    await waitIn(sse.page, 'the join of the stream page', () => window.seen.length >= 1);
    assert.deepEqual(await sse.page.evaluate(() => window.seen), [`join ${ch} ${id('stream')}`]);

    await stream.context.close();
    for (const { page } of [ws, sse]) {
      await waitIn(page, 'the leave of the stream page', () => window.seen.some((s) => s.startsWith('leave')));
      const seen = await page.evaluate(() => window.seen);
      assert.equal(seen.at(-1), `leave ${ch} ${id('stream')}`);
      assert.equal(seen.filter((s) => s.startsWith('leave')).length, 1, 'one leave');
    }
    assert.deepEqual((await presence(sse.page)).map((e) => e.transport).sort(), ['sse', 'ws']);
    // A long poller is a member too, the same one across its requests (it sends its id back).
    const lp = await member('longpoll', ch);
    try {
      await new Promise((r) => setTimeout(r, 1500));
      const lps = (await presence(ws.page)).filter((e) => e.transport === 'longpoll');
      assert.equal(lps.length, 1, JSON.stringify(lps));
      await waitIn(ws.page, 'the long poller join', (id) => window.seen.includes(`join lobby:js ${id}`), lps[0].client);
      const joins = await ws.page.evaluate(() => window.seen.filter((s) => s.startsWith('join')).length);
      assert.equal(joins, 3, 'one join per page');
    } finally {
      await lp.context.close();
    }
    const off = await ws.page.evaluate(() => window.client.presence('other:x').then(() => 'no error', (e) => e.code));
    assert.equal(off, 'presence_off');
    for (const { errors } of [ws, sse]) {
      assert.deepEqual(errors.filter((e) => !/ERR_|Failed to load resource|net::/.test(e)), [], 'no page errors');
    }
  } finally {
    await ws.context.close();
    await sse.context.close();
  }
});

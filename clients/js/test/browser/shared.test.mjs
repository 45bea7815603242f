// comet.js with `shared: true` in real Chromium against a real `comet serve` (issue 21): the tabs
// of one origin share one connection — a SharedWorker, or (SharedWorker removed by an init
// script) the tab that holds a Web Lock — and the server's `comet_connections_open` gauge proves
// it. The tab holding the connection goes away while messages keep being published: the others
// keep receiving every message exactly once, in order.
import { strict as assert } from 'node:assert';
import { after, before, test } from 'node:test';
import { launch, openPage, startComet, startProxy, waitIn, within } from './harness.mjs';

let comet, proxy, browser;

before(async () => {
  comet = await startComet();
  proxy = await startProxy(comet.url);
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await proxy?.stop();
  await comet?.stop();
});

/** `comet_connections_open` by transport, from the server's /metrics. */
async function connections() {
  const text = await (await fetch(comet.url + '/metrics')).text();
  const out = {};
  for (const m of text.matchAll(/^comet_connections_open\{transport="([a-z]+)"\} (\d+)$/gm)) out[m[1]] = Number(m[2]);
  return out;
}

/** Waits (bounded) until the server holds exactly one connection, a WebSocket (label `ws`), and it stays so
 *  for `steady` ms; fails with the last counts seen. */
async function oneWebSocket(what, steady = 600) {
  const deadline = Date.now() + 15000;
  let seen = {};
  let since = 0;
  while (Date.now() < deadline) {
    seen = await connections();
    const total = Object.values(seen).reduce((a, b) => a + b, 0);
    if (seen.ws === 1 && total === 1) {
      since ||= Date.now();
      if (Date.now() - since >= steady) return;
    } else since = 0;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.fail(`${what}: expected one WebSocket connection on the server, saw ${JSON.stringify(seen)}`);
}

async function subscribers(channel) {
  return (await (await fetch(`${comet.url}/channels/${channel}`)).json()).subscribers;
}

/** A tab of `context` whose shared client is subscribed to `channel`, recording what it gets. */
async function tab(context, channel, extra = {}) {
  const { page, errors } = await openPage(context, proxy.url + '/__test.html');
  await page.evaluate(({ channel, extra }) => {
    window.got = [];
    window.gaps = [];
    window.states = [];
    const c = (window.client = new Comet.Client(location.origin, {
      shared: true,
      heartbeatTimeout: 3500,
      backoff: { base: 300, max: 2000 },
      ...extra,
    }));
    c.on('state', (s) => window.states.push(`${s.state}:${s.transport}${s.reason ? ' ' + s.reason : ''}`));
    window.sub = c.subscribe(channel, {
      onMessage: (m) => window.got.push(`${m.channel} ${m.data}`),
      onGap: (g) => window.gaps.push(g),
    });
  }, { channel, extra });
  await waitIn(page, `the tab on ${channel} to open`, () => window.client.state === 'open');
  return { page, errors, channel };
}

const got = (t) => t.page.evaluate(() => window.got);

/** Waits until tab `t` has received `n` messages, then checks they are exactly `want`. */
async function receivedExactly(t, want, what) {
  await waitIn(t.page, `${what}: ${want.length} messages on ${t.channel}`, (n) => window.got.length >= n, want.length);
  await new Promise((r) => setTimeout(r, 300)); // a duplicate would arrive right behind
  assert.deepEqual(await got(t), want, `${what}: the tab on ${t.channel} receives each message once, in order`);
  assert.deepEqual(await t.page.evaluate(() => window.gaps), [], `${what}: no gap on ${t.channel}`);
}

function noPageErrors(tabs) {
  for (const t of tabs) assert.deepEqual(t.errors.filter((e) => !/ERR_|Failed to load resource|net::/.test(e)), [], 'no page errors');
}

/**
 * Publishes to `channels` in turn every ~15 ms until `stop()` resolves, and returns what each
 * channel's subscribers must have received.
 */
function publishing(channels) {
  const want = Object.fromEntries(channels.map((c) => [c, []]));
  let n = 0;
  let running = true;
  const done = (async () => {
    while (running) {
      n += 1;
      const ch = channels[n % channels.length];
      await comet.publish(ch, `m${n}`);
      want[ch].push(`${ch} m${n}`);
      await new Promise((r) => setTimeout(r, 15));
    }
  })();
  return {
    want,
    async stop() {
      running = false;
      await within(5000, 'the publisher to stop', done);
      return want;
    },
  };
}

test('SharedWorker: three tabs on three channels share one WebSocket; each gets its messages once; publish goes through it', { timeout: 90000 }, async () => {
  const context = await browser.newContext();
  try {
    const tabs = [];
    for (const ch of ['w:a', 'w:b', 'w:c']) tabs.push(await tab(context, ch));
    for (const t of tabs) assert.equal(await t.page.evaluate(() => window.client.sharing), 'worker');
    await oneWebSocket('three shared tabs');
    const want = {};
    for (let i = 1; i <= 5; i++) {
      for (const t of tabs) {
        await comet.publish(t.channel, `m${i}`);
        (want[t.channel] ??= []).push(`${t.channel} m${i}`);
      }
    }
    // A publish from a tab goes over the shared WebSocket (answered by its ack, with the cursor).
    const id = await tabs[1].page.evaluate(() => window.client.publish('w:b', 'from the tab').then((r) => r.id));
    assert.match(id, /^[0-9a-f]+-\d+$/);
    want['w:b'].push('w:b from the tab');
    for (const t of tabs) await receivedExactly(t, want[t.channel], 'worker');
    const states = await tabs[2].page.evaluate(() => window.states);
    assert.equal(states.at(-1), 'open:websocket', JSON.stringify(states));
    noPageErrors(tabs);
  } finally {
    await context.close();
  }
});

test('the ES module build serves as a module worker', { timeout: 60000 }, async () => {
  const context = await browser.newContext();
  try {
    const tabs = [];
    for (const ch of ['m:a', 'm:b']) {
      const { page, errors } = await openPage(context, proxy.url + '/__test.html');
      await page.evaluate(async (ch) => {
        const { Client } = await import('/comet.mjs');
        window.got = [];
        window.client = new Client(location.origin, { shared: true });
        window.client.subscribe(ch, { onMessage: (m) => window.got.push(`${m.channel} ${m.data}`) });
      }, ch);
      await waitIn(page, 'the module client to open', () => window.client.state === 'open');
      tabs.push({ page, errors, channel: ch });
    }
    for (const t of tabs) assert.equal(await t.page.evaluate(() => window.client.sharing), 'worker');
    await oneWebSocket('two module tabs');
    for (const t of tabs) await comet.publish(t.channel, 'hello');
    for (const t of tabs) {
      await waitIn(t.page, 'the message', () => window.got.length >= 1);
      assert.deepEqual(await got(t), [`${t.channel} hello`]);
    }
    noPageErrors(tabs);
  } finally {
    await context.close();
  }
});

test('a SharedWorker script that does not load: the tabs fall back to Web Locks, still one connection', { timeout: 60000 }, async () => {
  const context = await browser.newContext();
  try {
    const tabs = [];
    for (const ch of ['f:a', 'f:b']) tabs.push(await tab(context, ch, { sharedWorkerUrl: '/no-such-worker.js' }));
    for (const t of tabs) assert.equal(await t.page.evaluate(() => window.client.sharing), 'locks');
    await oneWebSocket('two tabs whose worker failed');
    for (const t of tabs) await comet.publish(t.channel, 'x');
    for (const t of tabs) await receivedExactly(t, [`${t.channel} x`], 'fallback');
  } finally {
    await context.close();
  }
});

test('two tabs on one channel each get each message once; one unsubscribing leaves the other subscribed', { timeout: 90000 }, async () => {
  const context = await browser.newContext();
  try {
    const a = await tab(context, 'w:same');
    const b = await tab(context, 'w:same');
    await oneWebSocket('two tabs on one channel');
    await comet.publish('w:same', 'one');
    await comet.publish('w:same', 'two');
    await receivedExactly(a, ['w:same one', 'w:same two'], 'same channel');
    await receivedExactly(b, ['w:same one', 'w:same two'], 'same channel');
    await a.page.evaluate(() => window.sub.unsubscribe());
    await comet.publish('w:same', 'three');
    await receivedExactly(b, ['w:same one', 'w:same two', 'w:same three'], 'after the other unsubscribed');
    assert.deepEqual(await got(a), ['w:same one', 'w:same two'], 'the unsubscribed tab gets nothing more');
    assert.equal(await subscribers('w:same'), 1, 'still one subscriber (the shared connection)');
    assert.equal(await a.page.evaluate(() => window.client.state), 'idle');
    noPageErrors([a, b]);
  } finally {
    await context.close();
  }
});

test('SharedWorker: closing the tab that started the worker keeps the worker, the one connection and every message', { timeout: 90000 }, async () => {
  const context = await browser.newContext();
  try {
    const tabs = [];
    for (const ch of ['k:a', 'k:b', 'k:c']) tabs.push(await tab(context, ch));
    await oneWebSocket('before closing the first tab');
    const pub = publishing(tabs.map((t) => t.channel));
    await new Promise((r) => setTimeout(r, 500));
    await tabs[0].page.close();
    await new Promise((r) => setTimeout(r, 1000));
    const want = await pub.stop();
    for (const t of tabs.slice(1)) await receivedExactly(t, want[t.channel], 'after the first tab closed');
    await oneWebSocket('after closing the first tab');
    // The closed tab's channel is released (its `bye`, or its life lock), the others stay.
    await within(10000, 'the closed tab channel to be left', (async () => {
      while ((await subscribers('k:a')) !== 0) await new Promise((r) => setTimeout(r, 100));
    })());
    assert.equal(await subscribers('k:b'), 1);
    noPageErrors(tabs.slice(1));
  } finally {
    await context.close();
  }
});

test('Web Locks (no SharedWorker): the leader tab closes mid-stream; the next takes over with one connection, no gap, no duplicate', { timeout: 90000 }, async () => {
  const context = await browser.newContext();
  await context.addInitScript(() => {
    delete window.SharedWorker;
  });
  try {
    const tabs = [];
    // The first tab is alone when it subscribes, so it wins the leader lock.
    for (const ch of ['l:a', 'l:b', 'l:c']) tabs.push(await tab(context, ch));
    for (const t of tabs) assert.equal(await t.page.evaluate(() => window.client.sharing), 'locks');
    await oneWebSocket('three tabs, Web Locks');
    const pub = publishing(tabs.map((t) => t.channel));
    await new Promise((r) => setTimeout(r, 600));
    await tabs[0].page.close(); // the leader: its page, its hub and its WebSocket go
    await new Promise((r) => setTimeout(r, 1500));
    const want = await pub.stop();
    assert.ok(want['l:b'].length > 30, 'messages were published before, during and after the takeover');
    for (const t of tabs.slice(1)) await receivedExactly(t, want[t.channel], 'after the takeover');
    await oneWebSocket('after the takeover');
    for (const t of tabs.slice(1)) {
      await waitIn(t.page, 'open again', () => window.client.state === 'open');
      const states = await t.page.evaluate(() => window.states);
      console.log(t.channel, JSON.stringify(states));
      assert.ok(states.some((s) => s.startsWith('reconnecting:null')), `the takeover shows: ${JSON.stringify(states)}`);
      assert.equal(states.at(-1), 'open:websocket', JSON.stringify(states));
    }
    // The new leader serves a tab that arrives after the takeover too.
    const late = await tab(context, 'l:d');
    await comet.publish('l:d', 'late');
    await receivedExactly(late, ['l:d late'], 'a tab arriving after the takeover');
    await oneWebSocket('four tabs later');
    noPageErrors(tabs.slice(1));
  } finally {
    await context.close();
  }
});

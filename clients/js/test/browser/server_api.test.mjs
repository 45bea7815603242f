// The server API's orders reaching comet.js in real Chromium against a real `comet serve`
// (docs/protocol.md "Server API"): a user disconnected with `{"reconnect":false}` stops its
// client for good on every transport, and a user unsubscribed from a channel has that
// subscription ended (onUnsubscribe) while its other channel goes on.
import { strict as assert } from 'node:assert';
import { createHmac } from 'node:crypto';
import { after, before, test } from 'node:test';
import { launch, openPage, startCometWith, startProxy, waitIn } from './harness.mjs';

const SECRET = 'comet-js-server-api-test-secret-of-32-bytes';
const KEY = 'comet-js-server-api-admin-key';
let comet, proxy, browser;

/** An HS256 JWT (RFC 7519) for `sub`, granting every channel for ten minutes. */
function token(sub) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub, exp: Math.floor(Date.now() / 1000) + 600, comet: { subscribe: ['*'], publish: ['*'] } })}`;
  return `${body}.${createHmac('sha256', SECRET).update(body).digest('base64url')}`;
}

async function admin(path, body) {
  const res = await fetch(`${comet.url}${path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
    body: body ? JSON.stringify(body) : undefined,
  });
  assert.equal(res.status, 202, path);
  return res.json();
}

before(async () => {
  comet = await startCometWith(`jwt_secret = "${SECRET}"\nadmin_api_key = "${KEY}"\n`);
  proxy = await startProxy(comet.url);
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await proxy?.stop();
  await comet?.stop();
});

/** A page whose client (as `user`, on `transport`) is subscribed to `channels`. */
async function client(transport, user, channels) {
  const context = await browser.newContext();
  const { page, errors } = await openPage(context, proxy.url + '/__test.html');
  await page.evaluate(
    ({ transport, token, channels }) => {
      window.states = [];
      window.ended = [];
      window.got = [];
      const c = (window.client = new Comet.Client(location.origin, { transports: [transport], token, heartbeatTimeout: 3500 }));
      c.on('state', (s) => window.states.push(`${s.state} ${s.reason ?? ''}`.trim()));
      for (const ch of channels) {
        c.subscribe(ch, {
          onMessage: (m) => window.got.push(`${m.channel} ${m.data}`),
          onUnsubscribe: (info) => window.ended.push(`${info.channel} ${info.reason}`),
        });
      }
    },
    { transport, token: token(user), channels },
  );
  await waitIn(page, `the ${transport} client`, () => window.client.state === 'open');
  return { context, page, errors };
}

for (const transport of ['websocket', 'sse', 'stream', 'longpoll']) {
  test(`a user disconnected with reconnect:false stops its ${transport} client for good`, { timeout: 60000 }, async () => {
    const user = `stopped-${transport}`;
    const { context, page, errors } = await client(transport, user, ['api:one']);
    try {
      // Orders reach what is open (docs/protocol.md "Server API"): a long-poll client between two
      // polls has nothing open, so the order is given again (bounded) until one reached it.
      for (let i = 0; ; i++) {
        const { connections } = await admin(`/admin/users/${user}/disconnect`, { reconnect: false });
        if (connections > 0) break;
        assert.ok(i < 40, `no connection of ${user} reached in 40 orders`);
        await new Promise((r) => setTimeout(r, 250));
      }
      await waitIn(page, 'the client to close', () => window.client.state === 'closed');
      const states = await page.evaluate(() => window.states);
      assert.equal(states.at(-1), 'closed disconnected by the server', states.join(' | '));
      // It stays closed: no reconnect, so a second order finds nothing of it.
      await new Promise((r) => setTimeout(r, 1500));
      assert.equal(await page.evaluate(() => window.client.state), 'closed');
      assert.equal((await admin(`/admin/users/${user}/disconnect`)).connections, 0);
      assert.deepEqual(errors, []);
    } finally {
      await context.close();
    }
  });
}

for (const transport of ['websocket', 'sse']) {
  test(`a user unsubscribed from a channel on ${transport} keeps its other channel`, { timeout: 60000 }, async () => {
    const user = `unsubscribed-${transport}`;
    const { context, page, errors } = await client(transport, user, [`api:a-${transport}`, `api:b-${transport}`]);
    try {
      await admin(`/admin/users/${user}/unsubscribe/api:a-${transport}`);
      await waitIn(page, 'onUnsubscribe', () => window.ended.length === 1);
      assert.deepEqual(await page.evaluate(() => window.ended), [`api:a-${transport} unsubscribed by the server`]);
      const res = await fetch(`${comet.url}/pub/api:b-${transport}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token('publisher')}` },
        body: 'still',
      });
      assert.equal(res.status, 201);
      await waitIn(page, 'the other channel', () => window.got.length === 1);
      assert.deepEqual(await page.evaluate(() => window.got), [`api:b-${transport} still`]);
      assert.equal(await page.evaluate(() => window.client.state), 'open');
      assert.deepEqual(errors, []);
    } finally {
      await context.close();
    }
  });
}

// The admin console (/admin, docs/protocol.md "Admin console") in real Chromium against a real
// `comet serve`: a wrong key is refused; signed in with the key, the node panel shows this node;
// a channel published to over HTTP shows in the channel list within seconds; its page tails
// live a message published with the console's form and one published over HTTP, even though
// the channel needs a token; history pages back and forth; presence lists the user; the
// disconnect-user action answers; and no console error. Leaves a screenshot (1280×800) in
// target/admin-console.png, or in docs/admin-console.png for the README when
// COMET_UPDATE_SCREENSHOT=1 (as demo.test.mjs does).
import { strict as assert } from 'node:assert';
import { createHmac } from 'node:crypto';
import { after, before, test } from 'node:test';
import { launch, openPage, repo, startCometWith, waitIn, within } from './harness.mjs';

const SECRET = 'comet-js-admin-console-test-secret-of-32-bytes';
const KEY = 'comet-js-admin-console-test-key';
const PUBLISHER = 'comet-js-admin-console-publisher-key';
let comet, browser;
const streams = [];
let traffic;

/** An HS256 JWT (RFC 7519) for `sub`, granting every channel for ten minutes. */
function token(sub) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub, exp: Math.floor(Date.now() / 1000) + 600, comet: { subscribe: ['*'], publish: ['*'] } })}`;
  return `${body}.${createHmac('sha256', SECRET).update(body).digest('base64url')}`;
}

/** Publishes as the back-end (the publish API key); returns the cursor. */
async function publish(channel, data) {
  const res = await fetch(`${comet.url}/pub/${channel}`, { method: 'POST', headers: { authorization: `Bearer ${PUBLISHER}` }, body: data });
  assert.equal(res.status, 201, `publish to ${channel}`);
  return (await res.json()).id;
}

/** An SSE subscriber of `channel` held open from Node (as `user`, with a token, if given). */
async function subscriber(channel, user) {
  const ctl = new AbortController();
  const headers = { accept: 'text/event-stream' };
  if (user) headers.authorization = `Bearer ${token(user)}`;
  const res = await within(5000, `subscribe ${channel}`, fetch(`${comet.url}/sub/${channel}`, { headers, signal: ctl.signal }));
  assert.equal(res.status, 200, `subscribe ${channel}`);
  // Read (and drop) what comes, so the server never waits on this client.
  res.body.pipeTo(new WritableStream()).catch(() => {});
  streams.push(ctl);
  return ctl;
}

before(async () => {
  comet = await startCometWith(
    [
      `jwt_secret = "${SECRET}"`,
      `admin_api_key = "${KEY}"`,
      `publish_api_key = "${PUBLISHER}"`,
      // Anonymous clients may subscribe to `room:` (presence on), not to `vault:`.
      '[namespace.room]',
      'anonymous_subscribe = true',
      'presence = true',
      '',
    ].join('\n'),
  );
  browser = await launch();
  // Some life for the charts and the screenshot: subscribers here and there, and a message
  // every 300 ms.
  await subscriber('room:lobby', 'alice');
  await subscriber('room:lobby');
  await subscriber('room:support', 'bob');
  await subscriber('vault:audit', 'carol');
  let n = 0;
  traffic = setInterval(() => {
    n += 1;
    publish(n % 2 ? 'room:support' : 'vault:audit', JSON.stringify({ tick: n })).catch(() => {});
  }, 300);
});

after(async () => {
  clearInterval(traffic);
  for (const ctl of streams) ctl.abort();
  await browser?.close();
  await comet?.stop();
});

test('a wrong key is refused and nothing is kept', async () => {
  const context = await browser.newContext();
  const { page } = await openPage(context, `${comet.url}/admin`);
  await page.fill('#key', 'not-the-admin-key-at-all');
  await page.click('#signin-button');
  await waitIn(page, 'the refusal', () => /refused/.test(document.getElementById('signin-error').textContent));
  assert.equal(await page.evaluate(() => sessionStorage.getItem('comet.admin.key')), null);
  assert.equal(await page.isVisible('#console'), false);
  await context.close();
});

test('sign in, watch a channel, publish, page history, disconnect a user', async () => {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const { page, errors } = await openPage(context, `${comet.url}/admin`);

  // Sign in: the key goes to sessionStorage, never into the URL.
  await page.fill('#key', KEY);
  await page.click('#signin-button');
  await waitIn(page, 'the node panel', () => document.querySelectorAll('#nodes .node').length === 1);
  assert.equal(await page.evaluate(() => sessionStorage.getItem('comet.admin.key')), KEY);
  assert.ok(!page.url().includes(KEY));
  const head = await page.textContent('#nodes .node-head');
  assert.match(head, /this node/);
  assert.match(head, /v\d+\.\d+\.\d+/);
  await waitIn(page, 'connections counted', () => /sse \d/.test(document.querySelector('#nodes .transports').textContent));

  // A channel that gets a subscriber and a message over HTTP shows in the list within seconds.
  await subscriber('vault:orders', 'dave');
  const first = Date.now();
  await publish('vault:orders', 'order #1');
  await waitIn(
    page,
    'vault:orders in the list with its message',
    () => {
      const row = document.querySelector('#channels tr[data-channel="vault:orders"]');
      return row && row.cells[2].textContent === '1';
    },
    undefined,
    6000,
  );
  assert.ok(Date.now() - first < 6000);
  // The search narrows the list by prefix.
  await page.fill('#channel-search', 'vault:');
  await waitIn(page, 'only vault: channels', () => {
    const rows = [...document.querySelectorAll('#channels tbody tr')];
    return rows.length === 2 && rows.every((r) => r.dataset.channel.startsWith('vault:'));
  });

  // Its page: history, and a live tail although anonymous clients may not subscribe there.
  await page.click('#channels tr[data-channel="vault:orders"] button');
  await waitIn(page, 'the channel page', () => document.getElementById('channel-title').textContent === 'vault:orders');
  await waitIn(page, 'the tail live', () => document.getElementById('tail-state').textContent === 'live');
  await waitIn(page, 'history', () => document.querySelector('#history li .data')?.textContent === 'order #1');
  await page.fill('#publish-data', 'from the console');
  await page.click('#publish-send');
  await waitIn(page, 'the publish answered', () => /^published /.test(document.getElementById('publish-result').textContent));
  await publish('vault:orders', 'from the test');
  await waitIn(page, 'both in the tail', () => {
    const seen = [...document.querySelectorAll('#tail .data')].map((e) => e.textContent);
    return seen.includes('from the console') && seen.includes('from the test');
  });
  const tail = await page.$$eval('#tail .data', (els) => els.map((e) => e.textContent));
  assert.deepEqual(tail, ['from the test', 'from the console'], 'newest first, nothing else');

  // History pages: 12 more messages make 15; pages of 10, newest first.
  for (let i = 2; i <= 13; i++) await publish('vault:orders', `order #${i}`);
  await page.click('#history-newest');
  await waitIn(page, 'the newest page', () => document.querySelector('#history li .data')?.textContent === 'order #13');
  assert.equal(await page.$$eval('#history li', (els) => els.length), 10);
  await page.click('#history-older');
  await waitIn(page, 'the older page', () => document.querySelector('#history li .data')?.textContent === 'order #3');
  const older = await page.$$eval('#history li .data', (els) => els.map((e) => e.textContent));
  assert.deepEqual(older, ['order #3', 'order #2', 'from the test', 'from the console', 'order #1']);
  assert.equal(await page.isDisabled('#history-older'), true, 'the oldest page');
  await page.click('#history-newer');
  await waitIn(page, 'back to the newest', () => document.querySelector('#history li .data')?.textContent === 'order #13');

  // Presence, where the namespace tracks it.
  await page.fill('#channel-search', '');
  await waitIn(page, 'room:lobby listed', () => !!document.querySelector('#channels tr[data-channel="room:lobby"]'));
  await page.click('#channels tr[data-channel="room:lobby"] button');
  await waitIn(page, 'alice present', () => /alice/.test(document.getElementById('presence').textContent));
  await page.click('#channels tr[data-channel="vault:orders"] button');
  await waitIn(page, 'presence off there', () => /off/.test(document.getElementById('presence').textContent));
  await waitIn(page, 'the tail live again', () => document.getElementById('tail-state').textContent === 'live');
  await page.fill('#publish-data', '{"status":"shipped","order":13}');
  await page.click('#publish-send');
  await waitIn(page, 'in the tail', () => /shipped/.test(document.querySelector('#tail .data')?.textContent ?? ''));

  // Disconnect a user: its connections on this node are counted in the answer.
  await page.fill('#disconnect-user', 'dave');
  await page.click('#disconnect-send');
  await waitIn(page, 'the disconnect answered', () => /^dave: 1 connection on this node/.test(document.getElementById('disconnect-result').textContent));

  // A few more samples for the charts, then the screenshot.
  await page.waitForTimeout(5000);
  await waitIn(page, 'several samples', () => document.querySelectorAll('#nodes .spark polyline').length >= 3);
  const shot = process.env.COMET_UPDATE_SCREENSHOT === '1' ? 'docs/admin-console.png' : 'target/admin-console.png';
  await page.screenshot({ path: repo + shot });

  assert.deepEqual(errors, [], 'no console error');
  await context.close();
});

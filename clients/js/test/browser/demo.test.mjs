// The demo page (`comet serve --demo`) in real Chromium: it loads with no console error, every
// raw panel and every comet.js panel shows live data, the inspector switches the shared client
// through all six transports, a chat line sent with comet.js reaches the raw WebSocket panel, and
// a screenshot is saved: to target/demo.png, or to docs/demo.png for the README when
// COMET_UPDATE_SCREENSHOT=1 (so that running the tests leaves the checkout as it was).
import { strict as assert } from 'node:assert';
import { after, before, test } from 'node:test';
import { launch, openPage, repo, startComet, waitIn } from './harness.mjs';

let comet, browser;

before(async () => {
  comet = await startComet(['--demo']);
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await comet?.stop();
});

const text = (page, sel) => page.locator(sel).first().textContent();

// First: the other test moves its client through the polling transports, whose members stay
// until presence_ttl_secs passes.
test('the chats show who is online, and follow a second page coming and going', { timeout: 90000 }, async () => {
  const chats = ['p-ws', 'p-xhr-sse', 'c-ws', 'c-xhr-sse'];
  const counts = (page) =>
    page.evaluate((ids) => ids.map((id) => document.querySelector(`#${id} .members`).getAttribute('data-count')), chats);
  const open = async () => {
    const context = await browser.newContext();
    const { page, errors } = await openPage(context, comet.url + '/');
    for (const id of chats) {
      await waitIn(page, `${id} open`, (id) => document.querySelector(`#${id} .status`).getAttribute('data-state') === 'open', id);
    }
    return { context, page, errors };
  };
  // Each page is two connections in each chat channel: a raw panel's and the comet.js client's.
  // On a timeout the error says what each chat showed.
  const every = (page, n) =>
    waitIn(page, `${n} online in every chat`, ({ ids, n }) => ids.every((id) => document.querySelector(`#${id} .members`).getAttribute('data-count') === n), { ids: chats, n: String(n) }).catch(async (e) => {
      throw new Error(`${e.message}; the chats ${chats.join(', ')} showed ${(await counts(page)).join(', ')}`);
    });
  const a = await open();
  try {
    await every(a.page, 2);
    const b = await open();
    await every(a.page, 4);
    await every(b.page, 4);
    await b.context.close();
    await every(a.page, 2);
    assert.deepEqual(await counts(a.page), ['2', '2', '2', '2']);
    assert.deepEqual(a.errors, [], 'no console errors');
  } finally {
    await a.context.close();
  }
});

test('the demo page is live on every panel, with no console error', { timeout: 120000 }, async () => {
  const context = await browser.newContext({ viewport: { width: 1280, height: 1000 } });
  const { page, errors } = await openPage(context, comet.url + '/');
  try {
    for (const id of ['p-poll', 'p-sse', 'p-ws', 'p-xhr-sse', 'p-iframe', 'c-inspector', 'c-poll', 'c-sse', 'c-iframe']) {
      await waitIn(page, `${id} open`, (id) => document.querySelector(`#${id} .status`).getAttribute('data-state') === 'open', id);
    }
    // Let the panels fill up for the screenshot: a few ticks and a couple of progress jobs.
    await page.waitForTimeout(5000);
    for (const sel of ['#p-sse .ticker-price', '#c-sse .ticker-price', '#p-poll .job', '#c-poll .job']) {
      assert.notEqual((await text(page, sel)).trim(), '–', `${sel} shows live data`);
    }
    assert.ok((await page.locator('#c-iframe .event-log li').count()) >= 3, 'the comet.js event log fills');
    assert.ok((await page.locator('#p-iframe .event-log li').count()) >= 3, 'the raw iframe event log fills');
    assert.ok((await page.locator('#c-inspector .frames li').count()) >= 3, 'the inspector shows raw traffic');

    // A chat line sent through comet.js shows once in its panel and in the raw WebSocket panel.
    await page.fill('#c-ws .chat-input', 'hello from comet.js');
    await page.click('#c-ws button[type=submit]');
    await waitIn(page, 'the chat line in the raw panel', () =>
      [...document.querySelectorAll('#p-ws .chat-list li')].some((li) => li.textContent.includes('hello from comet.js')));
    await waitIn(page, 'the chat line in the comet.js panel', () =>
      [...document.querySelectorAll('#c-ws .chat-list li')].some((li) => li.textContent.includes('hello from comet.js')));
    await page.fill('#c-xhr-sse .chat-input', 'second chat');
    await page.click('#c-xhr-sse button[type=submit]');
    await waitIn(page, 'the second chat line in the raw SSE panel', () =>
      [...document.querySelectorAll('#p-xhr-sse .chat-list li')].some((li) => li.textContent.includes('second chat')));
    const shot = process.env.COMET_UPDATE_SCREENSHOT === '1' ? 'docs/demo.png' : 'target/demo.png';
    await page.screenshot({ path: repo + shot, fullPage: true });

    // The inspector moves the shared client through every transport; each opens.
    for (const t of ['sse', 'stream', 'iframe', 'longpoll', 'poll', 'websocket']) {
      await page.selectOption('#c-inspector .pick', t);
      await waitIn(page, `inspector on ${t}`, (t) => document.querySelector('#c-inspector .status-text').textContent === 'open · ' + t, t);
    }
    const count = await page.evaluate(() =>
      [...document.querySelectorAll('#c-ws .chat-list li')].filter((li) => li.textContent.includes('hello from comet.js')).length);
    assert.equal(count, 1, 'six transport switches later the chat line is still shown once');
    assert.deepEqual(errors, [], 'no console errors');
  } finally {
    await context.close();
  }
});

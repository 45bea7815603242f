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

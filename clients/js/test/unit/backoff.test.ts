import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { backoffDelay, retryAfterMs } from '../../src/backoff.js';

test('full jitter: attempt n waits in [0, min(max, base·2^n)]', () => {
  const opts = { base: 100, max: 1000 };
  assert.equal(backoffDelay(0, opts, undefined, () => 0), 0);
  assert.equal(backoffDelay(0, opts, undefined, () => 0.999999), 99);
  assert.equal(backoffDelay(1, opts, undefined, () => 0.999999), 199);
  assert.equal(backoffDelay(3, opts, undefined, () => 0.5), 400);
  assert.equal(backoffDelay(4, opts, undefined, () => 0.999999), 999, 'capped');
  assert.equal(backoffDelay(1000, opts, undefined, () => 0.999999), 999, 'no overflow');
  assert.equal(backoffDelay(-1, opts, undefined, () => 0.5), 50);
  for (let n = 0; n < 20; n++) {
    const d = backoffDelay(n);
    assert.ok(d >= 0 && d <= 30_000, `default bounds: ${d}`);
  }
});

test('the server hint replaces the base', () => {
  assert.equal(backoffDelay(0, { base: 100 }, 3000, () => 0.5), 1500);
  assert.equal(backoffDelay(2, { base: 100, max: 5000 }, 3000, () => 0.999999), 4999);
});

test('a restart under many clients is spread evenly, not a storm', () => {
  // 10 000 clients lose their connection at once; their first retries over a 1 s window.
  const buckets = new Array(10).fill(0);
  for (let i = 0; i < 10_000; i++) buckets[Math.floor(backoffDelay(0, { base: 1000 }) / 100)]++;
  for (const b of buckets) assert.ok(b > 800 && b < 1200, `each 100 ms gets ~10%: ${buckets}`);
});

test('Retry-After in seconds or as a date', () => {
  assert.equal(retryAfterMs('3'), 3000);
  assert.equal(retryAfterMs(null), undefined);
  assert.equal(retryAfterMs('soon'), undefined);
  const now = Date.parse('2026-01-01T00:00:00Z');
  assert.equal(retryAfterMs('Thu, 01 Jan 2026 00:00:10 GMT', now), 10_000);
});

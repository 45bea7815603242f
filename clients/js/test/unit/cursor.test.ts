import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { CursorBook, isChannel, isEventName, parseCursor, parsePosition } from '../../src/cursor.js';

test('cursors parse and reject malformed text', () => {
  assert.deepEqual(parseCursor('9f2c61d04ab3e177-42'), { epoch: '9f2c61d04ab3e177', offset: 42 });
  assert.deepEqual(parseCursor('0-0'), { epoch: '0', offset: 0 });
  for (const bad of ['', '42', 'ABC-1', 'abc-', '-1', 'abc-1x', '12345678901234567-1', 'earliest']) {
    assert.equal(parseCursor(bad), null, bad);
  }
});

test('positions: one plain cursor for one channel, chan=cursor lists for several', () => {
  assert.deepEqual([...parsePosition('ab-3', ['a'])], [['a', { epoch: 'ab', offset: 3 }]]);
  assert.equal(parsePosition('ab-3', ['a', 'b']).size, 0, 'a plain cursor cannot be attributed');
  const p = parsePosition('chat:a=ab-3,chat:b=cd-0', ['chat:a', 'chat:b']);
  assert.deepEqual(p.get('chat:a'), { epoch: 'ab', offset: 3 });
  assert.deepEqual(p.get('chat:b'), { epoch: 'cd', offset: 0 });
  assert.equal(parsePosition('', ['a']).size, 0);
});

test('names', () => {
  assert.ok(isChannel('chat:lobby') && isChannel('a.b_c-d@e') && !isChannel('') && !isChannel('a b'));
  assert.ok(!isChannel('x'.repeat(256)) && isChannel('x'.repeat(255)));
  assert.ok(isEventName('say') && !isEventName('comet.gap') && !isEventName('a/b'));
});

test('de-dup: a message at or below the watermark of its epoch is a duplicate', () => {
  const b = new CursorBook();
  assert.equal(b.accept('c', 'ab-1'), 'new');
  assert.equal(b.accept('c', 'ab-2'), 'new');
  assert.equal(b.accept('c', 'ab-2'), 'duplicate');
  assert.equal(b.accept('c', 'ab-1'), 'duplicate');
  assert.equal(b.accept('c', 'ab-3'), 'new');
  assert.equal(b.get('c'), 'ab-3');
  assert.equal(b.accept('d', 'ab-1'), 'new', 'channels are independent');
  assert.equal(b.accept('c', 'not a cursor'), 'duplicate');
});

test('a resumed stream that replays what was seen delivers each message once, in order', () => {
  const b = new CursorBook();
  const seen: string[] = [];
  const feed = (ids: number[]) => {
    for (const i of ids) if (b.accept('c', `e-${i}`) !== 'duplicate') seen.push(`e-${i}`);
  };
  feed([1, 2, 3, 4]);
  feed([3, 4, 5, 6]); // a reconnect that overlapped
  feed([6, 7]);
  assert.deepEqual(seen, ['e-1', 'e-2', 'e-3', 'e-4', 'e-5', 'e-6', 'e-7']);
});

test('a new epoch is accepted; without a gap notice it is flagged', () => {
  const b = new CursorBook();
  b.accept('c', 'aa-7');
  assert.equal(b.accept('c', 'bb-1'), 'new-epoch', 'no notice came: the caller reports a gap');
  assert.equal(b.accept('c', 'bb-1'), 'duplicate');
  b.gap('c');
  assert.equal(b.accept('c', 'cc-1'), 'new', 'announced by a gap notice');
  b.gap('c');
  assert.equal(b.accept('c', 'cc-2'), 'new', 'same epoch after a notice');
  assert.equal(b.accept('c', 'dd-1'), 'new-epoch', 'the notice was used up');
  assert.equal(new CursorBook().accept('x', 'aa-9'), 'new', 'a first message is never a gap');
});

test('server positions move watermarks forward only, and build ?since=', () => {
  const b = new CursorBook();
  b.advance(parsePosition('a=ab-0,b=cd-5', ['a', 'b']));
  assert.equal(b.position(['a', 'b']), 'a=ab-0,b=cd-5');
  assert.equal(b.accept('b', 'cd-5'), 'duplicate', 'the watermark of a position de-dups too');
  assert.equal(b.accept('b', 'cd-6'), 'new');
  b.advance(parsePosition('a=ab-0,b=cd-2', ['a', 'b']));
  assert.equal(b.get('b'), 'cd-6', 'never backwards');
  b.advance(parsePosition('b=ee-1', ['a', 'b']));
  assert.equal(b.get('b'), 'ee-1', 'a new epoch replaces');
  assert.equal(b.position(['b', 'zz', 'a']), 'b=ee-1,a=ab-0', 'channels without a watermark are left out');
  b.delete('a');
  assert.equal(b.position(['a', 'b']), 'b=ee-1');
});

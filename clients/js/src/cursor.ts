// Cursor bookkeeping: the per-channel watermark that drives both resume and de-duplication.
//
// docs/protocol.md "Cursors": a cursor is `<epoch hex>-<offset decimal>`; offsets go up by one
// per message within an epoch; a position is `chan=cursor,chan=cursor`. The watermark of a
// channel is the newest cursor this client has either delivered or been told by the server (a
// poll answer's `cursor`, a stream's reconnect notice). Every message at or below the watermark
// of the same epoch was already delivered (or precedes the subscription), so it is a duplicate.

/** A parsed cursor. */
export interface Cursor {
  /** The epoch, lowercase hex as on the wire (compared as a string: only equality matters). */
  epoch: string;
  /** The offset within the epoch. */
  offset: number;
}

const CURSOR = /^([0-9a-f]{1,16})-([0-9]{1,20})$/;
const CHANNEL = /^[A-Za-z0-9_.:@-]{1,255}$/;
const EVENT = /^[A-Za-z0-9_.:@-]{1,64}$/;

/** Whether `name` is a valid channel name (1–255 bytes of `[A-Za-z0-9_.:@-]`). */
export function isChannel(name: string): boolean {
  return CHANNEL.test(name);
}

/** Whether `name` is a valid event name a publisher may use (not `comet.*`). */
export function isEventName(name: string): boolean {
  return EVENT.test(name) && !name.startsWith('comet.');
}

/** Parses `<epoch>-<offset>`; `null` when malformed. */
export function parseCursor(text: string): Cursor | null {
  const m = CURSOR.exec(text);
  if (!m) return null;
  const offset = Number(m[2]);
  // Offsets past 2^53 lose precision as numbers; no real channel gets there.
  return Number.isSafeInteger(offset) ? { epoch: m[1]!, offset } : null;
}

/** Formats a cursor back to its wire form. */
export function formatCursor(c: Cursor): string {
  return `${c.epoch}-${c.offset}`;
}

/**
 * Parses what a server sends as a resume point: a plain cursor (a one-channel subscription) or
 * a position. `channels` names the subscription, so a plain cursor can be attributed.
 */
export function parsePosition(text: string, channels: readonly string[]): Map<string, Cursor> {
  const out = new Map<string, Cursor>();
  if (!text) return out;
  if (!text.includes('=')) {
    const c = parseCursor(text);
    if (c && channels.length === 1) out.set(channels[0]!, c);
    return out;
  }
  for (const entry of text.split(',')) {
    const eq = entry.indexOf('=');
    if (eq <= 0) continue;
    const c = parseCursor(entry.slice(eq + 1));
    if (c) out.set(entry.slice(0, eq), c);
  }
  return out;
}

/** What [`CursorBook.accept`] decided about a message. */
export type Verdict =
  /** New: deliver it. */
  | 'new'
  /** New, but of another epoch than the watermark while no gap notice was announced: the
   *  application should be told of a gap before it is delivered. */
  | 'new-epoch'
  /** Already delivered (or before the subscription's start): drop it. */
  | 'duplicate';

/** Per-channel watermarks. */
export class CursorBook {
  private readonly marks = new Map<string, Cursor>();
  /** Channels whose gap notice arrived and whose next message may open a new epoch. */
  private readonly gapPending = new Set<string>();

  /** The watermark of `channel`, in wire form, if any. */
  get(channel: string): string | undefined {
    const c = this.marks.get(channel);
    return c ? formatCursor(c) : undefined;
  }

  /** Whether `channel` has a watermark. */
  has(channel: string): boolean {
    return this.marks.has(channel);
  }

  /** Sets the watermark of `channel` outright (a subscription's explicit `since`). */
  set(channel: string, cursor: Cursor): void {
    this.marks.set(channel, cursor);
  }

  /** Forgets `channel` (its last subscription went away). */
  delete(channel: string): void {
    this.marks.delete(channel);
    this.gapPending.delete(channel);
  }

  /** Decides about a message `id` of `channel`, and moves the watermark when it is new. */
  accept(channel: string, id: string): Verdict {
    const c = parseCursor(id);
    if (!c) return 'duplicate'; // not a cursor: never from a Comet server; drop rather than guess
    const mark = this.marks.get(channel);
    if (mark && mark.epoch === c.epoch) {
      if (c.offset <= mark.offset) return 'duplicate';
      this.marks.set(channel, c);
      this.gapPending.delete(channel);
      return 'new';
    }
    this.marks.set(channel, c);
    const announced = this.gapPending.delete(channel);
    return mark && !announced ? 'new-epoch' : 'new';
  }

  /**
   * Whether `id` would leave a hole: same epoch as the watermark, more than one past it, and no gap
   * notice announced a jump (offsets go up by one per message, docs/protocol.md "Cursors").
   */
  hole(channel: string, id: string): boolean {
    const c = parseCursor(id);
    const mark = this.marks.get(channel);
    return !!c && !!mark && mark.epoch === c.epoch && c.offset > mark.offset + 1 && !this.gapPending.has(channel);
  }

  /** Records a gap notice for `channel`: its next message may start a new epoch. */
  gap(channel: string): void {
    this.gapPending.add(channel);
  }

  /**
   * Moves watermarks forward from a server position (never backwards within an epoch; a new
   * epoch replaces the old one, since the server knows where history now stands).
   */
  advance(position: Map<string, Cursor>): void {
    for (const [channel, c] of position) {
      const mark = this.marks.get(channel);
      if (!mark || mark.epoch !== c.epoch || c.offset > mark.offset) this.marks.set(channel, c);
    }
  }

  /** The position of `channels` (those with a watermark), `chan=cursor,…`, for `?since=`. */
  position(channels: Iterable<string>): string {
    const parts: string[] = [];
    for (const ch of channels) {
      const c = this.marks.get(ch);
      if (c) parts.push(`${ch}=${formatCursor(c)}`);
    }
    return parts.join(',');
  }
}

/** A parsed cursor. */
export interface Cursor {
    /** The epoch, lowercase hex as on the wire (compared as a string: only equality matters). */
    epoch: string;
    /** The offset within the epoch. */
    offset: number;
}
/** Whether `name` is a valid channel name (1–255 bytes of `[A-Za-z0-9_.:@-]`). */
export declare function isChannel(name: string): boolean;
/** Whether `name` is a valid event name a publisher may use (not `comet.*`). */
export declare function isEventName(name: string): boolean;
/** Parses `<epoch>-<offset>`; `null` when malformed. */
export declare function parseCursor(text: string): Cursor | null;
/** Formats a cursor back to its wire form. */
export declare function formatCursor(c: Cursor): string;
/**
 * Parses what a server sends as a resume point: a plain cursor (a one-channel subscription) or
 * a position. `channels` names the subscription, so a plain cursor can be attributed.
 */
export declare function parsePosition(text: string, channels: readonly string[]): Map<string, Cursor>;
/** What [`CursorBook.accept`] decided about a message. */
export type Verdict = 
/** New: deliver it. */
'new'
/** New, but of another epoch than the watermark while no gap notice was announced: the
 *  application should be told of a gap before it is delivered. */
 | 'new-epoch'
/** Already delivered (or before the subscription's start): drop it. */
 | 'duplicate';
/** Per-channel watermarks. */
export declare class CursorBook {
    private readonly marks;
    /** Channels whose gap notice arrived and whose next message may open a new epoch. */
    private readonly gapPending;
    /** The watermark of `channel`, in wire form, if any. */
    get(channel: string): string | undefined;
    /** Whether `channel` has a watermark. */
    has(channel: string): boolean;
    /** Sets the watermark of `channel` outright (a subscription's explicit `since`). */
    set(channel: string, cursor: Cursor): void;
    /** Forgets `channel` (its last subscription went away). */
    delete(channel: string): void;
    /** Decides about a message `id` of `channel`, and moves the watermark when it is new. */
    accept(channel: string, id: string): Verdict;
    /**
     * Whether `id` would leave a hole: same epoch as the watermark, more than one past it, and no gap
     * notice announced a jump (offsets go up by one per message, docs/protocol.md "Cursors").
     */
    hole(channel: string, id: string): boolean;
    /** Records a gap notice for `channel`: its next message may start a new epoch. */
    gap(channel: string): void;
    /**
     * Moves watermarks forward from a server position (never backwards within an epoch; a new
     * epoch replaces the old one, since the server knows where history now stands).
     */
    advance(position: Map<string, Cursor>): void;
    /** The position of `channels` (those with a watermark), `chan=cursor,…`, for `?since=`. */
    position(channels: Iterable<string>): string;
}

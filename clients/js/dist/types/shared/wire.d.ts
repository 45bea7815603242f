import type { BackoffOptions } from '../backoff.js';
import { CometError } from '../http.js';
import type { Envelope, Frame, PresenceEvent, PublishResult, StateChange, TransportName } from '../types.js';
/** The options a hub builds its connection from; every tab sharing it has the same (see [`shareKey`]). */
export interface SharedOptions {
    url: string;
    token?: string;
    transports: TransportName[];
    pollInterval?: number;
    longpollTimeout?: number;
    heartbeatTimeout?: number;
    connectTimeout?: number;
    backoff?: BackoffOptions;
}
/** One channel a tab wants, and where it stands on it (its last delivered cursor or watermark). */
export interface WantedChannel {
    channel: string;
    /** The tab's cursor; the hub resumes from it when it does not carry the channel yet. */
    since?: string;
}
/** An error, as it can cross a `postMessage` (a class instance would lose its fields). */
export interface WireError {
    code: string;
    message: string;
    status?: number;
    retry?: number;
}
/** Tab → hub. */
export type ToHub = 
/** Everything the tab wants now: the hub subscribes what is new, unsubscribes what is gone. */
{
    t: 'sync';
    tab: string;
    channels: WantedChannel[];
    events: string[];
    frames: boolean;
}
/** A publish over the shared connection; answered by a `reply` with the same `ref`. */
 | {
    t: 'call';
    tab: string;
    ref: number;
    channel: string;
    data: string;
    event?: string;
}
/** The tab is going away (page hidden, client closed): release its subscriptions. */
 | {
    t: 'bye';
    tab: string;
};
/** Hub → one tab. */
export type ToTab = {
    t: 'msg';
    env: Envelope;
}
/** The server said history no longer reached the hub's cursor on `channel`. */
 | {
    t: 'gap';
    channel: string;
} | {
    t: 'presence';
    joined: boolean;
    event: PresenceEvent;
}
/** The server ended `channel` for this connection (the server API). */
 | {
    t: 'unsubscribed';
    channel: string;
} | {
    t: 'state';
    state: StateChange;
} | {
    t: 'frame';
    frame: Frame;
} | {
    t: 'error';
    error: WireError;
}
/** The server disconnected the connection's user for good (`reconnect: false`). */
 | {
    t: 'disconnected';
} | {
    t: 'reply';
    ref: number;
    result?: PublishResult;
    error?: WireError;
};
/** Tab ↔ SharedWorker port: `open` (first, with the options), then [`ToHub`]; back `ready`, then [`ToTab`]. */
export type ToWorker = {
    t: 'open';
    options: SharedOptions;
} | ToHub;
/** On the BroadcastChannel of the Web Locks mode: the election's announcements, [`ToHub`] from
 *  every tab, and [`ToTab`] addressed to one tab. */
export type Broadcast = {
    t: 'hello';
    tab: string;
} | {
    t: 'leader';
    id: string;
} | {
    t: 'resign';
    id: string;
} | {
    t: 'ev';
    to: string;
    ev: ToTab;
} | ToHub;
export declare function toWire(e: unknown): WireError;
export declare function fromWire(w: WireError): CometError;
/** FNV-1a 64 of `text`, hex (a name, not a secret: the token is hashed so it is not spelled out
 *  in lock and channel names that any script of the origin can list). */
export declare function fnv1a64(text: string): string;
/**
 * What tabs must agree on to share a connection: the client's version (the messages above), the
 * server URL, the transports in order, the token and the connection's tuning. Tabs whose options
 * differ in any of these get different keys, hence different workers, locks and channels.
 */
export declare function shareKey(o: SharedOptions, version: string): string;

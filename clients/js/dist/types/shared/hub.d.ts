import type { Client } from '../client.js';
import { type ToHub, type ToTab } from './wire.js';
/** How the hub reaches one tab (a worker port, a BroadcastChannel address, or a direct call). */
export interface Peer {
    post(m: ToTab): void;
}
/** The name of the Web Lock each tab holds for its whole life: the hub waits on it to learn that a
 *  tab is gone even when it could not say `bye` (a crash, a killed process). */
export declare function tabLockName(tab: string): string;
/** The lock manager, where there is one (secure contexts; pages and workers). */
export declare function lockManager(): LockManager | undefined;
export declare class Hub {
    private readonly make;
    private readonly locks;
    private client;
    private readonly tabs;
    private offs;
    private offFrames;
    private last;
    private stopped;
    /** `make` builds the shared connection (an unshared client) when the first tab needs it. */
    constructor(make: () => Client, locks?: LockManager | undefined);
    /** Handles one message from a tab; `peer` answers it. */
    receive(m: ToHub, peer: Peer): void;
    /** The tabs it serves (tests, logs). */
    get tabCount(): number;
    /** Ends the connection and forgets every tab (the leader resigns). */
    stop(): void;
    private inner;
    private closeClient;
    /** Frames are formatted only while a listener exists: listen only while a tab wants them. */
    private frames;
    private everyTab;
    private sync;
    private call;
    /** Forgets tab `id` and its subscriptions (the channels no other tab wants are left). */
    private drop;
    /** Waits on the tab's life lock: granted when the tab is gone, however it went. */
    private watch;
}

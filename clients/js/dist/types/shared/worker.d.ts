import type { Client } from '../client.js';
import type { SharedOptions } from './wire.js';
/** Whether this code runs in a SharedWorker. */
export declare function inSharedWorker(): boolean;
/** In a SharedWorker, answers the tabs' ports; elsewhere does nothing. Returns whether it serves. */
export declare function serveSharedWorker(make: (o: SharedOptions) => Client): boolean;

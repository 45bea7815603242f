import type { TransportFactory } from '../types.js';
export declare const websocket: TransportFactory;

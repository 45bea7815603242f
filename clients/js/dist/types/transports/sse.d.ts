import type { TransportFactory } from '../types.js';
export declare const sse: TransportFactory;

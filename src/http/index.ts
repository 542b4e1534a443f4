export { OpsHttpServer, type OpsHttpOptions } from './ops-server.js';
export type { AccessTokenAnswer, OpsPort, Readiness } from './ports.js';

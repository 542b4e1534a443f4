export { OpsHttpServer, type OpsHttpOptions } from './ops-server.js';
export type { AccessTokenAnswer, OpsPort, RateHistory, Readiness, TaskOps, TaskView, TemplateOps, TemplateView } from './ports.js';

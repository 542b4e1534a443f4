import { WechatSimulator } from '../wechat/index.js';
import { CliFailure } from './service.js';

/** `mega simulator`: the bundled WeChat API simulator in the foreground until SIGTERM/SIGINT. */
export async function runSimulator(o: { host: string; port: string; latencyMs: string; appId: string; appSecret: string }): Promise<void> {
  const port = Number(o.port);
  const latencyMs = Number(o.latencyMs);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new CliFailure(`--port must be 0..65535, got ${o.port}`);
  if (!Number.isFinite(latencyMs) || latencyMs < 0) throw new CliFailure(`--latency-ms must be a number >= 0, got ${o.latencyMs}`);
  const simulator = await WechatSimulator.start({ host: o.host, port, latencyMs, appId: o.appId, appSecret: o.appSecret });
  process.stdout.write(JSON.stringify({ url: simulator.url, port: simulator.port }) + '\n');
  await new Promise<void>((resolve) => {
    process.once('SIGTERM', resolve);
    process.once('SIGINT', resolve);
  });
  await simulator.close();
}

import type { Logger } from 'pino';
import { pdoOptions, type MegaConfig } from '../config/config.js';
import { openTemplateStore } from '../templates/index.js';
import { WechatSimulator } from '../simulator/index.js';
import { CliFailure } from './failure.js';

/** The sample template `npm start` installs into an empty table: the original README's example. */
export const SAMPLE_TEMPLATE_KEY = 'order_paid';
export const SAMPLE_TEMPLATE = {
  touser: '${OPENID}',
  template_id: 'ngqIpbwh8bUfcSsECmogfXcV14J0tQlEpBO27izEYtY',
  url: 'http://weixin.qq.com/download',
  data: {
    first: { value: '恭喜你购买成功！', color: '#173177' },
    keynote1: { value: '${product}', color: '#173177' },
    keynote2: { value: '${price}', color: '#173177' },
    keynote3: { value: '${time}', color: '#173177' },
    remark: { value: '欢迎再次购买！', color: '#173177' },
  },
};

/** What `start --demo` needs from the daemon once it runs: to load a template into its cache. */
export interface TemplateLoader {
  tset(key: string): Promise<unknown>;
}

/**
 * `start --demo`, first step: runs the bundled WeChat API simulator at `[wechat] api_base` in
 * this process. It goes first because its port is the one a second `npm start` finds taken,
 * and nothing may be written before the start is known to succeed.
 */
export async function startDemoSimulator(config: MegaConfig, logger: Logger): Promise<() => Promise<void>> {
  const url = new URL(config.wechat.apiBase);
  if (url.protocol !== 'http:' || !['127.0.0.1', 'localhost', '[::1]'].includes(url.hostname)) {
    throw new CliFailure(`--demo runs the simulator at [wechat] api_base, which must be http on loopback; got ${config.wechat.apiBase}`);
  }
  const port = Number(url.port || 80);
  let simulator: WechatSimulator;
  try {
    simulator = await WechatSimulator.start({
      host: url.hostname === 'localhost' ? '127.0.0.1' : url.hostname.replace(/^\[|\]$/g, ''),
      port,
      appId: config.wechat.appId,
      appSecret: config.wechat.appSecret,
    });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const reason = code === 'EADDRINUSE' ? `port ${port} is already in use (another npm start, or mega simulator?)` : (code ?? String(err));
    throw new CliFailure(
      `--demo runs the WeChat API simulator at [wechat] api_base = ${config.wechat.apiBase}, but ${reason}. ` +
        `Stop that process, or move the demo's simulator to a free port: change [wechat] api_base in ${config.file} ` +
        `(e.g. http://127.0.0.1:${port === 65535 ? port - 1 : port + 1})`,
    );
  }
  logger.info({ url: simulator.url }, 'demo: WeChat API simulator started');
  return () => simulator.close();
}

/**
 * `start --demo`, last step, once the daemon runs: puts the sample template into the store if
 * it holds none and loads it into the daemon, so a fresh clone can send a first message with
 * nothing else installed.
 */
export async function installSampleTemplate(config: MegaConfig, daemon: TemplateLoader, logger: Logger): Promise<void> {
  const store = openTemplateStore(pdoOptions(config));
  let installed = false;
  try {
    await store.init();
    if ((await store.list(1)).length === 0) {
      await store.put({ key: SAMPLE_TEMPLATE_KEY, title: 'Order paid (sample)', template: JSON.stringify(SAMPLE_TEMPLATE, null, 2) });
      installed = true;
    }
  } finally {
    await store.close();
  }
  if (!installed) return;
  await daemon.tset(SAMPLE_TEMPLATE_KEY);
  logger.info({ key: SAMPLE_TEMPLATE_KEY }, 'demo: sample template installed');
}

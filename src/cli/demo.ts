import type { Logger } from 'pino';
import { pdoOptions, type MegaConfig } from '../config/config.js';
import { openTemplateStore } from '../templates/index.js';
import { WechatSimulator } from '../wechat/index.js';
import { CliFailure } from './service.js';

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

/**
 * `start --demo`: runs the bundled WeChat API simulator at `[wechat] api_base` in this
 * process and puts the sample template into the store if it holds none, so a fresh clone
 * can send a first message with nothing else installed.
 */
export async function startDemo(config: MegaConfig, logger: Logger): Promise<() => Promise<void>> {
  const url = new URL(config.wechat.apiBase);
  if (url.protocol !== 'http:' || !['127.0.0.1', 'localhost', '[::1]'].includes(url.hostname)) {
    throw new CliFailure(`--demo runs the simulator at [wechat] api_base, which must be http on loopback; got ${config.wechat.apiBase}`);
  }
  const store = openTemplateStore(pdoOptions(config));
  try {
    await store.init();
    if ((await store.list(1)).length === 0) {
      await store.put({ key: SAMPLE_TEMPLATE_KEY, title: 'Order paid (sample)', template: JSON.stringify(SAMPLE_TEMPLATE, null, 2) });
      logger.info({ key: SAMPLE_TEMPLATE_KEY }, 'demo: sample template installed');
    }
  } finally {
    await store.close();
  }
  const simulator = await WechatSimulator.start({
    host: url.hostname === 'localhost' ? '127.0.0.1' : url.hostname.replace(/^\[|\]$/g, ''),
    port: Number(url.port || 80),
    appId: config.wechat.appId,
    appSecret: config.wechat.appSecret,
  });
  logger.info({ url: simulator.url }, 'demo: WeChat API simulator started');
  return () => simulator.close();
}

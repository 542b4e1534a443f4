/**
 * The kinds of message the daemon sends (a template row's `kind`), and WeChat's send endpoint for
 * each. A mini program has an app id and secret of its own, so `miniprogram` rows belong to a
 * service configured with the mini program's credentials (e.g. `mega miniapp start`).
 */

export const MESSAGE_KINDS = ['template', 'subscribe', 'miniprogram'] as const;

/**
 * - `template`: an Official Account template message (`message/template/send`).
 * - `subscribe`: an Official Account subscription notification (`message/subscribe/bizsend`).
 * - `miniprogram`: a mini program's subscribe message (`message/subscribe/send`).
 */
export type MessageKind = (typeof MESSAGE_KINDS)[number];

export const SEND_PATHS: Readonly<Record<MessageKind, string>> = {
  template: '/cgi-bin/message/template/send',
  subscribe: '/cgi-bin/message/subscribe/bizsend',
  miniprogram: '/cgi-bin/message/subscribe/send',
};

export function isMessageKind(value: unknown): value is MessageKind {
  return typeof value === 'string' && (MESSAGE_KINDS as readonly string[]).includes(value);
}

/** Subscribe kinds: their data values have typed keys (`thing1`, `time2`, ...) that WeChat checks. */
export function hasTypedData(kind: MessageKind): boolean {
  return kind !== 'template';
}

/** WeChat de-duplicates by `client_msg_id` only on template/send; the subscribe endpoints take no such field. */
export function takesClientMsgId(kind: MessageKind): boolean {
  return kind === 'template';
}

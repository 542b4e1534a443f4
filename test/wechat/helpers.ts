/** Small HTTP helpers for the wechat tests: real requests over undici, no mocks. */

import { request } from 'undici';
import { SIMULATOR_DEFAULT_APP_ID, SIMULATOR_DEFAULT_APP_SECRET, type WechatSimulator } from '../../src/simulator/index.js';

export const APP_ID = SIMULATOR_DEFAULT_APP_ID;
export const APP_SECRET = SIMULATOR_DEFAULT_APP_SECRET;

export interface Answer {
  status: number;
  text: string;
  // eslint-style escape hatch for test assertions on arbitrary JSON
  json: any;
}

export async function http(
  base: string,
  method: 'GET' | 'POST',
  path: string,
  body?: unknown,
  opts: { timeoutMs?: number } = {},
): Promise<Answer> {
  const res = await request(base + path, {
    method,
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    headers: body === undefined ? undefined : { 'content-type': 'application/json' },
    signal: AbortSignal.timeout(opts.timeoutMs ?? 3000),
  });
  const text = await res.body.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.statusCode, text, json };
}

export async function getToken(sim: WechatSimulator): Promise<string> {
  const a = await http(
    sim.url,
    'GET',
    `/cgi-bin/token?grant_type=client_credential&appid=${APP_ID}&secret=${encodeURIComponent(APP_SECRET)}`,
  );
  if (typeof a.json?.access_token !== 'string') throw new Error(`no token: ${a.text}`);
  return a.json.access_token as string;
}

export function send(sim: WechatSimulator, token: string | null, body: unknown, timeoutMs?: number): Promise<Answer> {
  const q = token === null ? '' : `?access_token=${encodeURIComponent(token)}`;
  return http(sim.url, 'POST', `/cgi-bin/message/template/send${q}`, body, timeoutMs === undefined ? {} : { timeoutMs });
}

export function msg(touser: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { touser, template_id: 'tmpl-1', data: { first: { value: 'hello' } }, ...extra };
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

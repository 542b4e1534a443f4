/** Mega-Wechat wire protocol (docs/PROTOCOL.md): frames, and the commands they carry. */

export { DEFAULT_PACKAGE_MAX_LENGTH, FrameDecoder, decodeFrame, encodeFrame } from './codec.js';
export type { Frame, FrameDecoderOptions } from './codec.js';
export {
  ResultCode,
  encodePush,
  encodeResult,
  encodeSend,
  encodeTset,
  parseRequest,
  parseResult,
  parseVariables,
  MAX_VARIABLES_DEPTH,
} from './commands.js';
export type { PushRequest, Request, Result, SendRequest, TsetRequest, Variables } from './commands.js';

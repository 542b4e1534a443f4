/** Mega-Wechat wire protocol (docs/PROTOCOL.md): frames, and the commands they carry. */

export { DEFAULT_PACKAGE_MAX_LENGTH, FrameDecoder, decodeFrame, encodeFrame } from './codec.js';
export type { Frame, FrameDecoderOptions } from './codec.js';
export {
  ResultCode,
  encodeAuth,
  encodePush,
  encodeResult,
  encodeSend,
  encodeTset,
  isAuthToken,
  parseAuth,
  parseRequest,
  parseResult,
  parseVariables,
  MAX_VARIABLES_DEPTH,
} from './commands.js';
export type { AuthRequest, PushRequest, Request, Result, SendRequest, TsetRequest, Variables } from './commands.js';

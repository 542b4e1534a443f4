/** Mega-Wechat wire protocol (docs/PROTOCOL.md): frames, and the commands they carry. */

export { DEFAULT_PACKAGE_MAX_LENGTH, FrameDecoder, decodeFrame, encodeFrame } from './codec.js';
export type { Frame, FrameDecoderOptions } from './codec.js';
export {
  ResultCode,
  encodeAuth,
  encodePush,
  encodeQuery,
  encodeResult,
  encodeSend,
  encodeTset,
  isAuthToken,
  isMsgid,
  checkMsgid,
  parseAuth,
  parseRequest,
  parseResult,
  parseVariables,
  MAX_VARIABLES_DEPTH,
} from './commands.js';
export type { AuthRequest, PushRequest, QueryRequest, Request, Result, SendRequest, TsetRequest, Variables } from './commands.js';
export { FINAL_STATES, MESSAGE_STATES } from './message-record.js';
export type { LedgerReader, MessageFilter, MessageRecord, MessageState } from './message-record.js';

/**
 * Redaction of secrets in text that may reach a log line or an error message.
 * `access_token=...` and `secret=...` query parameters (and JSON fields of the same names)
 * are replaced by `***`.
 */

const QUERY_SECRET = /\b(access_token|secret|appsecret|app_secret)=[^&\s"'#]*/gi;
const JSON_SECRET = /"(access_token|secret|appsecret|app_secret)"\s*:\s*"(?:[^"\\]|\\.)*"/gi;

/** `text` with every access token and secret parameter replaced by `***`. */
export function redactSecrets(text: string): string {
  return text.replace(QUERY_SECRET, '$1=***').replace(JSON_SECRET, '"$1":"***"');
}

/** `text` with every literal occurrence of the given secrets (ignoring short ones) replaced by `***`. */
export function redactLiterals(text: string, secrets: ReadonlyArray<string | undefined>): string {
  let out = text;
  for (const s of secrets) {
    if (s !== undefined && s.length >= 4) out = out.split(s).join('***');
  }
  return out;
}

/**
 * Config files for the daemons that tests and benchmarks start, written with the same `ini`
 * package the daemon reads them with (so quoting and `key[]` arrays round-trip). Free of
 * node:test hooks, so the benchmarks can use it too.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import ini from 'ini';

/** Sections of key/value pairs; an array becomes one `key[] = value` line per element. */
export type IniSections = Record<string, Record<string, string | number | string[]>>;

/**
 * Writes `<dir>/<name>.ini` (creating `dir`) and returns its path. Without an `[http]` section the
 * daemon's HTTP side listens on a free port: its default 127.0.0.1:9503 would make daemons
 * started side by side (tests run in parallel) refuse to start.
 */
export function writeIni(dir: string, name: string, sections: IniSections): string {
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `${name}.ini`);
  const withHttp = sections.http ? sections : { ...sections, http: { listen: '127.0.0.1:0' } };
  writeFileSync(file, ini.stringify(withHttp, { whitespace: true }));
  return file;
}

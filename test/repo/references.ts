/**
 * Finds what in a repository reads or links a path outside it, or links a file it does not
 * have. A clone must work on its own: a test fixture, a doc link or a script path that points
 * at a sibling folder works only on the machine where it was written.
 *
 * What is looked at, in every text file of the repository:
 * - anywhere, a relative path into a sibling folder named `shared` (the folder this project was
 *   once written next to: a dot-dot, a slash, then `shared`);
 * - in Markdown, every link target (inline, reference definition, href/src) outside code: it must
 *   stay inside the repository and name a file or folder that exists;
 * - in .ts/.js/.json/.sh files and scripts starting with `#!`, every string literal that begins
 *   with `./` or `../`: it must resolve inside the repository. A .ts file runs compiled from
 *   dist/, so its literal may resolve from either place; a script's may resolve from its folder
 *   or from the repository root (where it is usually run);
 * - every mention of `docs/<NAME>.md` (code comments cite the docs so): that file must exist.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';

export interface Violation {
  /** Repository-relative, with `/`. */
  file: string;
  line: number;
  /** The path or link as written. */
  target: string;
  reason: 'names the sibling folder shared' | 'points outside the repository' | 'links a file that does not exist' | 'cites a doc that does not exist';
}

/** Folders of generated or local files, never part of what a clone holds. */
const SKIPPED_DIRS = new Set(['.git', 'node_modules', 'dist', 'data', 'logs']);
const MAX_BYTES = 4 * 1024 * 1024;
const CODE_EXTENSIONS = new Set(['.ts', '.mts', '.cts', '.js', '.mjs', '.cjs', '.json', '.sh']);

/**
 * The repository's files, relative to `root`: what git tracks or would track (untracked files
 * that are not ignored count, so a new file is checked before its commit) when `root` is the top
 * of a git work tree; else every file below `root` outside {@link SKIPPED_DIRS}.
 */
export function repositoryFiles(root: string): string[] {
  const top = gitTopLevel(root);
  if (top !== undefined && path.resolve(top) === path.resolve(root)) {
    const out = execFileSync('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], {
      cwd: root,
      encoding: 'utf8',
      maxBuffer: 64 * 1024 * 1024,
    });
    return [...new Set(out.split('\0').filter((f) => f !== ''))].sort();
  }
  return walk(root, '').sort();
}

function gitTopLevel(root: string): string | undefined {
  if (!existsSync(path.join(root, '.git'))) return undefined;
  try {
    return execFileSync('git', ['rev-parse', '--show-toplevel'], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return undefined; // no git installed, or not a work tree: walk instead
  }
}

function walk(root: string, rel: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(path.join(root, rel), { withFileTypes: true })) {
    const child = rel === '' ? entry.name : `${rel}/${entry.name}`;
    if (entry.isDirectory()) {
      if (!SKIPPED_DIRS.has(entry.name)) out.push(...walk(root, child));
    } else if (entry.isFile()) {
      out.push(child);
    }
  }
  return out;
}

/** Every violation in the given files (default: {@link repositoryFiles}), in file and line order. */
export function checkRepository(root: string, files: string[] = repositoryFiles(root)): Violation[] {
  const violations: Violation[] = [];
  for (const file of files) {
    const text = readText(path.join(root, file));
    if (text !== undefined) violations.push(...checkFile(root, file, text));
  }
  return violations;
}

/** The file's text, or undefined for a binary, huge, missing (deleted, still tracked) or non-regular file. */
function readText(full: string): string | undefined {
  try {
    const stat = statSync(full);
    if (!stat.isFile() || stat.size > MAX_BYTES) return undefined;
    const buf = readFileSync(full);
    return buf.includes(0) ? undefined : buf.toString('utf8');
  } catch {
    return undefined;
  }
}

function checkFile(root: string, file: string, text: string): Violation[] {
  const found: Violation[] = [];
  const add = (index: number, target: string, reason: Violation['reason']): void => {
    found.push({ file, line: lineAt(text, index), target, reason });
  };

  for (const m of text.matchAll(/\.\.[\\/]shared\b/g)) add(m.index, m[0], 'names the sibling folder shared');

  for (const m of text.matchAll(/(?<![\w./-])docs\/[A-Za-z0-9_.-]+\.md\b/g)) {
    if (!existsSync(path.join(root, m[0]))) add(m.index, m[0], 'cites a doc that does not exist');
  }

  const ext = path.extname(file).toLowerCase();
  const dir = path.dirname(path.join(root, file));
  if (ext === '.md' || ext === '.markdown') {
    for (const { index, target } of markdownLinks(text)) {
      const local = localPart(target);
      if (local === undefined) continue;
      const resolved = local.startsWith('/') ? path.join(root, local) : path.resolve(dir, local);
      if (!inside(root, resolved)) add(index, target, 'points outside the repository');
      else if (!existsSync(resolved)) add(index, target, 'links a file that does not exist');
    }
  } else if (CODE_EXTENSIONS.has(ext) || text.startsWith('#!')) {
    const bases = ['.ts', '.mts', '.cts'].includes(ext)
      ? [dir, path.join(root, 'dist', path.dirname(file))]
      : [dir, root];
    for (const m of text.matchAll(/(['"`])(\.\.?\/[^'"`\s$]*)/g)) {
      const literal = m[2]!;
      if (!bases.some((base) => inside(root, path.resolve(base, literal)))) add(m.index + 1, literal, 'points outside the repository');
    }
  }
  return found;
}

/** Link targets of a Markdown text, outside fenced code blocks and code spans. */
function markdownLinks(text: string): Array<{ index: number; target: string }> {
  const prose = blankCode(text);
  const links: Array<{ index: number; target: string }> = [];
  const patterns = [
    /\]\(\s*<?([^()\s<>]+)>?(?:\s+(?:"[^"]*"|'[^']*'))?\s*\)/g, // [text](target "title"), ![alt](target)
    /^ {0,3}\[[^\]\n]+\]:\s*<?([^\s<>]+)>?/gm, // [label]: target
    /\b(?:href|src)\s*=\s*"([^"]+)"/g, // <a href="...">, <img src="...">
  ];
  for (const pattern of patterns) {
    for (const m of prose.matchAll(pattern)) links.push({ index: m.index + m[0].indexOf(m[1]!), target: m[1]! });
  }
  return links.sort((a, b) => a.index - b.index);
}

/** The text with code blocks and code spans turned into spaces, so offsets and lines stay put. */
function blankCode(text: string): string {
  const blank = (s: string): string => s.replace(/[^\n]/g, ' ');
  return text
    .replace(/^( {0,3})(`{3,}|~{3,})[^\n]*\n[\s\S]*?(?:^ {0,3}\2[`~]*[ \t]*$|(?![\s\S]))/gm, blank)
    .replace(/(`+)(?!`)[\s\S]*?(?<!`)\1(?!`)/g, blank);
}

/** The path a link names in this repository, or undefined for a URL, an e-mail or an anchor. */
function localPart(target: string): string | undefined {
  if (/^[a-z][a-z0-9+.-]*:/i.test(target) || target.startsWith('//') || target.startsWith('#')) return undefined;
  const bare = target.replace(/[?#].*$/, '');
  if (bare === '') return undefined;
  try {
    return decodeURIComponent(bare);
  } catch {
    return bare;
  }
}

function inside(root: string, resolved: string): boolean {
  const rel = path.relative(path.resolve(root), resolved);
  return rel === '' || (rel !== '..' && !rel.startsWith(`..${path.sep}`) && !path.isAbsolute(rel));
}

function lineAt(text: string, index: number): number {
  let line = 1;
  for (let i = text.indexOf('\n'); i !== -1 && i < index; i = text.indexOf('\n', i + 1)) line++;
  return line;
}

export function formatViolation(v: Violation): string {
  return `${v.file}:${v.line}: ${v.target} ${v.reason}`;
}

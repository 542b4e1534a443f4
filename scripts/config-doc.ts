/** `npm run docs:config`: rewrites the generated tables of docs/CONFIGURATION.md from src/config/keys.ts. */
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { withConfigReference } from '../src/config/doc.js';

const file = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../docs/CONFIGURATION.md');
const before = readFileSync(file, 'utf8');
const after = withConfigReference(before);
if (after !== before) writeFileSync(file, after);
process.stdout.write(`${path.relative(process.cwd(), file)}: ${after === before ? 'already up to date' : 'updated'}\n`);

#!/usr/bin/env node
import { main } from '../src/cli/main.js';

const code = await main(process.argv.slice(2));
// A foreground daemon keeps running on its own handles; every other command ends here.
if (code !== 0) process.exit(code);

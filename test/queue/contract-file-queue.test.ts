/** FileQueue against the shared JobQueue contract (contract.ts). */

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after } from 'node:test';
import { FileQueue, type JobQueue } from '../../src/queue/index.js';
import { jobQueueContract } from './contract.js';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'mwq-contract-'));
after(() => fs.rmSync(root, { recursive: true, force: true }));
const dirs = new WeakMap<JobQueue, string>();
let n = 0;

jobQueueContract(
  'FileQueue',
  async () => {
    const dir = path.join(root, `q${++n}`);
    const q = await FileQueue.open({ dir });
    dirs.set(q, dir);
    return q;
  },
  {
    reopen: async (closed) => {
      const dir = dirs.get(closed)!;
      const q = await FileQueue.open({ dir });
      dirs.set(q, dir);
      return q;
    },
  },
);

// A queue whose records are read back from disk (hot cache off, tiny segments and read buffer):
// the contract must hold whichever way records reach the ready list.
jobQueueContract('FileQueue, reading from disk', async () => {
  const dir = path.join(root, `q${++n}`);
  return FileQueue.open({ dir, hotCacheBytes: 0, segmentSize: 64, readBufferSize: 4096 });
});

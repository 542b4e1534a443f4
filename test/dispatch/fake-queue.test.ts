/** The in-memory FakeQueue the dispatcher tests use, against the shared JobQueue contract. */
import { jobQueueContract } from '../queue/contract.js';
import { FakeQueue } from './fakes.js';

jobQueueContract('FakeQueue (in memory, test/dispatch/fakes.ts)', () => Promise.resolve(new FakeQueue()));

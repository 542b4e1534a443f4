/** mulberry32: a small seeded PRNG, so a failing randomised test can be replayed with its seed. */
export { seededRandom } from '../../src/simulator/receipts.js';

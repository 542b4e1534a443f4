/**
 * CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), table driven, slicing-by-8.
 *
 * Node 20 has no zlib.crc32 (and no CRC-32C at all), and the project takes no native
 * dependency for it. CRC-32C is the checksum used by iSCSI, ext4 metadata, LevelDB/RocksDB
 * and Kafka record batches; it detects every burst error up to 32 bits and, unlike a plain
 * sum, every run of zero bytes has a non-zero checksum (so a zeroed region never verifies).
 *
 * Check value: crc32c("123456789") === 0xE3069283.
 */

const POLY = 0x82f63b78;

/** 8 tables of 256 entries: T[k*256 + n] = CRC of byte n followed by k zero bytes. */
const T = /* @__PURE__ */ buildTables();

function buildTables(): Int32Array {
  const t = new Int32Array(256 * 8);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ POLY : c >>> 1;
    t[n] = c;
  }
  for (let n = 0; n < 256; n++) {
    let c = t[n];
    for (let k = 1; k < 8; k++) {
      c = t[c & 0xff] ^ (c >>> 8);
      t[k * 256 + n] = c;
    }
  }
  return t;
}

/**
 * Continue a CRC-32C over `buf[start, end)`. Pass the previous result as `crc`
 * (0 to start), so `crc32c(b, crc32c(a))` equals the CRC of a followed by b.
 * Returns an unsigned 32-bit number.
 */
export function crc32c(buf: Uint8Array, crc = 0, start = 0, end = buf.length): number {
  let c = ~crc;
  let i = start;
  const t = T;
  const last8 = end - 8;
  while (i <= last8) {
    c ^= buf[i] | (buf[i + 1] << 8) | (buf[i + 2] << 16) | (buf[i + 3] << 24);
    c =
      t[1792 + (c & 0xff)] ^
      t[1536 + ((c >>> 8) & 0xff)] ^
      t[1280 + ((c >>> 16) & 0xff)] ^
      t[1024 + (c >>> 24)] ^
      t[768 + buf[i + 4]] ^
      t[512 + buf[i + 5]] ^
      t[256 + buf[i + 6]] ^
      t[buf[i + 7]];
    i += 8;
  }
  while (i < end) c = t[(c ^ buf[i++]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}

// A UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then random bits.
// Written here rather than taken from a package: it is twenty lines, and
// the package and the tracker stay free of runtime dependencies.

function randomBytes(n: number): Uint8Array {
  const bytes = new Uint8Array(n)
  const c = (globalThis as { crypto?: { getRandomValues?: (a: Uint8Array) => Uint8Array } }).crypto
  if (c && c.getRandomValues) {
    c.getRandomValues(bytes)
  } else {
    // Node 18 without the global Web Crypto: ids need uniqueness, not secrecy.
    for (let i = 0; i < n; i++) bytes[i] = Math.floor(Math.random() * 256)
  }
  return bytes
}

export function uuidv7(now: number = Date.now()): string {
  const b = randomBytes(16)
  let ms = now
  for (let i = 5; i >= 0; i--) {
    b[i] = ms % 256
    ms = Math.floor(ms / 256)
  }
  b[6] = (b[6] & 0x0f) | 0x70
  b[8] = (b[8] & 0x3f) | 0x80
  let hex = ''
  for (let i = 0; i < 16; i++) hex += (b[i] + 0x100).toString(16).slice(1)
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`
}

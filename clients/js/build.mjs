// Builds the package (ESM, CJS, type declarations) and the browser tracker
// (one minified script, served by the server at /v1/tracker.js).
// The server embeds dist/tracker.min.js; a test rebuilds a copy of this
// package and compares the two.
import { build } from 'esbuild'
import { execFileSync } from 'node:child_process'
import { gzipSync } from 'node:zlib'
import { readFileSync } from 'node:fs'

const out = 'dist'
const common = { entryPoints: ['src/index.ts'], bundle: true, platform: 'neutral', target: 'es2020', logLevel: 'warning' }
await build({ ...common, format: 'esm', outfile: `${out}/index.js` })
await build({ ...common, format: 'cjs', outfile: `${out}/index.cjs` })
await build({
  entryPoints: ['src/tracker.ts'],
  bundle: true,
  minify: true,
  format: 'iife',
  target: 'es2017',
  outfile: `${out}/tracker.min.js`,
  legalComments: 'none',
  logLevel: 'warning',
})
execFileSync(process.execPath, ['node_modules/typescript/bin/tsc', '-p', '.', '--outDir', out], { stdio: 'inherit' })
const tracker = readFileSync(`${out}/tracker.min.js`)
console.log(`tracker.min.js: ${tracker.length} bytes, ${gzipSync(tracker, { level: 9 }).length} gzipped`)

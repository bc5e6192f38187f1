/**
 * Builds the tag: src/tailor.js (+ src/core.js) -> ../server/static/tailor.js, an IIFE, and the
 * module it imports the first time tailor.myData() is called: src/tailor-me.js ->
 * ../server/static/tailor-me.js, an ES module. Both are for ES2019 browsers (every one of them
 * has import()), bundled and minified by esbuild, then minified again by terser (its compressor
 * saves about 120 gzipped bytes more), each with a linked source map that maps through both
 * steps back to src/. The output is committed so the Python server needs no npm at run time;
 * test/build.test.mjs fails when it is stale or over the size budgets.
 *
 * `node build.mjs` writes the files and prints their sizes; `bundle()` returns them without
 * writing (for the tests).
 */
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import * as esbuild from 'esbuild';
import { minify } from 'terser';

const here = dirname(fileURLToPath(import.meta.url));
export const OUTDIR = join(here, '..', 'server', 'static');
/** The tag, on every page. */
export const OUTFILE = join(OUTDIR, 'tailor.js');
/** The visitor's own data (myData), imported by the tag on first use. */
export const ME_OUTFILE = join(OUTDIR, 'tailor-me.js');
/**
 * Gzipped bytes each file may weigh; test/build.test.mjs enforces them. The tag's is 4096: the
 * privacy work (visitor tokens, event ids, myData, forget) took it to 4,388 bytes for a while;
 * terser, myData in its own module, an in-place sanitizer and smaller savings brought it back
 * (see README.md).
 */
export const GZIP_BUDGET = 4096;
export const ME_GZIP_BUDGET = 512;

export const gzipSize = (bytes) => gzipSync(bytes, { level: 9 }).length;

/** esbuild's settings for both files (format aside). */
const ESBUILD = {
  bundle: true,
  minify: true,
  target: 'es2019',
  sourcemap: 'external', // terser writes the sourceMappingURL comment
  legalComments: 'none',
  charset: 'utf8',
  write: false,
  logLevel: 'warning',
};

/**
 * `entry` (a file of src/) built by esbuild in `format`, then terser: [{path, contents}] of
 * `outfile` and its source map. terser reads esbuild's map, so the final map points into src/.
 */
async function build(entry, outfile, format, define = {}) {
  const result = await esbuild.build({ ...ESBUILD, entryPoints: [join(here, 'src', entry)], outfile, format, define });
  const text = (path) => result.outputFiles.find((f) => f.path === path).text;
  const name = basename(outfile);
  const out = await minify(
    { [name]: text(outfile) },
    {
      ecma: 2019,
      module: format === 'esm',
      compress: { passes: 2, unsafe_arrows: true, hoist_funs: true }, // no function here is a constructor
      format: { ecma: 2019 },
      sourceMap: { content: text(outfile + '.map'), url: name + '.map', includeSources: true },
    },
  );
  const map = JSON.parse(out.map);
  delete map.file; // as esbuild writes it: the file is the one that links the map
  return [
    { path: outfile, contents: Buffer.from(out.code + '\n') },
    { path: outfile + '.map', contents: Buffer.from(JSON.stringify(map)) },
  ];
}

/** The build outputs as [{path, contents}] (absolute paths, Uint8Array contents), not written. */
export async function bundle() {
  const { version } = JSON.parse(readFileSync(join(here, 'package.json'), 'utf8'));
  return [...(await build('tailor.js', OUTFILE, 'iife', { __VERSION__: JSON.stringify(version) })), ...(await build('tailor-me.js', ME_OUTFILE, 'esm'))];
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const files = await bundle();
  for (const f of files) {
    mkdirSync(dirname(f.path), { recursive: true });
    writeFileSync(f.path, f.contents);
  }
  for (const [path, budget] of [
    [OUTFILE, GZIP_BUDGET],
    [ME_OUTFILE, ME_GZIP_BUDGET],
  ]) {
    const js = files.find((f) => f.path === path).contents;
    console.log(`${basename(path)}: ${js.length} bytes, ${gzipSize(js)} gzipped (budget ${budget})`);
  }
}

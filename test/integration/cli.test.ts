// The command line as scripts and people see it: help, exit codes, progress on a terminal and
// in batch logs, --quiet and --json.
import { writeFileSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BERTH, berth, cleanup, makeLayout, run, tempDir } from '../helpers.js';

let work: string;
let source: string;

beforeAll(async () => {
  work = tempDir('cli');
  mkdirSync(path.join(work, 'src'));
  writeFileSync(path.join(work, 'src', 'hello.txt'), 'hello\n'.repeat(100000));
  const tar = await run('bash', ['-c', `tar -C ${work}/src -cf - hello.txt | base64 -w0`]);
  source = `oci:${makeLayout(path.join(work, 'oci'), [Buffer.from(tar.stdout, 'base64')]).dir}`;
});
afterAll(() => cleanup(work));

const out = (name: string) => path.join(work, `${name}.sqsh`);

describe('berth convert, as scripts and people see it', () => {
  it('--help lists the commands', async () => {
    const r = await berth('--help');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/convert \[options\] <source>/);
    expect(r.stdout).toMatch(/inspect \[options\] <image>/);
  });

  it('without a terminal, prints a few plain lines on stderr and the path on stdout', async () => {
    const r = await berth('convert', source, '-o', out('plain'));
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`${out('plain')}\n`);
    const lines = r.stderr.trim().split('\n');
    expect(lines[0]).toMatch(/^berth: converting oci:.* \(1 layer, .*\)$/);
    expect(lines).toContainEqual(expect.stringMatching(/^berth: merging layer 1\/1 sha256:[0-9a-f]{64}/));
    expect(lines.at(-1)).toMatch(/^berth: wrote .*plain\.sqsh \(.*, zstd\) in \d+\.\d s$/);
    expect(r.stderr).not.toContain('\r');
  });

  it('--quiet prints nothing, --json prints one JSON object', async () => {
    const quiet = await berth('convert', source, '-o', out('quiet'), '--quiet');
    expect([quiet.code, quiet.stdout, quiet.stderr]).toEqual([0, '', '']);
    const json = await berth('convert', source, '-o', out('json'), '--json', '--quiet');
    expect(JSON.parse(json.stdout)).toMatchObject({ output: out('json'), compression: 'zstd', source });
  });

  it('on a terminal, draws a progress bar', async () => {
    // script(1) gives berth a pseudo-terminal, as an interactive user would.
    const r = await run('script', ['-qec', `${process.execPath} ${BERTH} convert ${source} -o ${out('tty')}`, '/dev/null']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/merging layer 1\/1 \[[#-]{24}\] \d+%/);
    expect(r.stdout).toContain('\r\x1b[K');
  });

  it("rejects bad flags with exit status 125 (berth's own failure) and a hint", async () => {
    const r = await berth('convert', source, '-o', out('bad'), '--compression', 'brotli');
    expect(r.code).toBe(125);
    expect(r.stderr).toMatch(/unknown compression 'brotli'[\s\S]*zstd, gzip, xz, lz4, none/);
    const none = await berth('convert', source, '-o', out('none'), '--compression', 'none');
    expect(none.code).toBe(125);
    expect(none.stderr).toMatch(/cannot write an uncompressed squashfs[\s\S]*lz4/);
    const jobs = await berth('convert', source, '-o', out('jobs'), '-j', '0');
    expect(jobs.code).toBe(125);
    expect(jobs.stderr).toMatch(/--jobs wants a positive whole number/);
  });
});

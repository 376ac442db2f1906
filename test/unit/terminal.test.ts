// Image text on a terminal (src/cli/terminal.ts): the escaping itself, and berth inspect of an
// image whose labels, Env and WorkingDir carry escape sequences and forged lines (the real CLI
// on a real conversion; --json must give the same text back exactly).
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { printable } from '../../src/cli/terminal.js';
import { BERTH, cleanup, makeLayout, run, tempDir } from '../helpers.js';

const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]/;

describe('printable', () => {
  it.each([
    ['plain text, unicode too: é ✓', 'plain text, unicode too: é ✓'],
    ['a\nb\rc\td', 'a\\nb\\rc\\td'],
    ['\x1b]0;title\x07\x1b[2J', '\\e]0;title\\x07\\e[2J'],
    ['nul\x00 del\x7f', 'nul\\x00 del\\x7f'],
    ['csi\u009b31m', 'csi\\x9b31m'],
    ['bidi \u202egnp.exe', 'bidi \\u202egnp.exe'],
    ['line\u2028sep', 'line\\u2028sep'],
  ])('%j -> %s', (input, expected) => {
    expect(printable(input)).toBe(expected);
    expect(printable(input)).not.toMatch(UNSAFE);
  });
});

describe('berth inspect of a hostile image', () => {
  let work: string;
  let image: string;
  const label = 'fine\x1b]0;owned\x07\nUser:           (root)';
  const config = {
    Env: ['PATH=/bin', 'EVIL=\x1b[2J\x1b[H\u009b31m'], Cmd: ['/bin/sh', '-c', 'echo \x1b[1m'], WorkingDir: '/w\rWorkingDir:      /',
    Labels: { 'org.example.note': label, 'key\nLabels:          forged=1': 'v' },
  };

  beforeAll(async () => {
    work = tempDir('terminal');
    mkdirSync(path.join(work, 'src'));
    writeFileSync(path.join(work, 'src', 'f'), 'x');
    const tar = await run('bash', ['-c', `tar -C ${work}/src -cf - f | base64 -w0`]);
    const layout = makeLayout(path.join(work, 'oci'), [Buffer.from(tar.stdout, 'base64')], { config });
    image = path.join(work, 'hostile.sqsh');
    const r = await run(process.execPath, [BERTH, 'convert', `oci:${layout.dir}`, '-o', image, '-q']);
    expect(r.code, r.stderr).toBe(0);
  });
  afterAll(() => cleanup(work));

  it('prints every value escaped: no control character, no line berth did not write', async () => {
    const r = await run(process.execPath, [BERTH, 'inspect', image]);
    expect(r.code).toBe(0);
    // berth's own newlines end its lines; nothing else unsafe is left.
    expect(r.stdout.replaceAll('\n', '')).not.toMatch(UNSAFE);
    const lines = r.stdout.trimEnd().split('\n');
    // Each line is a field of berth's, or an indented continuation of Env or Labels.
    expect(lines.filter((l) => !/^(\w[\w ]*:\s|\s{17}\S)/.test(l))).toEqual([]);
    expect(lines.filter((l) => l.startsWith('User:'))).toEqual(['User:            (root)']);
    expect(lines.filter((l) => l.startsWith('WorkingDir:'))).toEqual(['WorkingDir:      /w\\rWorkingDir:      /']);
    expect(lines.filter((l) => l.startsWith('Labels:'))).toHaveLength(1);
    expect(r.stdout).toContain('org.example.note=fine\\e]0;owned\\x07\\nUser:           (root)');
    expect(r.stdout).toContain('EVIL=\\e[2J\\e[H\\x9b31m');
  });

  it('--json gives the text back exactly', async () => {
    const r = await run(process.execPath, [BERTH, 'inspect', image, '--json']);
    const info = JSON.parse(r.stdout) as { image: { config: typeof config } };
    expect(info.image.config.Labels).toEqual(config.Labels);
    expect(info.image.config.Env).toEqual(config.Env);
    expect(info.image.config.WorkingDir).toBe(config.WorkingDir);
  });
});

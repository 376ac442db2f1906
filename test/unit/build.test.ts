// berth build's pure parts: Docker's substitution, the Dockerfile as stages, where COPY's sources land.
import { describe, expect, it } from 'vitest';
import { globRegExp, mapName } from '../../src/build/context.js';
import { parseDockerfile } from '../../src/build/dockerfile.js';
import { BuildCache, stepKey } from '../../src/build/cache.js';
import { entryOf, layerOwners, LayerWriter } from '../../src/build/layer.js';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { applyMetadata, type MetadataStep } from '../../src/build/config.js';
import { expandText, expandWord } from '../../src/build/words.js';
import { lockCache, parseMount } from '../../src/build/mounts.js';
import { spawnSync } from 'node:child_process';
import type { BerthError } from '../../src/errors.js';

const vars: Record<string, string> = { A: 'one', EMPTY: '', P: '/opt' };
const x = (w: string) => expandWord(w, (k) => vars[k]);

describe('substitution', () => {
  it.each([
    ['$A', 'one'], ['${A}x', 'onex'], ['${NONE:-d}', 'd'], ['${EMPTY:-d}', 'd'], ['${EMPTY-d}', ''], ['${A:+alt}', 'alt'],
    ['${NONE:+alt}', ''], ['${NONE+alt}', ''], ['${EMPTY+alt}', 'alt'], ["'$A'", '$A'], ['"$A b"', 'one b'], ['\\$A', '$A'],
    ['${P}/bin', '/opt/bin'], ['${NONE:-${A}}', 'one'], ['$', '$'], ['a$', 'a$'],
  ])('%s', (raw, want) => expect(x(raw)).toBe(want));

  it('a heredoc body: variables only, its quotes are text', () => {
    expect(expandText(`'$A' "\${P}/x" \\$A $NONE.\n`, (k) => vars[k])).toBe(`'one' "/opt/x" $A .\n`);
  });

  it('refuses a substitution it does not know', () => {
    expect(() => x('${A/x/y}')).toThrow(/bad substitution/);
    expect(() => x('${A')).toThrow(/bad substitution/);
  });
});

describe('the Dockerfile', () => {
  it('stages, global ARGs, exec and shell forms, flags', () => {
    const df = parseDockerfile(['ARG V=1', 'FROM busybox:${V} AS Build', 'RUN echo a && \\', '  echo b', 'RUN ["/bin/echo", "x y"]',
      'COPY --from=build --chown=1:2 a* /d/', 'ENV K="v w" L=2', 'FROM scratch', 'HEALTHCHECK CMD true'].join('\n'), 'Dockerfile');
    expect(df.globalArgs).toEqual([{ name: 'V', value: '1' }]);
    expect(df.stages.map((s) => [s.name, s.from])).toEqual([['build', 'busybox:${V}'], [undefined, 'scratch']]);
    const [run1, run2, copy, env] = df.stages[0]!.steps;
    expect(run1).toMatchObject({ kind: 'RUN', line: 3, command: { shell: 'echo a &&   echo b' } });
    expect(run2).toMatchObject({ kind: 'RUN', command: { exec: ['/bin/echo', 'x y'] } });
    expect(copy).toMatchObject({ kind: 'COPY', flags: { from: 'build', chown: '1:2' }, sources: ['a*'], dest: '/d/', text: 'COPY --from=build --chown=1:2 a* /d/' });
    expect(env).toMatchObject({ kind: 'ENV', pairs: [['K', '"v w"'], ['L', '2']] });
    expect(df.ignored).toEqual([expect.stringContaining('HEALTHCHECK is not applied')]);
  });

  it.each([
    ['RUN x', /comes before the first FROM/],
    ['FROM a\nFOO bar', /does not know FOO/],
    ['FROM a\nRUN --network=none x', /--network is not supported/],
    ['FROM a\nCMD <<EOF\nx\nEOF', /CMD takes no heredoc/],
    ['FROM a\nRUN <<EOF\necho never ended', /the heredoc EOF has no line EOF that ends it/],
    ['FROM a\nCOPY <<x/y /d\nz\nx/y', /not a file name berth takes/],
    ['FROM a\nCOPY <<EOF\nz\nEOF', /needs a source and a destination/],
    ['FROM a\nCOPY onlyone', /needs a source and a destination/],
    ['FROM a AS x\nFROM b AS x', /a second stage named x/],
    ['FROM a\nSHELL /bin/bash', /SHELL takes the JSON form/],
    ['# nothing', /has no FROM/],
  ])('refuses %j', (text, why) => expect(() => parseDockerfile(text, 'Dockerfile')).toThrow(why));
});

describe('heredocs, as BuildKit runs them', () => {
  const steps = (text: string) => parseDockerfile(`FROM a\n${text}\nENV AFTER=1`, 'Dockerfile').stages[0]!.steps;

  it('one heredoc alone is the script; with more on the line, the shell reads them; <<- strips tabs; the bodies keep comments and backslashes', () => {
    const [one, tabs, bash, two, after] = steps([
      'RUN <<EOF', '# a comment, kept', 'echo a \\', '  b', 'EOF',
      'RUN <<-EOT', '\techo tabbed', '\tEOT',
      'RUN bash <<EOF', 'echo $BASH_VERSION', 'EOF',
      'RUN <<A cat > /a && <<"B" sh', 'a', 'A', 'echo b', 'B',
    ].join('\n'));
    expect(one).toMatchObject({ kind: 'RUN', line: 2, text: 'RUN <<EOF', command: { shell: '# a comment, kept\necho a \\\n  b\n' } });
    expect(tabs).toMatchObject({ command: { shell: 'echo tabbed\n' } });
    expect(bash).toMatchObject({ command: { shell: 'bash <<EOF\necho $BASH_VERSION\nEOF' } });
    expect(two).toMatchObject({ command: { shell: '<<A cat > /a && <<"B" sh\na\nA\necho b\nB' } });
    expect(after).toMatchObject({ kind: 'ENV', line: 18 });
  });

  it('a #! heredoc is run as a file; COPY heredocs are files, substituted unless the name is quoted', () => {
    const [script, copy] = steps(['RUN <<PY', '#!/usr/bin/python3', 'print(1)', 'PY', 'COPY --chmod=755 <<one <<"two" /d/', '$A', 'one', '$B', 'two'].join('\n'));
    expect(script).toMatchObject({ command: { exec: ['/tmp/.berth-heredoc/PY'] }, script: { name: 'PY', data: '#!/usr/bin/python3\nprint(1)\n' } });
    expect(copy).toMatchObject({ kind: 'COPY', flags: { chmod: '755' }, sources: [], dest: '/d/', heredocs: [{ name: 'one', data: '$A\n', expand: true }, { name: 'two', data: '$B\n', expand: false }] });
  });
});

describe('RUN --mount', () => {
  const mount = (v: string) => parseMount(v, '/w', 'Dockerfile:2: RUN', () => {});
  it('cache and bind mounts, their defaults', () => {
    expect(mount('type=cache,target=/root/.cache/pip')).toEqual({ type: 'cache', target: '/root/.cache/pip', id: '/root/.cache/pip', sharing: 'shared', readOnly: false });
    expect(mount('type=cache,dst=rel,id=pip,sharing=locked,ro')).toEqual({ type: 'cache', target: '/w/rel', id: 'pip', sharing: 'locked', readOnly: true });
    expect(mount('target=/src')).toEqual({ type: 'bind', target: '/src', source: '/' });
    expect(mount('type=bind,from=build,source=/out,target=/in')).toEqual({ type: 'bind', target: '/in', source: '/out', from: 'build' });
  });
  it.each([
    ['type=secret,id=tok', /does not offer type=secret[\s\S]*/, /keep the secret out/],
    ['type=ssh', /type=ssh/, /no agent of yours/],
    ['type=tmpfs,target=/x', /type=tmpfs/, /already/],
    ['type=bind,target=/x,rw', /read-only/, /copy what the step changes/],
    ['type=cache', /names no target/, /target=DIR/],
    ['type=cache,target=/x,sharing=maybe', /shared, locked or private/, /sharing=locked/],
    ['type=cache,target=/x,from=a', /takes no from/, /its keys/],
  ])('refuses %s', (v, why, hint) => {
    const e = (() => { try { mount(v); } catch (err: unknown) { return err as BerthError; } return undefined; })();
    expect(e?.message).toMatch(why);
    expect(e?.hint).toMatch(hint);
  });
});

describe('a cache mount\'s lock', () => {
  it('private: none while a live build has it; a dead build\'s lock is taken over; released, it is free', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'berth-cache-lock-'));
    try {
      const cache = path.join(dir, 'c');
      mkdirSync(`${cache}.lock`);
      writeFileSync(`${cache}.lock/pid`, `${process.ppid}\n`); // alive
      expect(await lockCache(cache, false, () => {})).toBeUndefined();
      const gone = spawnSync('true').pid!; // exited and reaped
      writeFileSync(`${cache}.lock/pid`, `${gone}\n`);
      const release = await lockCache(cache, true, () => {});
      expect(readFileSync(`${cache}.lock/pid`, 'utf8')).toBe(`${process.pid}\n`);
      release!();
      expect(existsSync(`${cache}.lock`)).toBe(false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('COPY sources', () => {
  it('globs as Go filepath.Match: * never crosses /', () => {
    expect(globRegExp('src/*.c').test('src/a.c')).toBe(true);
    expect(globRegExp('src/*.c').test('src/x/a.c')).toBe(false);
    expect(globRegExp('[ab]?.txt').test('a1.txt')).toBe(true);
    expect(globRegExp('[!ab]?.txt').test('a1.txt')).toBe(false);
  });

  it.each([
    // name, isDir, sources, dest -> target
    ['a.txt', false, ['a.txt'], '/app/b.txt', 'app/b.txt'],
    ['a.txt', false, ['a.txt'], '/app/', 'app/a.txt'],
    ['dir', true, ['dir'], '/app', 'app'],
    ['dir/x/y', false, ['dir'], '/app', 'app/x/y'],
    ['src/a.c', false, ['src/*.c'], '/s', 's/a.c'],
    ['src/a.c', false, [''], '/ctx', 'ctx/src/a.c'],
    ['other', false, ['a.txt'], '/app/', undefined],
  ])('%s from %j to %s', (name, isDir, sources, dest, want) => expect(mapName(name, isDir, sources, dest)?.target).toBe(want));
});

it('a step key changes with its parent, instruction, arguments and files, not with the order of arguments', () => {
  const k = stepKey({ parent: 'p', instruction: 'RUN x', args: { A: '1', B: '2' }, files: 'f' });
  expect(stepKey({ parent: 'p', instruction: 'RUN x', args: { B: '2', A: '1' }, files: 'f' })).toBe(k);
  for (const other of [{ parent: 'q' }, { instruction: 'RUN y' }, { args: { A: '2', B: '2' } }, { files: 'g' }]) {
    expect(stepKey({ parent: 'p', instruction: 'RUN x', args: { A: '1', B: '2' }, files: 'f', ...other })).not.toBe(k);
  }
});

describe('metadata instructions', () => {
  const step = (text: string) => parseDockerfile(`FROM x\n${text}`, 'Dockerfile').stages[0]!.steps[0] as MetadataStep;
  const start = { config: { Env: ['A=1'], Labels: {}, Cmd: ['base-cmd'], WorkingDir: '/w' }, shell: ['/bin/sh', '-c'], cmdSet: false };
  const apply = (text: string, state = start) => applyMetadata(step(text), state, (w) => expandWord(w, (k) => (k === 'A' ? '1' : undefined)));

  it('ENTRYPOINT clears the CMD the base image had, not one the stage set', () => {
    expect(apply('ENTRYPOINT ["/e"]').state.config).not.toHaveProperty('Cmd');
    const withCmd = apply('CMD ["mine"]').state;
    expect(apply('ENTRYPOINT ["/e"]', withCmd).state.config).toMatchObject({ Entrypoint: ['/e'], Cmd: ['mine'] });
  });

  it('shell forms go through SHELL; WORKDIR is relative to the last; EXPOSE defaults to tcp', () => {
    const bash = apply('SHELL ["/bin/bash", "-c"]').state;
    expect(apply('CMD echo $A', bash).state.config.Cmd).toEqual(['/bin/bash', '-c', 'echo $A']);
    expect(apply('WORKDIR sub/$A').state.config.WorkingDir).toBe('/w/sub/1');
    expect(apply('EXPOSE 80 53/UDP').state.config.ExposedPorts).toEqual({ '80/tcp': {}, '53/udp': {} });
    expect(apply('ENV A=2 B=$A').state.config.Env).toEqual(['A=2', 'B=1']);
  });
});

describe("who owns what in a chain of berth's layers", () => {
  it('reads the headers alone: later layers win, whiteouts and opaque directories remove, pax names and ids count', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'berth-layer-owners-'));
    try {
      const one = new LayerWriter(path.join(dir, 'one.partial'));
      one.entry(entryOf('a', 'dir', { uid: 5, gid: 5 }));
      one.entry(entryOf('a/f', 'file', { uid: 6, gid: 6, size: 3 }), Buffer.from('abc'));
      one.entry(entryOf('b', 'dir', { uid: 7, gid: 7 }));
      one.entry(entryOf('b/inner', 'file', { uid: 7, gid: 7 }));
      const long = `d/${'x'.repeat(150)}`;
      one.entry(entryOf(long, 'symlink', { uid: 3_000_000, gid: 9, linkname: 'a' }));
      const l1 = one.finish(dir);
      const two = new LayerWriter(path.join(dir, 'two.partial'));
      two.entry(entryOf('a/.wh.f', 'file'));
      two.entry(entryOf('b', 'dir', { uid: 8, gid: 8 }));
      two.entry(entryOf('b/.wh..wh..opq', 'file'));
      const l2 = two.finish(dir);
      const owners = layerOwners([l1.file, l2.file]);
      expect(Object.fromEntries(owners)).toEqual({
        a: { type: '5', uid: 5, gid: 5 }, b: { type: '5', uid: 8, gid: 8 }, [long]: { type: '2', uid: 3_000_000, gid: 9 },
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('the build cache is bounded', () => {
  it('drops the steps used least recently, then the layers no step names; the current build\'s stay', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'berth-build-cache-'));
    try {
      const layer = (c: string) => `sha256:${c.repeat(64)}`;
      const old = new Date(Date.now() - 7200_000);
      const seed = new BuildCache(dir);
      // Three earlier steps of 1000 bytes of layer each, used one after another.
      for (const [i, c] of ['a', 'b', 'c'].entries()) {
        writeFileSync(seed.layerFile(layer(c)), Buffer.alloc(1000));
        utimesSync(seed.layerFile(layer(c)), old, old);
        seed.put(`step-${c}`, { layers: [layer(c)], image: false });
        const when = new Date(Date.now() - 3600_000 + i * 1000);
        utimesSync(path.join(dir, 'build/steps', `step-${c}.json`), when, when);
      }
      // A new build uses step-a again (its record is touched) and makes step-d.
      const cache = new BuildCache(dir);
      expect(cache.get('step-a')).toBeDefined();
      writeFileSync(cache.layerFile(layer('d')), Buffer.alloc(1000));
      cache.put('step-d', { layers: [layer('d')], image: false });
      cache.trim(2600); // room for about two steps
      expect(existsSync(path.join(dir, 'build/steps/step-a.json'))).toBe(true); // this build's
      expect(existsSync(path.join(dir, 'build/steps/step-d.json'))).toBe(true); // this build's
      expect(existsSync(path.join(dir, 'build/steps/step-b.json'))).toBe(false); // least recently used
      expect(existsSync(cache.layerFile(layer('b')))).toBe(false);
      expect(existsSync(path.join(dir, 'build/steps/step-c.json'))).toBe(false);
      expect(existsSync(cache.layerFile(layer('a')))).toBe(true);
      expect(cache.get('step-b')).toBeUndefined();
      expect(cache.get('step-a')?.layers).toEqual([layer('a')]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

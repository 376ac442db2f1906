// berth build's pure parts: Docker's substitution, the Dockerfile as stages, where COPY's sources land.
import { describe, expect, it } from 'vitest';
import { globRegExp, mapName } from '../../src/build/context.js';
import { parseDockerfile } from '../../src/build/dockerfile.js';
import { BuildCache, stepKey } from '../../src/build/cache.js';
import { existsSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { applyMetadata, type MetadataStep } from '../../src/build/config.js';
import { expandWord } from '../../src/build/words.js';

const vars: Record<string, string> = { A: 'one', EMPTY: '', P: '/opt' };
const x = (w: string) => expandWord(w, (k) => vars[k]);

describe('substitution', () => {
  it.each([
    ['$A', 'one'], ['${A}x', 'onex'], ['${NONE:-d}', 'd'], ['${EMPTY:-d}', 'd'], ['${EMPTY-d}', ''], ['${A:+alt}', 'alt'],
    ['${NONE:+alt}', ''], ['${NONE+alt}', ''], ['${EMPTY+alt}', 'alt'], ["'$A'", '$A'], ['"$A b"', 'one b'], ['\\$A', '$A'],
    ['${P}/bin', '/opt/bin'], ['${NONE:-${A}}', 'one'], ['$', '$'], ['a$', 'a$'],
  ])('%s', (raw, want) => expect(x(raw)).toBe(want));

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
    ['FROM a\nRUN --mount=type=cache x', /--mount is not supported/],
    ['FROM a\nCOPY onlyone', /needs a source and a destination/],
    ['FROM a AS x\nFROM b AS x', /a second stage named x/],
    ['FROM a\nSHELL /bin/bash', /SHELL takes the JSON form/],
    ['# nothing', /has no FROM/],
    ['FROM a\nRUN <<EOF\necho hi\nEOF', /heredocs are not supported/],
  ])('refuses %j', (text, why) => expect(() => parseDockerfile(text, 'Dockerfile')).toThrow(why));
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

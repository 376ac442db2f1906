// A Dockerfile as berth builds it: parsed by dockerfile-ast (the parser of the Dockerfile
// language server, maintained and fully typed; README "Dependencies" says why), then turned
// into plain stages of plain instructions whose words are still unexpanded: substitution needs
// the values of the build (src/build/words.ts), which only the builder knows.
import { createRequire } from 'node:module';
import type { Instruction } from 'dockerfile-ast';
import { BerthError } from '../errors.js';

/** A command as RUN, CMD, ENTRYPOINT and SHELL take it: exec form (JSON array) or shell form. */
export type CommandForm = { exec: string[] } | { shell: string };

interface Common {
  /** The line it starts on, from 1. */
  line: number;
  /** As written (continuations joined), for STEP lines and errors. */
  text: string;
}

export type Step = Common & (
  | { kind: 'RUN'; command: CommandForm }
  | { kind: 'COPY' | 'ADD'; flags: Record<string, string>; sources: string[]; dest: string }
  | { kind: 'ENV' | 'LABEL'; pairs: [string, string][] }
  | { kind: 'ARG'; name: string; value?: string }
  | { kind: 'WORKDIR' | 'USER' | 'STOPSIGNAL'; word: string }
  | { kind: 'EXPOSE' | 'VOLUME'; words: string[] }
  | { kind: 'CMD' | 'ENTRYPOINT' | 'SHELL'; command: CommandForm }
);

export interface Stage {
  /** `FROM x AS name`: its name, lower-cased as Docker compares them. */
  name?: string;
  /** The image, unexpanded (global ARGs apply). */
  from: string;
  line: number;
  text: string;
  steps: Step[];
}

export interface Dockerfile {
  /** ARGs before the first FROM: they may be used in FROM lines, and redeclared in stages. */
  globalArgs: { name: string; value?: string }[];
  stages: Stage[];
  /** Instructions berth reads but does not apply, with why (told as warnings). */
  ignored: string[];
}

const COPY_FLAGS: Record<string, readonly string[]> = { COPY: ['from', 'chown', 'chmod', 'link'], ADD: ['chown', 'chmod', 'link'] };

function invalid(file: string, i: Common, why: string, hint: string): BerthError {
  return new BerthError('USAGE', `${file}:${i.line}: ${i.text}: ${why}`, hint);
}

/** Exec form when the arguments are a JSON array of strings (Docker's rule), else shell form. */
function commandForm(content: string): CommandForm {
  const t = content.trim();
  if (t.startsWith('[')) {
    try {
      const v: unknown = JSON.parse(t);
      if (Array.isArray(v) && v.every((s) => typeof s === 'string')) return { exec: v as string[] };
    } catch {
      // Not JSON: shell form, as Docker takes it.
    }
  }
  return { shell: t };
}

/** The words after the flags; a JSON array form (COPY ["a b", "c"]) as its strings. */
function words(i: Instruction, content: string): string[] {
  const form = commandForm(content);
  return "exec" in form ? form.exec : i.getArguments().map((a) => a.getValue());
}

function flagsOf(i: Instruction): { name: string; value: string | null }[] {
  return 'getFlags' in i && typeof i.getFlags === 'function' ? (i.getFlags() as { getName(): string; getValue(): string | null }[]).map((f) => ({ name: f.getName(), value: f.getValue() })) : [];
}

function propertiesOf(i: Instruction): [string, string][] {
  const props = (i as unknown as { getProperties(): { getName(): string; getUnescapedValue(): string | null }[] }).getProperties();
  return props.map((p) => [p.getName(), p.getUnescapedValue() ?? '']);
}

function step(file: string, i: Instruction, ignored: string[]): Step | undefined {
  const flagText = flagsOf(i).map((f) => ` --${f.name}${f.value === null ? '' : `=${f.value}`}`).join('');
  const common: Common = { line: i.getRange().start.line + 1, text: `${i.getKeyword()}${flagText} ${(i.getArgumentsContent() ?? '').replace(/\s+/g, ' ').trim()}`.trim() };
  const kind = i.getKeyword();
  const content = i.getArgumentsContent() ?? '';
  const noFlags = () => {
    const f = flagsOf(i)[0];
    if (f && kind !== 'COPY' && kind !== 'ADD') throw invalid(file, common, `--${f.name} is not supported`, `berth build takes ${kind} without flags (RUN --mount and --network are not implemented)`);
  };
  switch (kind) {
    case 'RUN':
    case 'CMD':
    case 'ENTRYPOINT':
    case 'SHELL': {
      noFlags();
      const command = commandForm(content);
      if ('shell' in command && /^<<-?["']?[A-Za-z_]/.test(command.shell)) throw invalid(file, common, 'heredocs are not supported yet', `write the script into the context and COPY it, or use ${kind} with && and \\ continuations`);
      if (kind === 'SHELL' && !('exec' in command)) throw invalid(file, common, 'SHELL takes the JSON form', 'e.g. SHELL ["/bin/bash", "-c"]');
      return { ...common, kind, command };
    }
    case 'COPY':
    case 'ADD': {
      const flags: Record<string, string> = {};
      for (const f of flagsOf(i)) {
        if (!COPY_FLAGS[kind]!.includes(f.name)) throw invalid(file, common, `--${f.name} is not supported`, `berth build's ${kind} takes ${COPY_FLAGS[kind]!.map((n) => `--${n}`).join(', ')}`);
        flags[f.name] = f.value ?? 'true';
      }
      const w = words(i, content.replace(/^(\s*--\S+\s+)*/, ''));
      if (w.length < 2) throw invalid(file, common, 'needs a source and a destination', `write ${kind} SRC... DEST`);
      return { ...common, kind, flags, sources: w.slice(0, -1), dest: w[w.length - 1]! };
    }
    case 'ENV':
    case 'LABEL': {
      const pairs = propertiesOf(i);
      if (pairs.length === 0) throw invalid(file, common, 'names nothing', `write ${kind} NAME=value`);
      return { ...common, kind, pairs };
    }
    case 'ARG': {
      const [p, extra] = propertiesOf(i);
      if (!p || extra) throw invalid(file, common, 'takes one NAME[=default]', 'write one ARG line per argument');
      const hasValue = content.includes('=');
      return { ...common, kind, name: p[0], ...(hasValue ? { value: p[1] } : {}) };
    }
    case 'WORKDIR':
    case 'USER':
    case 'STOPSIGNAL': {
      noFlags();
      const w = i.getArguments().map((a) => a.getValue());
      if (w.length !== 1) throw invalid(file, common, `takes one argument`, `write ${kind} VALUE`);
      return { ...common, kind, word: w[0]! };
    }
    case 'EXPOSE':
    case 'VOLUME':
      noFlags();
      return { ...common, kind, words: words(i, content) };
    case 'MAINTAINER':
    case 'HEALTHCHECK':
    case 'ONBUILD':
      ignored.push(`${file}:${common.line}: ${kind} is not applied (the OCI image config has no place for it${kind === 'MAINTAINER' ? '; use LABEL org.opencontainers.image.authors=...' : ''})`);
      return undefined;
    default:
      throw invalid(file, common, `berth build does not know ${kind}`, 'see the README, "berth build", for the instructions it takes');
  }
}

/** Parses Dockerfile `text` (read from `file`, named in errors). */
export function parseDockerfile(text: string, file: string): Dockerfile {
  // Loaded by berth build alone: every other command (and container start) would pay for it.
  const { DockerfileParser } = createRequire(import.meta.url)('dockerfile-ast') as typeof import('dockerfile-ast');
  const parsed = DockerfileParser.parse(text);
  const globalArgs: Dockerfile['globalArgs'] = [];
  const stages: Stage[] = [];
  const ignored: string[] = [];
  for (const i of parsed.getInstructions()) {
    const kind = i.getKeyword();
    if (kind === 'FROM') {
      const line = i.getRange().start.line + 1;
      const text = `FROM ${(i.getArgumentsContent() ?? '').trim()}`;
      const args = i.getArguments().map((a) => a.getValue());
      if (flagsOf(i).length > 0) throw invalid(file, { line, text }, 'FROM --platform is not supported', 'berth builds for this node\'s platform');
      if (!(args.length === 1 || (args.length === 3 && args[1]!.toLowerCase() === 'as'))) {
        throw invalid(file, { line, text }, 'expected FROM IMAGE [AS NAME]', 'e.g. FROM docker://debian:12 AS build');
      }
      stages.push({ from: args[0]!, ...(args[2] ? { name: args[2].toLowerCase() } : {}), line, text, steps: [] });
      continue;
    }
    const s = step(file, i, ignored);
    if (!s) continue;
    const stage = stages[stages.length - 1];
    if (stage) stage.steps.push(s);
    else if (s.kind === 'ARG') globalArgs.push({ name: s.name, ...(s.value !== undefined ? { value: s.value } : {}) });
    else throw invalid(file, s, 'comes before the first FROM', 'only ARG may come before FROM');
  }
  if (stages.length === 0) throw new BerthError('USAGE', `${file} has no FROM`, 'a Dockerfile starts with FROM IMAGE (after any ARG lines)');
  const names = new Set<string>();
  for (const s of stages) {
    if (s.name === undefined) continue;
    if (names.has(s.name)) throw invalid(file, s, `a second stage named ${s.name}`, 'give each stage its own name');
    names.add(s.name);
  }
  return { globalArgs, stages, ignored };
}

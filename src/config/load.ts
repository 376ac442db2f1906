// Loads the site file (/etc/berth/config.yaml), then the user's (~/.config/berth/config.yaml,
// or the file BERTH_CONFIG names), then environment variables; later ones win. In three steps,
// as changesets' config package takes them: parse (YAML into values, each with where it was
// written), normalize (a variable's text into its setting's type), then validate every value
// against its setting. Every problem is collected and reported at once, each naming its file
// and line or its variable, so one run shows all there is to fix; unknown keys are problems
// too, so a typo never silently does nothing. Code below this edge sees only a typed Config.
import { lstatSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import path from 'node:path';
import type { Node } from 'yaml';
import { BerthError } from '../errors.js';
import { parseTrustSection, type TrustPolicy, type TrustRule } from '../signature/policy.js';
import { longFlag, SETTINGS, type Config, type ConfigValues, type Setting, type SettingKey } from './schema.js';
import { yaml } from './yaml.js';

export const SITE_CONFIG = '/etc/berth/config.yaml';

/**
 * The site's file: /etc/berth/config.yaml. Only where nothing is there at all (so there is no
 * site policy a user could escape) may BERTH_SITE_CONFIG name another, for trials and tests: a
 * file the user cannot read, or a dangling link, is still the site's, and reading it fails.
 */
export function siteConfigPath(env: NodeJS.ProcessEnv, site = SITE_CONFIG): string {
  return env.BERTH_SITE_CONFIG && nothingAt(site) ? env.BERTH_SITE_CONFIG : site;
}

/** Whether the path is known not to exist: ENOENT for it and for no other reason (EACCES on a parent is not "absent"). */
function nothingAt(file: string): boolean {
  try {
    lstatSync(file);
    return false;
  } catch (e: unknown) {
    return (e as { code?: unknown }).code === 'ENOENT';
  }
}

/** A value as written, not yet checked, and where: `FILE:LINE`, or the variable. */
interface Written {
  key: SettingKey;
  value: unknown;
  where: string;
  /** What `berth config` shows as its source: the file, or `$VARIABLE`. */
  source: string;
  /** The variable's own text, when it came from one. */
  text?: string;
}

/** What is wrong (the message names where it was written), and what to do about it. */
interface Problem {
  where: string;
  message: string;
  hint: string;
}

interface Reading {
  written: Written[];
  problems: Problem[];
  /** The file's `trust:` section, when it has one (src/signature/policy.ts). */
  trust?: TrustRule[];
}

const KEYS = Object.keys(SETTINGS) as SettingKey[];
const settingOf = (key: SettingKey): Setting => SETTINGS[key];
const leafOf = (key: string) => key.slice(key.indexOf('.') + 1);
const sectionsOf = (keys: readonly string[]) => [...new Set(keys.map((k) => k.split('.')[0]!))];

export function userConfigPath(env: NodeJS.ProcessEnv): string {
  if (env.BERTH_CONFIG) return env.BERTH_CONFIG;
  return path.join(env.XDG_CONFIG_HOME || path.join(env.HOME || homedir(), '.config'), 'berth', 'config.yaml');
}

// ---- parse -------------------------------------------------------------------------------

/** A YAML value as plain data: a scalar's value, a list of scalars' values, else the node (which no setting accepts). */
function plainValue(node: Node | null): unknown {
  const { isScalar, isSeq } = yaml();
  if (isScalar(node)) return node.value;
  if (isSeq(node)) return node.items.map((i) => (isScalar(i) ? i.value : i));
  return node;
}

/** One file's settings as written, and what is wrong with its shape (syntax, unknown keys). */
function readFileSettings(text: string, file: string): Reading {
  const { LineCounter, parseDocument, isMap, isScalar } = yaml();
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines });
  const at = (node: { range?: [number, number, number] | null } | null | undefined) => `${file}:${node?.range ? lines.linePos(node.range[0]).line : 1}`;
  const reading: Reading = { written: [], problems: [] };
  const problem = (where: string, message: string, hint: string) => reading.problems.push({ where, message: `${where}: ${message}`, hint });
  if (doc.errors.length > 0) {
    // Past a syntax error the document means nothing reliable: its errors are all there is to say.
    for (const e of doc.errors) problem(`${file}:${lines.linePos(e.pos[0]).line}`, `not valid YAML: ${e.message.split('\n')[0]}`, 'fix the syntax (indentation, colons, quotes)');
    return reading;
  }
  if (doc.contents === null) return reading;
  if (!isMap(doc.contents)) {
    problem(`${file}:1`, 'the file must be a mapping of sections', 'e.g.\ncache:\n  dir: /shared/berth');
    return reading;
  }
  for (const section of doc.contents.items) {
    const name = isScalar(section.key) ? String(section.key.value) : '?';
    if (name === 'trust') {
      const scalar = (n: unknown) => (isScalar(n) ? n.value : undefined);
      const trust = parseTrustSection(section.value as Node | null, (n) => (n ? at(n) : at(section.key as Node)), isMap, scalar);
      reading.trust = trust.rules;
      reading.problems.push(...trust.problems);
      continue;
    }
    const inSection = KEYS.filter((k) => k.startsWith(`${name}.`));
    if (inSection.length === 0) {
      problem(at(section.key as Node), `unknown section '${name}'`, `the sections are: ${[...sectionsOf(KEYS), 'trust'].join(', ')}`);
      continue;
    }
    if (!isMap(section.value)) {
      problem(at(section.key as Node), `'${name}' must hold settings`, `e.g. ${leafOf(inSection[0]!)}: ...`);
      continue;
    }
    for (const item of section.value.items) {
      const written = `${name}.${isScalar(item.key) ? String(item.key.value) : '?'}`;
      const key = inSection.find((k) => k === written);
      if (!key) {
        problem(at(item.key as Node), `unknown setting '${written}'`, `'${name}' has: ${inSection.map(leafOf).join(', ')}`);
        continue;
      }
      reading.written.push({ key, value: plainValue(item.value as Node | null), where: at(item.key as Node), source: file });
    }
  }
  return reading;
}

// ---- normalize ---------------------------------------------------------------------------

/** Yes and no as pyxis reads them (and berth's Slurm plugin): 1/true/yes/y/on, 0/false/no/n/off. */
const YES = ['1', 'true', 'yes', 'y', 'on'];
const NO = ['0', 'false', 'no', 'n', 'off'];

/** A variable's text as a value of its setting's type, where it reads as one; else the text (which validation refuses). */
function normalizeText(setting: Setting, text: string): unknown {
  switch (setting.type) {
    case 'seconds':
    case 'count':
      return text.trim() !== '' && Number.isFinite(Number(text)) ? Number(text) : text;
    case 'boolean':
      return YES.includes(text.toLowerCase()) ? true : NO.includes(text.toLowerCase()) ? false : text;
    case 'strings':
      return text.split(',').filter(Boolean);
    default:
      return text;
  }
}

/** The settings the environment sets (an empty variable sets nothing). */
function readEnvironment(env: NodeJS.ProcessEnv): Written[] {
  return KEYS.flatMap((key) => {
    const variable = settingOf(key).env;
    const text = variable ? env[variable] : undefined;
    if (!variable || text === undefined || text === '') return [];
    return [{ key, value: normalizeText(settingOf(key), text), where: `$${variable}`, source: `$${variable}`, text }];
  });
}

// ---- validate ----------------------------------------------------------------------------

const isWhole = (v: unknown, min: number): v is number => typeof v === 'number' && Number.isInteger(v) && v >= min;

/** Why `value` is not one of `setting`'s, or undefined when it is. */
function wrongWith(setting: Setting, value: unknown): string | undefined {
  switch (setting.type) {
    case 'path':
      return typeof value === 'string' && value.startsWith('/') ? undefined : 'must be an absolute path';
    case 'seconds':
      return isWhole(value, 0) ? undefined : 'must be a whole number of seconds, 0 or more';
    case 'count':
      return isWhole(value, 1) ? undefined : 'must be a whole number of at least 1';
    case 'string':
      return typeof value === 'string' && value !== '' ? undefined : 'must be a string';
    case 'boolean':
      return typeof value === 'boolean' ? undefined : 'must be true or false';
    case 'strings':
      return Array.isArray(value) && value.every((v) => typeof v === 'string' && v !== '') ? undefined : 'must be a list of strings';
  }
}

/** A value that would do, for the hint: in YAML, or as a variable's text. */
function example(setting: Setting, form: 'yaml' | 'env'): string {
  switch (setting.type) {
    case 'path':
      return '/shared/berth';
    case 'seconds':
    case 'count':
      return String(setting.default ?? 1);
    case 'string':
      return 'all';
    case 'boolean':
      return 'true';
    case 'strings':
      return form === 'yaml' ? '["a", "b"]' : 'a,b';
  }
}

function invalidValue(w: Written, wrong: string): Problem {
  const setting = settingOf(w.key);
  if (w.text !== undefined) {
    return { where: w.where, message: `${w.where}=${w.text}: ${w.key} ${wrong}`, hint: `e.g. ${setting.env}=${example(setting, 'env')}` };
  }
  return { where: w.where, message: `${w.where}: ${w.key} ${wrong}`, hint: `e.g. ${leafOf(w.key)}: ${example(setting, 'yaml')}` };
}

/** Sets `key` to a value validation accepted: the one place where written data becomes typed. */
function assign<K extends SettingKey>(values: Partial<ConfigValues>, key: K, value: unknown): void {
  values[key] = value as ConfigValues[K];
}

/** Every written value that is valid, in order (later ones win), and a problem for each that is not. */
function validate(written: Written[], config: { values: Partial<ConfigValues>; sources: Config['sources'] }): Problem[] {
  const problems: Problem[] = [];
  for (const w of written) {
    const wrong = wrongWith(settingOf(w.key), w.value);
    if (wrong) {
      problems.push(invalidValue(w, wrong));
      continue;
    }
    assign(config.values, w.key, w.value);
    config.sources[w.key] = w.source;
  }
  return problems;
}

/** All the problems as one error: each on a line of its own, with its hint. */
function configError(problems: Problem[]): BerthError {
  if (problems.length === 1) return new BerthError('CONFIG_INVALID', problems[0]!.message, problems[0]!.hint);
  return new BerthError('CONFIG_INVALID', `${problems.length} problems in the configuration:\n${problems.map((p) => `  ${p.message}`).join('\n')}`,
    `fix each of them:\n${problems.map((p) => `  ${p.where}: ${p.hint.replace(/\n/g, ' ')}`).join('\n')}`);
}

/** A flag's value, checked as its setting's values are: the command line is one more place a setting is written. */
export function checkedFlag<K extends SettingKey>(key: K, value: unknown): ConfigValues[K] {
  const setting = settingOf(key);
  const wrong = wrongWith(setting, value);
  const name = setting.flag ? longFlag(setting.flag) : key;
  if (wrong) throw new BerthError('USAGE', `${name} ${wrong}`, `e.g. ${name} ${example(setting, 'env')}`);
  return value as ConfigValues[K];
}

// ---- load --------------------------------------------------------------------------------

/** One file's text as settings; throws, naming file and line, for everything wrong in it. */
export function parseConfigFile(text: string, file: string): Partial<ConfigValues> {
  const reading = readFileSettings(text, file);
  const checked = { values: {}, sources: {} };
  const problems = [...reading.problems, ...validate(reading.written, checked)];
  if (problems.length > 0) throw configError(problems);
  return checked.values;
}

function readOptional(file: string): string | Problem | undefined {
  try {
    return readFileSync(file, 'utf8');
  } catch (e: unknown) {
    if ((e as { code?: string }).code === 'ENOENT') return undefined;
    return { where: file, message: `cannot read ${file}: ${(e as Error).message}`, hint: 'check its permissions' };
  }
}

/** What the files and the environment write, in the order they apply, and what is wrong with them. */
function readAll(env: NodeJS.ProcessEnv, sitePath: string): Reading & { policy: TrustPolicy } {
  const all: Reading & { policy: TrustPolicy } = { written: [], problems: [], policy: {} };
  for (const file of [sitePath, userConfigPath(env)]) {
    const text = readOptional(file);
    if (typeof text === 'object') all.problems.push(text);
    else if (text !== undefined) {
      const reading = readFileSettings(text, file);
      all.written.push(...reading.written);
      all.problems.push(...reading.problems);
      // Each file's rules apart: the site's are the site's, whatever the user's file says.
      if (reading.trust) all.policy[file === sitePath ? 'site' : 'user'] = reading.trust;
    } else if (file === env.BERTH_CONFIG) {
      all.problems.push({ where: '$BERTH_CONFIG', message: `BERTH_CONFIG names ${file}, which does not exist`, hint: 'fix the path or unset BERTH_CONFIG' });
    }
  }
  all.written.push(...readEnvironment(env));
  return all;
}

function defaults(): Config {
  const config: Config = { values: {} as ConfigValues, sources: {}, trust: {} };
  for (const key of KEYS) {
    const value = settingOf(key).default;
    if (value === undefined) continue;
    // A fresh copy of a list: a reader that changes its Config must not change the table.
    assign(config.values, key, Array.isArray(value) ? [...value] : value);
    config.sources[key] = 'default';
  }
  return config;
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env, sitePath = siteConfigPath(env)): Config {
  const config = defaults();
  const reading = readAll(env, sitePath);
  const problems = [...reading.problems, ...validate(reading.written, config)];
  if (problems.length > 0) throw configError(problems);
  config.trust = reading.policy;
  return config;
}

let loaded: Config | undefined;

/** The configuration of this process (read once), or of another environment (tests). */
export function config(env: NodeJS.ProcessEnv = process.env): Config {
  if (env !== process.env) return loadConfig(env);
  loaded ??= loadConfig();
  return loaded;
}

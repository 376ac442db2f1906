// Loads the site file (/etc/berth/config.yaml), then the user's (~/.config/berth/config.yaml,
// or the file BERTH_CONFIG names), then environment variables; later ones win. Each file is
// validated against the SETTINGS table at the edge: an error names the file, the line and the
// fix, and unknown keys are errors, so a typo never silently does nothing.
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import type { Node } from 'yaml';
import { BerthError } from '../errors.js';
import { SETTINGS, type Config, type Setting, type SettingKey, type SettingValue } from './schema.js';

export const SITE_CONFIG = '/etc/berth/config.yaml';

export function userConfigPath(env: NodeJS.ProcessEnv): string {
  if (env.BERTH_CONFIG) return env.BERTH_CONFIG;
  return path.join(env.XDG_CONFIG_HOME || path.join(env.HOME || homedir(), '.config'), 'berth', 'config.yaml');
}

function invalid(file: string, line: number, message: string, hint: string): BerthError {
  return new BerthError('CONFIG_INVALID', `${file}:${line}: ${message}`, hint);
}

function checkValue(file: string, line: number, key: SettingKey, setting: Setting, node: Node | null): SettingValue {
  const { isScalar, isSeq } = yaml();
  const scalar = isScalar(node) ? node.value : undefined;
  switch (setting.type) {
    case 'path':
      if (typeof scalar !== 'string' || !scalar.startsWith('/')) throw invalid(file, line, `${key} must be an absolute path`, `e.g. ${key.split('.')[1]}: /shared/berth`);
      return scalar;
    case 'seconds':
    case 'count': {
      const min = setting.type === 'count' ? 1 : 0;
      if (typeof scalar !== 'number' || !Number.isInteger(scalar) || scalar < min) {
        throw invalid(file, line, `${key} must be a whole number${min ? ' of at least 1' : ' of seconds, 0 or more'}`, `e.g. ${key.split('.')[1]}: ${setting.default}`);
      }
      return scalar;
    }
    case 'string':
      if (typeof scalar !== 'string' || scalar === '') throw invalid(file, line, `${key} must be a string`, `e.g. ${key.split('.')[1]}: all`);
      return scalar;
    case 'boolean':
      if (typeof scalar !== 'boolean') throw invalid(file, line, `${key} must be true or false`, `e.g. ${key.split('.')[1]}: true`);
      return scalar;
    case 'strings':
      if (!isSeq(node) || !node.items.every((i) => isScalar(i) && typeof i.value === 'string' && i.value !== '')) {
        throw invalid(file, line, `${key} must be a list of strings`, `e.g. ${key.split('.')[1]}: ["a", "b"]`);
      }
      return node.items.map((i) => String((i as { value: unknown }).value));
  }
}

/**
 * The YAML library, loaded only when there is a file to read: most commands find none, and
 * every container started from the command line would otherwise pay for loading it.
 */
export function yaml(): typeof import('yaml') {
  return createRequire(import.meta.url)('yaml') as typeof import('yaml');
}

/** Parses one file's text into settings; throws naming file and line on anything wrong. */
export function parseConfigFile(text: string, file: string): Partial<Record<SettingKey, SettingValue>> {
  const { LineCounter, parseDocument, isMap, isScalar } = yaml();
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines });
  const lineOf = (node: { range?: [number, number, number] | null } | null | undefined) => (node?.range ? lines.linePos(node.range[0]).line : 1);
  if (doc.errors.length > 0) {
    const e = doc.errors[0]!;
    throw invalid(file, lines.linePos(e.pos[0]).line, `not valid YAML: ${e.message.split('\n')[0]}`, 'fix the syntax (indentation, colons, quotes)');
  }
  const out: Partial<Record<SettingKey, SettingValue>> = {};
  if (doc.contents === null) return out;
  if (!isMap(doc.contents)) throw invalid(file, 1, 'the file must be a mapping of sections', 'e.g.\ncache:\n  dir: /shared/berth');
  const known = Object.keys(SETTINGS);
  for (const section of doc.contents.items) {
    const sectionName = isScalar(section.key) ? String(section.key.value) : '?';
    const sectionLine = lineOf(section.key as Node);
    if (!known.some((k) => k.startsWith(`${sectionName}.`))) {
      throw invalid(file, sectionLine, `unknown section '${sectionName}'`, `the sections are: ${[...new Set(known.map((k) => k.split('.')[0]))].join(', ')}`);
    }
    if (!isMap(section.value)) throw invalid(file, sectionLine, `'${sectionName}' must hold settings`, `e.g. ${known.find((k) => k.startsWith(`${sectionName}.`))!.split('.')[1]}: ...`);
    for (const item of section.value.items) {
      const name = `${sectionName}.${isScalar(item.key) ? String(item.key.value) : '?'}`;
      const line = lineOf(item.key as Node);
      if (!(name in SETTINGS)) {
        throw invalid(file, line, `unknown setting '${name}'`, `'${sectionName}' has: ${known.filter((k) => k.startsWith(`${sectionName}.`)).map((k) => k.split('.')[1]).join(', ')}`);
      }
      const key = name as SettingKey;
      out[key] = checkValue(file, line, key, SETTINGS[key], item.value as Node | null);
    }
  }
  return out;
}

function readOptional(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8');
  } catch (e: unknown) {
    if ((e as { code?: string }).code === 'ENOENT') return undefined;
    throw new BerthError('CONFIG_INVALID', `cannot read ${file}: ${(e as Error).message}`, 'check its permissions');
  }
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env, sitePath = SITE_CONFIG): Config {
  const config: Config = { values: {}, sources: {} };
  for (const [key, setting] of Object.entries(SETTINGS) as [SettingKey, Setting][]) {
    if (setting.default !== undefined) {
      config.values[key] = setting.default as SettingValue;
      config.sources[key] = 'default';
    }
  }
  for (const file of [sitePath, userConfigPath(env)]) {
    const text = readOptional(file);
    if (text === undefined) {
      if (file === env.BERTH_CONFIG) throw new BerthError('CONFIG_INVALID', `BERTH_CONFIG names ${file}, which does not exist`, 'fix the path or unset BERTH_CONFIG');
      continue;
    }
    for (const [key, value] of Object.entries(parseConfigFile(text, file)) as [SettingKey, SettingValue][]) {
      config.values[key] = value;
      config.sources[key] = file;
    }
  }
  for (const [key, setting] of Object.entries(SETTINGS) as [SettingKey, Setting][]) {
    const raw = setting.env ? env[setting.env] : undefined;
    if (raw === undefined || raw === '') continue;
    config.values[key] = setting.type === 'seconds' || setting.type === 'count' ? Number(raw)
      : setting.type === 'boolean' ? ['1', 'true', 'yes'].includes(raw.toLowerCase()) : raw;
    config.sources[key] = `$${setting.env}`;
    if (typeof config.values[key] === 'number' && !Number.isInteger(config.values[key])) {
      throw new BerthError('CONFIG_INVALID', `$${setting.env}=${raw} is not a whole number`, `e.g. ${setting.env}=${setting.default}`);
    }
  }
  return config;
}

let loaded: Config | undefined;

/** The configuration of this process (read once), or of another environment (tests). */
export function config(env: NodeJS.ProcessEnv = process.env): Config {
  if (env !== process.env) return loadConfig(env);
  loaded ??= loadConfig();
  return loaded;
}

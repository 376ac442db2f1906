// Registry credentials, where users already keep them: BERTH_REGISTRY_USERNAME and
// BERTH_REGISTRY_PASSWORD for the registry BERTH_REGISTRY names (batch jobs), then
// ~/.docker/config.json: credHelpers, credsStore (docker-credential-* programs) and auths, each
// kept under the registry it is for. Secrets are never printed or logged. Where they may be sent
// is registry.ts's rule (mayCarryCredentials).
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import path from 'node:path';
import { BerthError } from '../errors.js';

export interface Credentials {
  username: string;
  password: string;
}

interface DockerConfig {
  auths?: Record<string, { auth?: string; username?: string; password?: string }>;
  credHelpers?: Record<string, string>;
  credsStore?: string;
}

function dockerConfig(env: NodeJS.ProcessEnv): DockerConfig {
  const dir = env.DOCKER_CONFIG ?? path.join(env.HOME ?? homedir(), '.docker');
  try {
    return JSON.parse(readFileSync(path.join(dir, 'config.json'), 'utf8')) as DockerConfig;
  } catch {
    return {};
  }
}

/** The keys Docker uses for a registry in config.json. */
function keysFor(registry: string): string[] {
  return registry === 'docker.io'
    ? ['https://index.docker.io/v1/', 'index.docker.io', 'docker.io', 'registry-1.docker.io']
    : [registry, `https://${registry}`, `http://${registry}`];
}

function fromHelper(helper: string, server: string, env: NodeJS.ProcessEnv): Credentials | undefined {
  const r = spawnSync(`docker-credential-${helper}`, ['get'], { input: server, encoding: 'utf8', timeout: 10_000, env });
  if (r.status !== 0) return undefined;
  try {
    const { Username, Secret } = JSON.parse(r.stdout) as { Username?: string; Secret?: string };
    return Username && Secret ? { username: Username, password: Secret } : undefined;
  } catch {
    return undefined;
  }
}

/** A registry's name as the user may write it (a scheme, a trailing slash, Docker Hub's aliases) in one form. */
export function registryKey(text: string): string {
  const bare = text.trim().toLowerCase().replace(/^https?:\/\//, '').replace(/\/+$/, '');
  if (['docker.io', 'index.docker.io', 'registry-1.docker.io', 'index.docker.io/v1'].includes(bare)) return 'docker.io';
  return bare;
}

/**
 * BERTH_REGISTRY_USERNAME/PASSWORD, for the registry BERTH_REGISTRY names only. Without
 * BERTH_REGISTRY they are refused rather than ignored: a job script that sets them means to use
 * them, and an error naming the fix at the first pull beats a later "needs credentials" (or a
 * password sent to whichever registry an image happens to name, as before).
 */
function fromEnvironment(registry: string, env: NodeJS.ProcessEnv): Credentials | undefined {
  const username = env.BERTH_REGISTRY_USERNAME;
  const password = env.BERTH_REGISTRY_PASSWORD;
  if (!username || password === undefined) return undefined;
  const scope = env.BERTH_REGISTRY;
  if (!scope) {
    throw new BerthError('CONFIG_INVALID', 'BERTH_REGISTRY_USERNAME and BERTH_REGISTRY_PASSWORD are set, but not BERTH_REGISTRY, the registry they are for',
      `set BERTH_REGISTRY to that registry's host[:port] (e.g. BERTH_REGISTRY=${registry} if they are for ${registry}): berth sends them there only`);
  }
  const key = registryKey(scope);
  if (key.includes('/') || key === '') {
    throw new BerthError('CONFIG_INVALID', `BERTH_REGISTRY='${scope}' is not a registry host`, 'write the host[:port] alone, e.g. BERTH_REGISTRY=ghcr.io');
  }
  return key === registryKey(registry) ? { username, password } : undefined;
}

export function findCredentials(registry: string, env: NodeJS.ProcessEnv = process.env): Credentials | undefined {
  const fromEnv = fromEnvironment(registry, env);
  if (fromEnv) return fromEnv;
  const config = dockerConfig(env);
  const keys = keysFor(registry);
  for (const key of keys) {
    const helper = config.credHelpers?.[key];
    if (helper) return fromHelper(helper, key, env);
  }
  for (const key of keys) {
    const entry = config.auths?.[key];
    if (!entry) continue;
    if (entry.username && entry.password) return { username: entry.username, password: entry.password };
    if (entry.auth) {
      const decoded = Buffer.from(entry.auth, 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      if (colon > 0) return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
    }
    if (config.credsStore) return fromHelper(config.credsStore, key, env);
  }
  return undefined;
}

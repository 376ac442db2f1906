// Registry credentials, where users already keep them: BERTH_REGISTRY_USERNAME and
// BERTH_REGISTRY_PASSWORD (batch jobs), then ~/.docker/config.json: credHelpers, credsStore
// (docker-credential-* programs) and auths. Secrets are never printed or logged.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import path from 'node:path';

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

export function findCredentials(registry: string, env: NodeJS.ProcessEnv = process.env): Credentials | undefined {
  if (env.BERTH_REGISTRY_USERNAME && env.BERTH_REGISTRY_PASSWORD !== undefined) {
    return { username: env.BERTH_REGISTRY_USERNAME, password: env.BERTH_REGISTRY_PASSWORD };
  }
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

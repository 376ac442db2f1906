// berth login REGISTRY: checks the credentials against the registry, then keeps them where
// Docker, skopeo and berth all look: ~/.docker/config.json (mode 0600).
import { mkdirSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { BerthError } from '../errors.js';
import { parseDockerReference } from '../image/docker-reference.js';
import { RegistryClient } from '../image/registry.js';
import { writeFileAtomic } from '../util/atomic-file.js';

export interface LoginFlags {
  username?: string;
  passwordStdin?: boolean;
  insecure?: boolean;
}

async function readSecret(prompt: string, fromStdin: boolean): Promise<string> {
  if (fromStdin || !process.stdin.isTTY) {
    let text = '';
    for await (const chunk of process.stdin) text += chunk;
    return text.replace(/\r?\n$/, '');
  }
  process.stderr.write(prompt);
  const rl = createInterface({ input: process.stdin, terminal: true });
  (rl as unknown as { _writeToOutput: () => void })._writeToOutput = () => {}; // no echo
  const answer = await new Promise<string>((resolve) => rl.question('', resolve));
  rl.close();
  process.stderr.write('\n');
  return answer;
}

export async function loginCommand(registry: string, flags: LoginFlags): Promise<string> {
  const username = flags.username ?? process.env.BERTH_REGISTRY_USERNAME;
  if (!username) throw new BerthError('USAGE', 'no username given', 'pass --username NAME (or set BERTH_REGISTRY_USERNAME)');
  const password = process.env.BERTH_REGISTRY_PASSWORD ?? (await readSecret(`password for ${username}@${registry}: `, flags.passwordStdin ?? false));
  const ref = parseDockerReference(`docker://${registry}/berth/login-check`);
  // Any authenticated request proves the credentials; a missing repository is fine.
  const client = new RegistryClient(ref, { insecure: flags.insecure ?? false, credentials: { username, password }, timeoutMs: 30_000, retries: 2 });
  try {
    const res = await client.get('manifests', 'latest');
    await res.body?.cancel();
  } catch (e: unknown) {
    if (!(e instanceof BerthError) || e.code !== 'IMAGE_NOT_IN_SOURCE') throw e;
  }
  const dir = process.env.DOCKER_CONFIG ?? path.join(process.env.HOME ?? homedir(), '.docker');
  const file = path.join(dir, 'config.json');
  let config: { auths?: Record<string, { auth: string }> } = {};
  try {
    config = JSON.parse(readFileSync(file, 'utf8')) as typeof config;
  } catch {
    // a new file
  }
  const key = ref.registry === 'docker.io' ? 'https://index.docker.io/v1/' : ref.registry;
  config.auths = { ...config.auths, [key]: { auth: Buffer.from(`${username}:${password}`).toString('base64') } };
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  // Its own temporary name: two logins at once must not write into one file (#18).
  writeFileAtomic(file, `${JSON.stringify(config, null, 2)}\n`);
  return `logged in to ${ref.registry} as ${username} (saved in ${file})`;
}

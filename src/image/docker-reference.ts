// docker://[REGISTRY/]REPO[:TAG|@DIGEST], with Docker's defaults: a first component without a
// '.' or ':' (and not "localhost") is part of the repository on Docker Hub, whose official
// images live under library/.
import { BerthError } from '../errors.js';

export interface DockerReference {
  /** Registry host[:port] in its one spelling (canonicalRegistry; docker.io for Docker Hub). */
  registry: string;
  /** Where the API is: Docker Hub's API host differs from its name. */
  apiHost: string;
  repository: string;
  tag: string | undefined;
  digest: string | undefined;
}

const DOCKER_HUB = 'docker.io';
const DOCKER_HUB_API = 'registry-1.docker.io';
const REPO = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$/;
const TAG = /^[\w][\w.-]{0,127}$/;
const DIGEST = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}$/;

export function parseDockerReference(text: string): DockerReference {
  const bad = (why: string) =>
    new BerthError('USAGE', `invalid image reference '${text}': ${why}`, 'write it as docker://[REGISTRY/]REPO[:TAG|@DIGEST], e.g. docker://ubuntu:24.04');
  let rest = text.replace(/^docker:\/\//, '');
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at !== -1) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST.test(digest)) throw bad(`'${digest}' is not a digest`);
  }
  let tag: string | undefined;
  const colon = rest.lastIndexOf(':');
  if (colon > rest.lastIndexOf('/')) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) throw bad(`'${tag}' is not a tag`);
  }
  const slash = rest.indexOf('/');
  const first = slash === -1 ? '' : rest.slice(0, slash);
  const explicit = first !== '' && (first.includes('.') || first.includes(':') || first.toLowerCase() === 'localhost');
  const registry = explicit ? canonicalRegistry(first, bad) : DOCKER_HUB;
  let repository = explicit ? rest.slice(slash + 1) : rest;
  if (registry === DOCKER_HUB && !repository.includes('/')) repository = `library/${repository}`;
  if (!REPO.test(repository)) throw bad(`'${repository}' is not a repository name (lowercase letters, digits, . _ - and /)`);
  return {
    registry,
    apiHost: registry === DOCKER_HUB || registry === 'index.docker.io' ? DOCKER_HUB_API : registry,
    repository,
    tag: tag ?? (digest ? undefined : 'latest'),
    digest,
  };
}

/**
 * A registry host[:port] in one spelling, so that a policy, a cache and credentials that name it
 * see the same name however it was written: lowercased, IPv4 and ports as numbers, https's
 * default port dropped (GHCR.IO:443 is ghcr.io, 127.0.0.01:05000 is 127.0.0.1:5000). Anything
 * that is not a host name, an IPv4 or a bracketed IPv6 address with an optional port (a '?',
 * '#', '@' or '\\' would change the URL berth asks, a trailing dot the name) is refused.
 */
function canonicalRegistry(host: string, bad: (why: string) => BerthError): string {
  const grammar = /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$/;
  let canonical: string | undefined;
  if (grammar.test(host)) {
    try {
      canonical = new URL(`https://${host}/`).host;
    } catch {
      canonical = undefined;
    }
  }
  if (!canonical) throw bad(`'${host}' is not a registry host[:port]`);
  return canonical;
}

export function formatDockerReference(r: DockerReference): string {
  return `docker://${r.registry}/${r.repository}${r.tag ? `:${r.tag}` : ''}${r.digest ? `@${r.digest}` : ''}`;
}

/** Plain http is for this machine only, unless asked for. */
export function isLoopback(host: string): boolean {
  const name = host.replace(/:\d+$/, '').replace(/^\[|\]$/g, '');
  return name === 'localhost' || name === '::1' || /^127\.\d+\.\d+\.\d+$/.test(name);
}

// Image sources backed by local files: an OCI layout directory (oci:DIR) and the tarball that
// `docker save` writes (docker-archive:FILE). Neither is extracted: a tarball is indexed once,
// by seeking from header to header, and its members are then read in place by byte range.
import { createReadStream } from 'node:fs';
import { open, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { BerthError, errnoOf } from '../errors.js';
import { TarParser, TarFormatError } from '../convert/tar-reader.js';
import { normalizePath } from '../convert/merge.js';
import { MAX_JSON_BLOB, resolveLayout, sha256, type LayoutFiles } from './oci-layout.js';
import type { Platform } from './platform.js';
import { parseJson, readArchiveManifest, readImageConfig } from './schema.js';
import type { ImageSource, ResolvedImage } from './source.js';

export class OciDirSource implements ImageSource {
  readonly describe: string;
  constructor(private readonly dir: string, private readonly sel: { tag?: string; digest?: string }) {
    this.describe = `OCI layout ${dir}`;
  }

  async resolve(platform: Platform): Promise<ResolvedImage> {
    const dir = path.resolve(this.dir);
    const layout = await stat(path.join(dir, 'oci-layout')).catch(() => undefined);
    if (!layout) {
      const exists = await stat(dir).catch(() => undefined);
      throw new BerthError(exists ? 'SOURCE_INVALID' : 'SOURCE_NOT_FOUND',
        exists ? `${dir} is not an OCI image layout (it has no oci-layout file)` : `${dir} does not exist`,
        'make one with `skopeo copy docker://IMAGE oci:DIR:TAG` or `umoci init`');
    }
    const files: LayoutFiles = {
      describe: this.describe,
      read: (p) => readFile(path.join(dir, p)).catch((e: unknown) => (errnoOf(e) === 'ENOENT' ? undefined : Promise.reject(e))),
      size: (p) => stat(path.join(dir, p)).then((s) => s.size, () => undefined),
      open: (p, range) => createReadStream(path.join(dir, p), { ...range, highWaterMark: 1 << 20 }),
    };
    const ref = `oci:${dir}${this.sel.digest ? `@${this.sel.digest}` : this.sel.tag ? `:${this.sel.tag}` : ''}`;
    return resolveLayout(files, { ...this.sel, platform }, ref);
  }
}

interface Member {
  offset: number;
  size: number;
}

/** Indexes an uncompressed tar file: member path -> byte range of its body. */
export async function indexTarFile(file: string): Promise<Map<string, Member>> {
  const members = new Map<string, Member>();
  const fh = await open(file, 'r');
  try {
    let pos = 0;
    let bodyStart = 0;
    const parser = new TarParser({
      entry: (e) => {
        const name = normalizePath(e.name);
        if (name !== null && e.type === 'file') members.set(name, { offset: bodyStart, size: e.size });
        return false;
      },
      data: () => {},
      entryEnd: () => {},
    });
    const block = Buffer.alloc(512);
    while (!parser.ended) {
      const { bytesRead } = await fh.read(block, 0, 512, pos);
      if (bytesRead === 0) break;
      pos += bytesRead;
      bodyStart = pos;
      parser.push(block.subarray(0, bytesRead));
      pos += parser.skipUnwantedBody();
    }
    parser.end();
    // Without its end-of-archive blocks the file was cut short: members may be missing.
    // (tar-reader's end() says so too now; this keeps the rule where the archive relies on it.)
    if (!parser.ended) throw new TarFormatError(`the tar stream ends at byte ${pos} without its end-of-archive marker: it is truncated`);
  } catch (e: unknown) {
    if (e instanceof TarFormatError) {
      throw new BerthError('SOURCE_INVALID', `${file} is not a readable tar archive: ${e.message}`,
        'docker-archive: wants the uncompressed tarball `docker save` writes: decompress it first if it is .tar.gz, or save it again if it was cut short');
    }
    throw e;
  } finally {
    await fh.close();
  }
  return members;
}

export class DockerArchiveSource implements ImageSource {
  readonly describe: string;
  constructor(private readonly file: string, private readonly name: string | undefined) {
    this.describe = `docker archive ${file}`;
  }

  async resolve(platform: Platform): Promise<ResolvedImage> {
    const file = path.resolve(this.file);
    const st = await stat(file).catch(() => undefined);
    if (!st?.isFile()) {
      throw new BerthError('SOURCE_NOT_FOUND', `${file} does not exist or is not a file`, 'make one with `docker save IMAGE -o FILE.tar`');
    }
    const members = await indexTarFile(file);
    const files: LayoutFiles = {
      describe: this.describe,
      read: async (p) => {
        const m = members.get(p);
        if (!m) return undefined;
        const fh = await open(file, 'r');
        try {
          const buf = Buffer.alloc(m.size);
          await fh.read(buf, 0, m.size, m.offset);
          return buf;
        } finally {
          await fh.close();
        }
      },
      size: async (p) => members.get(p)?.size,
      open: (p, range) => {
        const m = members.get(p)!;
        const start = m.offset + (range?.start ?? 0);
        const end = range ? m.offset + range.end : m.offset + m.size - 1;
        return createReadStream(file, { start, end: Math.max(start - 1, end), highWaterMark: 1 << 20 });
      },
    };
    const ref = `docker-archive:${file}${this.name ? `:${this.name}` : ''}`;
    // Docker 25+ writes an OCI layout inside the tarball; it carries manifest digests.
    if (members.has('index.json') && members.has('oci-layout')) {
      return resolveLayout(files, { ...(this.name ? { tag: this.name } : {}), platform }, ref);
    }
    return this.resolveClassic(files, ref);
  }

  /** The classic form: manifest.json names a config file and one layer.tar per layer. */
  private async resolveClassic(files: LayoutFiles, ref: string): Promise<ResolvedImage> {
    const data = await readSmall(files, 'manifest.json', this.file);
    if (!data) {
      throw new BerthError('SOURCE_INVALID', `${this.file} has neither manifest.json nor index.json: it is not a docker save archive`,
        'make one with `docker save IMAGE -o FILE.tar`');
    }
    const what = `${this.file}: manifest.json`;
    const list = readArchiveManifest(parseJson(data, what), what);
    const entry = this.name ? list.find((m) => m.RepoTags.some((t) => t === this.name || t.endsWith(`/${this.name}`))) : list[0];
    if (!entry || (!this.name && list.length > 1)) {
      const tags = list.flatMap((m) => m.RepoTags);
      throw new BerthError('IMAGE_NOT_IN_SOURCE',
        this.name ? `${this.file} holds no image named '${this.name}'` : `${this.file} holds ${list.length} images`,
        `name one as docker-archive:${this.file}:NAME; it has: ${tags.join(', ') || '(untagged images)'}`);
    }
    const configName = normalizePath(entry.Config) ?? '';
    const configData = await readSmall(files, configName, this.file);
    if (!configData) throw new BerthError('SOURCE_INVALID', `${this.file} lacks ${entry.Config}`, 'save the image again');
    const configDigest = sha256(configData);
    const configWhat = `image config ${entry.Config} in ${this.file}`;
    const config = readImageConfig(parseJson(configData, configWhat), configWhat);
    const diffIds = config.rootfs.diff_ids;
    if (diffIds.length !== entry.Layers.length) {
      throw new BerthError('SOURCE_INVALID', `${this.file} lists ${entry.Layers.length} layers but its config has ${diffIds.length} diff_ids`,
        'save the image again');
    }
    const layers = await Promise.all(entry.Layers.map(async (name, i) => {
      const p = normalizePath(name) ?? '';
      const size = await files.size(p);
      if (size === undefined) throw new BerthError('SOURCE_INVALID', `${this.file} lacks layer ${name}`, 'save the image again');
      return {
        // Classic archives hold uncompressed layer.tar files whose digest is the diff_id.
        digest: diffIds[i]!, diffId: diffIds[i]!, mediaType: 'application/vnd.docker.image.rootfs.diff.tar',
        size, compression: undefined, open: (range?: { start: number; end: number }) => files.open(p, range),
      };
    }));
    return { reference: ref, manifestDigest: undefined, configDigest, config, layers };
  }
}

/** A JSON member read whole, refused before reading when no manifest or config is that large. */
async function readSmall(files: LayoutFiles, member: string, file: string): Promise<Buffer | undefined> {
  const size = await files.size(member);
  if (size !== undefined && size > MAX_JSON_BLOB) {
    throw new BerthError('SOURCE_INVALID', `${file}: ${member} is ${size} bytes, too large for a manifest or config`, 'save the image again');
  }
  return files.read(member);
}

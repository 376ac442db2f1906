// What a Linux file system (and tar2sqfs) can hold, checked for every entry before the merge
// acts on it. A layer made elsewhere, or made to hurt, can name what no Linux system can: a
// 300-byte name component converted fine and then crashed the image server inside libsquashfuse
// ("stack smashing detected") when the directory was listed. Limits are the kernel's
// (include/uapi/linux/limits.h) unless said otherwise.
import { BerthError } from '../errors.js';
import { shownName } from './tar-fields.js';
import type { TarEntry } from './tar-reader.js';

export const NAME_MAX = 255;
/** PATH_MAX counts the terminating NUL: a path the kernel takes has at most 4095 bytes. */
export const PATH_MAX = 4096;
/** Linux ids are 32 bits and (uid_t)-1 means "no change" to chown(2). */
const ID_MAX = 0xfffffffe;
/** dev_t as the kernel keeps it (include/linux/kdev_t.h): 12-bit major, 20-bit minor. */
const DEV_MAJOR_MAX = 0xfff;
const DEV_MINOR_MAX = 0xfffff;
const XATTR_NAME_MAX = 255;
const XATTR_SIZE_MAX = 65536;
/**
 * tar2sqfs reads at most 64 KiB of PAX records for one entry (TAR_MAX_PAX_LEN) and 65536
 * segments of a sparse map (TAR_MAX_SPARSE_ENT); both measured with squashfs-tools-ng 1.2.0.
 */
const PAX_MAX = 65536;
const SPARSE_SEGMENTS_MAX = 65536;

const HINT = 'no Linux file system can hold this entry, so berth refuses the image rather than make one that breaks its readers; ' +
  'the image was made on another system or made to attack; rebuild it with what Linux allows';

function refuse(describe: string, entry: string, what: string, hint = HINT): never {
  throw new BerthError('LAYER_UNSAFE', `${describe}: entry '${shownName(entry)}' ${what}`, hint);
}

/** Checks a normalized path (relative to the root) for NAME_MAX and PATH_MAX. */
export function checkPath(path: string, describe: string, entry: string, role = 'its name'): void {
  if (path.length + 1 >= PATH_MAX) refuse(describe, entry, `is ${path.length + 1} bytes long as a path (${role}); Linux paths are at most ${PATH_MAX - 1} bytes (PATH_MAX)`);
  for (const c of path.split('/')) {
    if (c.length > NAME_MAX) refuse(describe, entry, `has a name component of ${c.length} bytes (${role}); Linux allows at most ${NAME_MAX} (NAME_MAX)`);
  }
}

/** Everything but the path: ids, device numbers, link targets, extended attributes, sparse maps. */
export function checkEntry(e: TarEntry, describe: string): void {
  for (const [what, n, max] of [['uid', e.uid, ID_MAX], ['gid', e.gid, ID_MAX], ['device major', e.devmajor, DEV_MAJOR_MAX], ['device minor', e.devminor, DEV_MINOR_MAX]] as const) {
    if (n > max) refuse(describe, e.name, `has ${what} ${n}; Linux allows at most ${max}`);
  }
  if (e.type === 'symlink' && e.linkname.length >= PATH_MAX) {
    refuse(describe, e.name, `is a symlink to a target of ${e.linkname.length} bytes; Linux symlinks hold at most ${PATH_MAX - 1} (PATH_MAX)`);
  }
  // What berth's PAX header for the entry can come to: names, link, ids, sparse records, xattrs.
  let total = 512 + e.name.length + e.linkname.length;
  let attributes = 0;
  for (const [name, value] of e.xattrs) {
    if (name.length > XATTR_NAME_MAX) refuse(describe, e.name, `has an extended attribute name of ${name.length} bytes; Linux allows at most ${XATTR_NAME_MAX}`);
    if (value.length > XATTR_SIZE_MAX) refuse(describe, e.name, `has an extended attribute value of ${value.length} bytes; Linux allows at most ${XATTR_SIZE_MAX}`);
    attributes += name.length + value.length;
    total += name.length + value.length + 32; // the record's length, key prefix, '=' and newline
  }
  if (total > PAX_MAX) {
    refuse(describe, e.name, `has ${attributes} bytes of extended attributes (names and values); squashfs-tools-ng's tar2sqfs takes at most 64 KiB of PAX headers for one entry`,
      'berth cannot convert this image; remove some extended attributes from the file, or report the image to berth');
  }
  if (e.sparse && e.sparse.segments.length > SPARSE_SEGMENTS_MAX) {
    refuse(describe, e.name, `is a sparse file of ${e.sparse.segments.length} segments; squashfs-tools-ng's tar2sqfs takes at most ${SPARSE_SEGMENTS_MAX}`,
      'berth cannot convert this image; store the file without --sparse (GNU tar), or report the image to berth');
  }
}

/* Reading a squashfs image that may be hostile or corrupt, without crashing the image server.
 *
 * libsquashfuse 0.1.105 (Debian 12's; newer ones fixed some of this) believes the image: a
 * directory entry's name length (16 bits) is copied into a 257-byte stack buffer ("stack
 * smashing detected" when a directory is listed), a directory index name's length (32 bits)
 * likewise; the 16-bit offsets that inode and directory references carry are used without
 * looking at the size of the block they point into (a copy of gigabytes); table indices (uid,
 * fragment, xattr) are used without looking at the table's size; a fragment's offset and a
 * short data block are copied from without bounds; getxattr copies a name longer than its
 * buffer. So the library is used here only for what it does safely (reading, decompressing
 * into bounded buffers and caching blocks; the superblock; parsing an inode at a reference
 * checked first), and every copy out of a block is bounded here. What cannot be read is an
 * error (EIO) for that request alone; the server goes on serving the rest of the image. */
#define _GNU_SOURCE
#include <endian.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <linux/limits.h>

#include "squashfs.h"

#define MD SQUASHFS_METADATA_SIZE
#define DIR_COUNT 256 /* entries under one directory header, at most (the kernel's limit) */

/* Whether a block may lie at `pos`: nothing does inside the superblock, and the library's
 * caches take position 0 for "no entry", handing back an empty one (a NULL block) for it. */
static int block_at(sqfs_off_t pos)
{
	return pos >= (sqfs_off_t)sizeof(struct squashfs_super_block);
}

/* The block holding cursor `cur`, or NULL when it cannot be read or `cur` lies past its end. */
static sqfs_block *md_block(sqfs *fs, const sqfs_md_cursor *cur, sqfs_off_t *next)
{
	sqfs_block *block = NULL;
	*next = cur->block;
	if (!block_at(cur->block) || sqfs_md_cache(fs, next, &block) != SQFS_OK || !block || cur->offset > block->size)
		return NULL;
	return block;
}


/* Blocks of one image shared by threads (squashfs.h): a few, each counted while a thread
 * copies from it, the least recently used free one replaced. Keyed by the block's position
 * and header, as a hostile image may name one position with two sizes. A block is
 * decompressed by the first thread that misses it; the others that ask meanwhile (a node's
 * ranks importing the same modules, whose small files share fragment blocks) wait for it
 * rather than decompress it again. */
#define SHARED_BLOCKS 32
struct sq_shared {
	pthread_mutex_t lock;
	pthread_cond_t loaded; /* a slot's `loading` went false */
	unsigned long clock;
	struct shared_slot {
		uint64_t pos;
		uint32_t hdr;
		unsigned refs;
		unsigned long used; /* 0: empty */
		bool loading;       /* being decompressed; `block` is NULL until it is */
		sqfs_block *block;
	} slots[SHARED_BLOCKS];
};
static __thread struct sq_shared *shared_blocks;

struct sq_shared *sq_shared_new(void)
{
	struct sq_shared *s = calloc(1, sizeof *s);
	if (!s)
		return NULL;
	if (pthread_mutex_init(&s->lock, NULL) != 0) {
		free(s);
		return NULL;
	}
	if (pthread_cond_init(&s->loaded, NULL) != 0) {
		pthread_mutex_destroy(&s->lock);
		free(s);
		return NULL;
	}
	return s;
}

void sq_share_blocks(struct sq_shared *shared)
{
	shared_blocks = shared;
}

/* A block being copied from, let go of by let_go: a shared one, or one of this thread's. */
struct held {
	struct sq_shared *shared; /* where slot is */
	struct shared_slot *slot;
	sqfs_block *own; /* decompressed here and not kept (every shared one busy): disposed */
};

static struct shared_slot *shared_find(struct sq_shared *s, uint64_t pos, uint32_t hdr)
{
	for (size_t i = 0; i < SHARED_BLOCKS; i++)
		if (s->slots[i].used && s->slots[i].pos == pos && s->slots[i].hdr == hdr) {
			s->slots[i].refs++;
			s->slots[i].used = ++s->clock;
			return &s->slots[i];
		}
	return NULL;
}

/* The block at `pos`, from the shared blocks: decompressed here, outside the lock, on a miss;
 * waited for when another thread is decompressing it. */
static sqfs_block *shared_block(sqfs *fs, struct sq_shared *s, uint64_t pos, uint32_t hdr, struct held *h)
{
	h->shared = s;
	pthread_mutex_lock(&s->lock);
	struct shared_slot *slot = shared_find(s, pos, hdr);
	if (slot) {
		while (slot->loading)
			pthread_cond_wait(&s->loaded, &s->lock);
		sqfs_block *block = slot->block;
		if (block)
			h->slot = slot;
		else
			slot->refs--; /* the block could not be read: nor can it be here */
		pthread_mutex_unlock(&s->lock);
		return block;
	}
	/* Claim the least recently used free slot before decompressing, so that whoever asks
	 * for this block meanwhile finds it and waits. None free (every one copied from): this
	 * thread's own block, disposed after. */
	for (size_t i = 0; i < SHARED_BLOCKS; i++)
		if (s->slots[i].refs == 0 && (!slot || s->slots[i].used < slot->used))
			slot = &s->slots[i];
	if (slot) {
		if (slot->block)
			sqfs_block_dispose(slot->block);
		*slot = (struct shared_slot){ .pos = pos, .hdr = hdr, .refs = 1, .used = ++s->clock, .loading = true };
	}
	pthread_mutex_unlock(&s->lock);
	sqfs_block *block = NULL;
	if (sqfs_data_block_read(fs, (sqfs_off_t)pos, hdr, &block) != SQFS_OK)
		block = NULL;
	if (!slot) {
		h->own = block;
		return block;
	}
	pthread_mutex_lock(&s->lock);
	slot->block = block;
	slot->loading = false;
	if (block) {
		h->slot = slot;
	} else {
		slot->used = 0; /* found no more; reused once its waiters let go */
		slot->refs--;
	}
	pthread_cond_broadcast(&s->loaded);
	pthread_mutex_unlock(&s->lock);
	return block;
}

static void let_go(struct held *h)
{
	if (h->slot) {
		pthread_mutex_lock(&h->shared->lock);
		h->slot->refs--;
		pthread_mutex_unlock(&h->shared->lock);
	}
	if (h->own)
		sqfs_block_dispose(h->own);
	*h = (struct held){ 0 };
}

/* sqfs_md_read with the bound it lacks. `buf` NULL skips. */
static int md_read(sqfs *fs, sqfs_md_cursor *cur, void *buf, size_t size)
{
	char *out = buf;
	while (size > 0) {
		sqfs_off_t next;
		sqfs_block *block = md_block(fs, cur, &next);
		if (!block)
			return -EIO;
		size_t take = block->size - cur->offset < size ? block->size - cur->offset : size;
		if (out) {
			memcpy(out, (char *)block->data + cur->offset, take);
			out += take;
		}
		size -= take;
		cur->offset += take;
		if (cur->offset == block->size) {
			cur->block = next; /* each block moves `next` on by its size: this ends at EOF */
			cur->offset = 0;
		}
	}
	return 0;
}

/* Entry `idx` of a table of `count` entries of `each` bytes (ids, fragments, xattr ids). */
static int table_get(sqfs *fs, const sqfs_table *t, size_t count, size_t idx, size_t each, void *out)
{
	if (idx >= count)
		return -EIO;
	size_t pos = idx * each, off = pos % MD;
	sqfs_md_cursor cur = { .block = (sqfs_off_t)t->blocks[pos / MD], .offset = off };
	sqfs_off_t next;
	sqfs_block *block = md_block(fs, &cur, &next);
	if (!block || each > block->size - off)
		return -EIO;
	memcpy(out, (char *)block->data + off, each);
	return 0;
}

const char *sq_bad_super(const sqfs *fs, off_t file_size)
{
	uint32_t bs = fs->sb.block_size;
	/* Every block count divides by it, and every data block is decompressed into it. */
	if (bs < 4096 || bs > (1u << 20) || (bs & (bs - 1)))
		return "its block size is not a power of two from 4 KiB to 1 MiB";
	if (fs->sb.bytes_used > (uint64_t)file_size)
		return "it is shorter than its superblock says (truncated?)";
	return NULL;
}

static const mode_t TYPE_MODE[] = {
	[SQUASHFS_DIR_TYPE] = S_IFDIR,      [SQUASHFS_REG_TYPE] = S_IFREG,     [SQUASHFS_SYMLINK_TYPE] = S_IFLNK,
	[SQUASHFS_BLKDEV_TYPE] = S_IFBLK,   [SQUASHFS_CHRDEV_TYPE] = S_IFCHR,  [SQUASHFS_FIFO_TYPE] = S_IFIFO,
	[SQUASHFS_SOCKET_TYPE] = S_IFSOCK,  [SQUASHFS_LDIR_TYPE] = S_IFDIR,    [SQUASHFS_LREG_TYPE] = S_IFREG,
	[SQUASHFS_LSYMLINK_TYPE] = S_IFLNK, [SQUASHFS_LBLKDEV_TYPE] = S_IFBLK, [SQUASHFS_LCHRDEV_TYPE] = S_IFCHR,
	[SQUASHFS_LFIFO_TYPE] = S_IFIFO,    [SQUASHFS_LSOCKET_TYPE] = S_IFSOCK,
};

static mode_t type_mode(int type)
{
	return type > 0 && (size_t)type < sizeof TYPE_MODE / sizeof *TYPE_MODE ? TYPE_MODE[type] : 0;
}

mode_t sq_entry_mode(const struct sq_entry *e)
{
	return type_mode(e->type);
}

int sq_inode(sqfs *fs, sqfs_inode *inode, sqfs_inode_id id)
{
	/* sqfs_inode_get reads on from the reference: only its start needs checking. */
	sqfs_md_cursor cur;
	sqfs_off_t next;
	sqfs_md_cursor_inode(&cur, id, fs->sb.inode_table_start);
	if (!md_block(fs, &cur, &next) || sqfs_inode_get(fs, inode, id) != SQFS_OK)
		return -EIO;
	/* The file type is the inode's type; the mode field's own type bits are the image's word. */
	inode->base.mode = (inode->base.mode & 07777) | type_mode(inode->base.inode_type);
	if (S_ISREG(inode->base.mode) && inode->xtra.reg.file_size > (uint64_t)INT64_MAX)
		return -EIO;
	return 0;
}

void sq_stat(const sqfs *fs, const sqfs_inode *inode, struct stat *st)
{
	memset(st, 0, sizeof *st);
	st->st_mode = inode->base.mode;
	st->st_nlink = inode->nlink;
	st->st_mtime = st->st_ctime = st->st_atime = inode->base.mtime;
	if (S_ISREG(st->st_mode))
		st->st_size = (off_t)inode->xtra.reg.file_size;
	else if (S_ISLNK(st->st_mode))
		st->st_size = (off_t)inode->xtra.symlink_size;
	else if (S_ISBLK(st->st_mode) || S_ISCHR(st->st_mode))
		st->st_rdev = makedev(inode->xtra.dev.major, inode->xtra.dev.minor);
	st->st_blocks = st->st_size / 512;
	st->st_blksize = fs->sb.block_size;
}

int sq_dir_open(sqfs *fs, const sqfs_inode *inode, sqfs_dir *dir)
{
	if (!S_ISDIR(inode->base.mode))
		return -ENOTDIR;
	memset(dir, 0, sizeof *dir);
	dir->cur.block = inode->xtra.dir.start_block + fs->sb.directory_table_start;
	dir->cur.offset = inode->xtra.dir.offset;
	dir->total = inode->xtra.dir.dir_size <= 3 ? 0 : inode->xtra.dir.dir_size - 3; /* as squashfs counts */
	return 0;
}

static int dir_read(sqfs *fs, sqfs_dir *dir, void *buf, size_t size)
{
	dir->offset += size;
	return md_read(fs, &dir->cur, buf, size);
}

static int name_ok(const char *name, size_t len)
{
	return !memchr(name, '/', len) && !memchr(name, '\0', len) && strcmp(name, ".") && strcmp(name, "..");
}

int sq_dir_next(sqfs *fs, sqfs_dir *dir, struct sq_entry *e)
{
	while (dir->header.count == 0) {
		if (dir->offset >= dir->total)
			return 0;
		struct squashfs_dir_header h;
		if (dir_read(fs, dir, &h, sizeof h) < 0 || le32toh(h.count) >= DIR_COUNT)
			return -EIO;
		dir->header.count = le32toh(h.count) + 1; /* stored less one */
		dir->header.start_block = le32toh(h.start_block);
		dir->header.inode_number = le32toh(h.inode_number);
	}
	struct squashfs_dir_entry raw;
	if (dir_read(fs, dir, &raw, sizeof raw) < 0)
		return -EIO;
	dir->header.count--;
	e->inode = ((uint64_t)dir->header.start_block << 16) + le16toh(raw.offset);
	e->number = dir->header.inode_number + (int16_t)le16toh(raw.inode_number);
	e->type = le16toh(raw.type);
	e->len = (size_t)le16toh(raw.size) + 1; /* stored less one: up to 65536 */
	e->valid = e->len <= NAME_MAX;
	/* A name too long is skipped over, not read: the entries after it stay readable. */
	if (dir_read(fs, dir, e->valid ? e->name : NULL, e->len) < 0)
		return -EIO;
	if (e->valid) {
		e->name[e->len] = '\0';
		e->valid = name_ok(e->name, e->len);
	}
	return 1;
}

/* As strcmp, which orders a squashfs directory, for names of known lengths. */
static int namecmp(const char *a, size_t alen, const char *b, size_t blen)
{
	int order = memcmp(a, b, alen < blen ? alen : blen);
	return order ? order : (alen > blen) - (alen < blen);
}

/* A large directory's index names the first entry of each metadata block: start at the last
 * block whose first name is not after `name`. */
static int skip_by_index(sqfs *fs, const sqfs_inode *inode, sqfs_dir *dir, const char *name, size_t len)
{
	sqfs_md_cursor cur = inode->next;
	for (unsigned i = 0; i < inode->xtra.dir.idx_count; i++) {
		struct squashfs_dir_index idx;
		char first[SQUASHFS_NAME_LEN];
		if (md_read(fs, &cur, &idx, sizeof idx) < 0)
			return -EIO;
		size_t flen = (size_t)le32toh(idx.size) + 1;
		if (flen > sizeof first || md_read(fs, &cur, first, flen) < 0)
			return -EIO;
		if (namecmp(first, flen, name, len) > 0)
			break;
		dir->cur.block = le32toh(idx.start_block) + fs->sb.directory_table_start;
		dir->offset = le32toh(idx.index);
	}
	dir->cur.offset = (dir->cur.offset + dir->offset) % MD;
	return 0;
}

int sq_lookup(sqfs *fs, const sqfs_inode *inode, const char *name, struct sq_entry *e)
{
	sqfs_dir dir;
	size_t len = strlen(name);
	int r = sq_dir_open(fs, inode, &dir);
	if (r < 0 || (r = skip_by_index(fs, inode, &dir, name, len)) < 0)
		return r;
	while ((r = sq_dir_next(fs, &dir, e)) > 0) {
		if (!e->valid)
			continue; /* it cannot be the name asked for */
		int order = namecmp(e->name, e->len, name, len);
		if (order >= 0)
			return order == 0;
	}
	return r;
}

/* The next entry of a file's block list, read through md_read (sqfs_blocklist_next is not). */
static int next_block(sqfs *fs, sqfs_blocklist *bl)
{
	uint32_t hdr;
	bool compressed;
	if (bl->remain == 0 || md_read(fs, &bl->cur, &hdr, sizeof hdr) < 0)
		return -EIO;
	bl->remain--;
	bl->block += bl->input_size;
	bl->header = le32toh(hdr);
	sqfs_data_header(bl->header, &compressed, &bl->input_size);
	if (bl->started)
		bl->pos += fs->sb.block_size;
	bl->started = true;
	return 0;
}

/* A data or fragment block: the threads' shared one, or through the image's own `cache`;
 * held in `h` until let_go. */
static sqfs_block *data_cached(sqfs *fs, sqfs_cache *cache, uint64_t pos, uint32_t hdr, struct held *h)
{
	sqfs_block *block = NULL;
	*h = (struct held){ 0 };
	/* No block is larger than the image's block size, compressed or not, nor lies past the
	 * image's end: a header that says otherwise would have the library read (and keep) up to
	 * 4 GiB for it. */
	bool compressed;
	uint32_t size;
	sqfs_data_header(hdr, &compressed, &size);
	if (!block_at((sqfs_off_t)pos) || size > fs->sb.block_size || pos > fs->sb.bytes_used || size > fs->sb.bytes_used - pos)
		return NULL;
	if (shared_blocks)
		return shared_block(fs, shared_blocks, pos, hdr, h);
	if (sqfs_data_cache(fs, cache, (sqfs_off_t)pos, hdr, &block) != SQFS_OK)
		return NULL;
	return block;
}

/* The `want` bytes of a file's tail, which live in a fragment block. */
static int fragment(sqfs *fs, const sqfs_inode *inode, size_t want, const char **data, struct held *h)
{
	struct squashfs_fragment_entry f;
	sqfs_block *block;
	*h = (struct held){ 0 };
	if (table_get(fs, &fs->frag_table, fs->sb.fragments, inode->xtra.reg.frag_idx, sizeof f, &f) < 0 ||
	    !(block = data_cached(fs, &fs->frag_cache, le64toh(f.start_block), le32toh(f.size), h)))
		return -EIO;
	size_t off = inode->xtra.reg.frag_off;
	if (off > block->size || want > block->size - off) {
		let_go(h);
		return -EIO;
	}
	*data = (const char *)block->data + off;
	return 0;
}

/* The block of the file at bl->pos: its data (NULL for a hole) and how many bytes of the file it holds. */
static int data_block(sqfs *fs, const sqfs_blocklist *bl, size_t want, const char **data, struct held *h)
{
	sqfs_block *block;
	*data = NULL;
	*h = (struct held){ 0 };
	if (bl->input_size == 0)
		return 0;
	/* A block that decompresses short would leave its tail to be copied from beyond it. */
	if (!(block = data_cached(fs, &fs->data_cache, bl->block, bl->header, h)) || block->size < want) {
		let_go(h);
		return -EIO;
	}
	*data = block->data;
	return 0;
}

int sq_read(sqfs *fs, sqfs_inode *inode, off_t start, size_t size, char *buf, size_t *got)
{
	uint64_t file_size = inode->xtra.reg.file_size, bs = fs->sb.block_size;
	sqfs_blocklist bl;
	*got = 0;
	if (!S_ISREG(inode->base.mode) || start < 0)
		return -EINVAL;
	if ((uint64_t)start >= file_size)
		return 0;
	if (size > file_size - (uint64_t)start)
		size = file_size - (uint64_t)start;
	if (sqfs_blockidx_blocklist(fs, inode, &bl, start) != SQFS_OK)
		return -EIO;
	size_t skip = (uint64_t)start % bs;
	for (int tail = 0; *got < size && !tail;) {
		const char *data;
		size_t want;
		int r;
		struct held h = { 0 };
		if ((tail = bl.remain == 0)) {
			want = file_size % bs;
			r = inode->xtra.reg.frag_idx == SQUASHFS_INVALID_FRAG ? -EIO : fragment(fs, inode, want, &data, &h);
		} else {
			if ((r = next_block(fs, &bl)) < 0)
				return r;
			if (bl.pos + bs <= (uint64_t)start)
				continue; /* before the range (the block index lands early) */
			want = file_size - bl.pos < bs ? file_size - bl.pos : bs;
			r = data_block(fs, &bl, want, &data, &h);
		}
		if (r < 0 || skip >= want) {
			let_go(&h);
			return -EIO;
		}
		size_t take = want - skip < size - *got ? want - skip : size - *got;
		if (data)
			memcpy(buf + *got, data + skip, take);
		else
			memset(buf + *got, 0, take);
		let_go(&h);
		*got += take;
		skip = 0;
	}
	return 0;
}

int sq_readlink(sqfs *fs, const sqfs_inode *inode, char *buf, size_t cap)
{
	if (!S_ISLNK(inode->base.mode))
		return -EINVAL;
	size_t len = inode->xtra.symlink_size;
	sqfs_md_cursor cur = inode->next; /* the target follows the inode */
	if (len >= cap)
		return -ENAMETOOLONG;
	if (md_read(fs, &cur, buf, len) < 0)
		return -EIO;
	buf[len] = '\0';
	return 0;
}

/* Extended attributes: an inode's index into the xattr id table gives where its attributes
 * start and how many; each is a prefix type, a name, and a value stored inline or, for a value
 * shared by several files, out of line through a reference. */
static const char *const XATTR_PREFIX[] = { "user.", "trusted.", "security." };

struct xattr_walk {
	sqfs_md_cursor cur;
	uint32_t left;
	char name[XATTR_NAME_MAX + 1]; /* the current attribute's, prefix included */
	sqfs_md_cursor value;          /* at its value's size */
	int out_of_line;
};

static int xattr_open(sqfs *fs, const sqfs_inode *inode, struct xattr_walk *w)
{
	struct squashfs_xattr_id id;
	w->left = 0;
	if (fs->xattr_info.xattr_ids == 0 || inode->xattr == SQUASHFS_INVALID_XATTR)
		return 0;
	if (table_get(fs, &fs->xattr_table, fs->xattr_info.xattr_ids, inode->xattr, sizeof id, &id) < 0)
		return -EIO;
	sqfs_md_cursor_inode(&w->cur, le64toh(id.xattr), fs->xattr_info.xattr_table_start);
	w->left = le32toh(id.count);
	return 0;
}

static int xattr_next(sqfs *fs, struct xattr_walk *w)
{
	struct squashfs_xattr_entry e;
	uint32_t vsize;
	if (md_read(fs, &w->cur, &e, sizeof e) < 0)
		return -EIO;
	unsigned type = le16toh(e.type) & SQUASHFS_XATTR_PREFIX_MASK;
	size_t len = le16toh(e.size);
	if (type >= sizeof XATTR_PREFIX / sizeof *XATTR_PREFIX || strlen(XATTR_PREFIX[type]) + len > XATTR_NAME_MAX)
		return -EIO;
	size_t plen = strlen(XATTR_PREFIX[type]);
	memcpy(w->name, XATTR_PREFIX[type], plen);
	if (md_read(fs, &w->cur, w->name + plen, len) < 0)
		return -EIO;
	w->name[plen + len] = '\0';
	w->value = w->cur;
	w->out_of_line = le16toh(e.type) & SQUASHFS_XATTR_VALUE_OOL;
	/* Inline, the value follows; out of line, a reference of 8 bytes does: skipped alike. */
	if (md_read(fs, &w->cur, &vsize, sizeof vsize) < 0 || md_read(fs, &w->cur, NULL, le32toh(vsize)) < 0)
		return -EIO;
	w->left--;
	return 0;
}

static ssize_t xattr_value(sqfs *fs, struct xattr_walk *w, char *buf, size_t cap)
{
	sqfs_md_cursor c = w->value;
	uint32_t vsize;
	uint64_t ref;
	if (md_read(fs, &c, &vsize, sizeof vsize) < 0)
		return -EIO;
	if (w->out_of_line) {
		if (le32toh(vsize) != sizeof ref || md_read(fs, &c, &ref, sizeof ref) < 0)
			return -EIO;
		sqfs_md_cursor_inode(&c, le64toh(ref), fs->xattr_info.xattr_table_start);
		if (md_read(fs, &c, &vsize, sizeof vsize) < 0)
			return -EIO;
	}
	size_t len = le32toh(vsize);
	if (len > XATTR_SIZE_MAX)
		return -EIO;
	if (cap == 0)
		return (ssize_t)len;
	if (len > cap)
		return -ERANGE;
	return md_read(fs, &c, buf, len) < 0 ? -EIO : (ssize_t)len;
}

int sq_has_xattrs(const sqfs *fs)
{
	return fs->xattr_info.xattr_ids != 0;
}

ssize_t sq_getxattr(sqfs *fs, const sqfs_inode *inode, const char *name, char *buf, size_t cap)
{
	struct xattr_walk w;
	int r = xattr_open(fs, inode, &w);
	while (r == 0 && w.left > 0) {
		if ((r = xattr_next(fs, &w)) == 0 && strcmp(w.name, name) == 0)
			return xattr_value(fs, &w, buf, cap);
	}
	return r < 0 ? r : -ENODATA;
}

ssize_t sq_listxattr(sqfs *fs, const sqfs_inode *inode, char *buf, size_t cap)
{
	struct xattr_walk w;
	size_t total = 0;
	int r = xattr_open(fs, inode, &w);
	while (r == 0 && w.left > 0) {
		if ((r = xattr_next(fs, &w)) < 0)
			break;
		size_t len = strlen(w.name) + 1;
		if (total + len > XATTR_LIST_MAX)
			return -E2BIG;
		if (cap && total + len > cap)
			return -ERANGE;
		if (cap)
			memcpy(buf + total, w.name, len);
		total += len;
	}
	return r < 0 ? r : (ssize_t)total;
}

/*
 * seglog.h - the append-only segment log under the spool (format 2,
 * docs/design/spool-v2.md): checksummed records in preallocated segment
 * files, written in commit groups with one fdatasync each, and read back
 * by a scan that stops at the first record that is not whole.
 *
 * Threads: seglog_commit() blocks on the disk and belongs to one writer
 * thread at a time; seglog_read() may run in any thread concurrently with
 * it (pread on segment descriptors that live until seglog_free or
 * seglog_drop). seglog_open/_recover/_drop/_free run on the owner's thread
 * while no commit is in progress.
 */
#ifndef TERN_SEGLOG_H
#define TERN_SEGLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#define SEGLOG_VERSION 2
#define SEGLOG_MAGIC 0x31635254u        /* "TRc1" little-endian */
#define SEGLOG_HDR 24
#define SEGLOG_ALIGN 8
/* Bound on one record's payload; a segment must hold the largest. */
#define SEGLOG_MAX_RECORD (4u * 1024 * 1024)
#define SEGLOG_MIN_SEGMENT (2 * (uint64_t)SEGLOG_MAX_RECORD)
#define SEGLOG_MAX_SEGMENT ((uint64_t)1 << 34)
/* Records in one commit group, and their bytes (a group with one record
 * may exceed the byte bound by that record). */
#define SEGLOG_GROUP_MAX 4096
#define SEGLOG_GROUP_BYTES (64u * 1024 * 1024)

enum seglog_type {
	SEGLOG_SEG = 1,    /* first record of a segment */
	SEGLOG_MSG = 2,
	SEGLOG_JRN = 3,
	SEGLOG_SNAP = 4,
	SEGLOG_DONE = 5,
	SEGLOG_TPL = 6,
	SEGLOG_ROWS = 7,
	SEGLOG_TYPE_MAX = 7,
};

/* Where a record is: its segment number and the offset of its header. */
struct seglog_pos {
	uint64_t seg;
	uint64_t off;
};

struct seglog_rec {
	enum seglog_type type;
	uint64_t id;               /* queue id value, or 0 */
	const void *payload;       /* valid during the callback only */
	uint32_t len;
	struct seglog_pos pos;
};

/* How a scan of one image ended. */
enum seglog_end {
	SEGLOG_END_CLEAN,   /* end of image, or zeros: the unwritten tail */
	SEGLOG_END_TORN,    /* a record that is not whole: a torn tail */
};

/*
 * Scan an image of one segment (p, len) from offset 0: call cb for each
 * whole record in order (cb returns 0 to go on, anything else stops the
 * scan and is returned as is). *end gets the offset after the last whole
 * record, *how why the scan stopped. Returns 0, or cb's value. Pure: the
 * fuzz target and the tests drive it over memory.
 */
int seglog_scan_image(const void *p, size_t len, uint64_t seg,
    int (*cb)(void *arg, const struct seglog_rec *r), void *arg,
    size_t *end, enum seglog_end *how);

/*
 * The header of a record (type, id, payload given by iov) into
 * out[SEGLOG_HDR], checksum included. The record occupies
 * seglog_rec_size(len) bytes: header, payload, zero padding.
 */
void seglog_encode_header(unsigned char out[SEGLOG_HDR],
    enum seglog_type type, uint64_t id, const struct iovec *iov, int iovcnt);
uint64_t seglog_rec_size(uint64_t len);

struct seglog;
struct seglog_group;

/*
 * Open (creating when missing, with mode 0700 and owner uid/gid unless
 * (uid_t)-1) the directory `seg` under the directory fd dirfd. Segments
 * are segsize bytes (SEGLOG_MIN_SEGMENT..SEGLOG_MAX_SEGMENT). NULL with a
 * reason in err.
 */
struct seglog *seglog_open(int dirfd, uint64_t segsize, uid_t uid,
    gid_t gid, char *err, size_t errsize);
void seglog_free(struct seglog **lp);
/* The size of segments made from now on (call it before the first
 * commit). -1 (errno EINVAL) if out of range. */
int seglog_set_segment_size(struct seglog *l, uint64_t segsize);

/*
 * Scan every segment in number order, calling cb for each whole record.
 * A segment that ends in a torn record is logged, and nothing after the
 * torn record is read. Appending never resumes in a scanned segment: the
 * next commit starts a new one, so bytes after a torn record are never
 * overwritten by shorter ones and later mistaken for records. Returns 0,
 * cb's non-zero value, or -1 with a reason in err.
 */
int seglog_recover(struct seglog *l,
    int (*cb)(void *arg, const struct seglog_rec *r), void *arg, char *err,
    size_t errsize);

/* ---- commit groups ---- */

struct seglog_group *seglog_group_new(void);
void seglog_group_free(struct seglog_group **gp);
/* Forget the records (after a commit, to fill the group again). */
void seglog_group_reset(struct seglog_group *g);
/* Forget the records from index n on (a caller's that did not all fit). */
void seglog_group_truncate(struct seglog_group *g, size_t n);
size_t seglog_group_count(const struct seglog_group *g);
/*
 * Add a record. The payload is copied. Returns its index in the group, or
 * -1 with errno EMSGSIZE (over SEGLOG_MAX_RECORD) or ENOBUFS (the group
 * holds SEGLOG_GROUP_MAX records or SEGLOG_GROUP_BYTES).
 */
int seglog_group_add(struct seglog_group *g, enum seglog_type type,
    uint64_t id, const struct iovec *iov, int iovcnt);
/* Record i of the group as a scan would report it (pos once committed);
 * the payload points into the group. */
void seglog_group_rec(const struct seglog_group *g, size_t i,
    struct seglog_rec *r);

/*
 * Write the group's records at the end of the active segment (starting a
 * new segment when they do not fit) and fdatasync it. Without
 * SEGLOG_RESERVE a segment counts as full 1/SEGLOG_RESERVE_DIV before its
 * end; with it the commit may use that reserve (for records that let the
 * queue drain: journal, DONE; never new mail), so when no new segment can
 * be made (ENOSPC) progress can still be recorded and segments freed.
 * 0: every record is durable, and seglog_group_pos() tells where each
 * is. -1 with errno: none may be counted on (some may have reached the
 * disk and will be found by a later recovery). A group that does not fit
 * what is left of the active segment starts a new one before anything
 * is written, so if that fails (ENOSPC) nothing of the group is on disk;
 * only a group larger than a whole segment is split. After a failed
 * write the next commit starts a new segment.
 */
#define SEGLOG_RESERVE 1u
#define SEGLOG_RESERVE_DIV 8
/*
 * Write, do not fdatasync: the records reach the disk with the next
 * commit that syncs, or when their segment is sealed (then it is synced
 * first), or with the kernel's write-back: a sync of any segment covers
 * every record before it. For records whose loss a crash may cause without
 * harm beyond at-least-once delivery (DONE). A segment made for them is
 * still made durable.
 */
#define SEGLOG_NOSYNC 2u
int seglog_commit(struct seglog *l, struct seglog_group *g, unsigned flags);
struct seglog_pos seglog_group_pos(const struct seglog_group *g, size_t i);

/*
 * Read the payload of the record at pos (len octets of payload) into buf,
 * checking the header and the checksum. 0, or -1 with errno (EBADMSG:
 * the record is not what pos and len say).
 */
int seglog_read(struct seglog *l, struct seglog_pos pos, void *buf,
    size_t len);

/* The size of segments made from now on. */
uint64_t seglog_segment_size(const struct seglog *l);
/* The segment being appended to (0: none; the next commit makes one). */
uint64_t seglog_active(const struct seglog *l);
/* Segments on disk, and their total size in bytes. */
size_t seglog_segments(const struct seglog *l, uint64_t *bytes);

/*
 * Remove segment seg (no record in it is needed any more). Not the active
 * one. -1 with errno.
 */
int seglog_drop(struct seglog *l, uint64_t seg);

#endif

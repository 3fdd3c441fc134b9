/*
 * fuzz_seglog.c - libFuzzer target for the segment scanner that recovery
 * runs over every spool segment (seglog.c, docs/design/spool-v2.md).
 *
 *   make fuzz && ./build/fuzz/fuzz_seglog tests/fuzz/corpus/fuzz_seglog
 *
 * Input: a segment image. Checks, besides ASan/UBSan:
 * - records come in order, aligned, inside the image, back to back from
 *   offset 0 up to the end the scan reports;
 * - each record re-encodes to the same header (what the scanner accepts
 *   is exactly what seglog_encode_header writes);
 * - a clean end is followed only by zeros in the next header's span;
 * - scanning the prefix up to the reported end gives the same records
 *   and a clean end (a torn tail cut off is no loss).
 */
#include <stdint.h>
#include <string.h>

#include "queue/seglog.h"

#include "fuzz.h"

struct walk {
	const uint8_t *base;
	size_t next;
	size_t n;
};

static int
visit(void *arg, const struct seglog_rec *r)
{
	struct walk *w = arg;
	unsigned char hdr[SEGLOG_HDR];
	struct iovec iov = { (void *)r->payload, r->len };

	CHECK(r->pos.seg == 9);
	CHECK(r->pos.off == w->next);
	CHECK(r->pos.off % SEGLOG_ALIGN == 0);
	CHECK(r->type >= 1 && r->type <= SEGLOG_TYPE_MAX);
	CHECK(r->len <= SEGLOG_MAX_RECORD);
	CHECK((const uint8_t *)r->payload == w->base + r->pos.off + SEGLOG_HDR);
	seglog_encode_header(hdr, r->type, r->id, &iov, 1);
	CHECK(memcmp(hdr, w->base + r->pos.off, SEGLOG_HDR) == 0);
	w->next += seglog_rec_size(r->len);
	w->n++;
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct walk w = { data, 0, 0 }, w2 = { data, 0, 0 };
	enum seglog_end how, how2;
	size_t end, end2;

	CHECK(seglog_scan_image(data, size, 9, visit, &w, &end, &how) == 0);
	CHECK(end == w.next && end <= size);
	if (how == SEGLOG_END_CLEAN)
		for (size_t i = end; i < size && i < end + SEGLOG_HDR; i++)
			CHECK(data[i] == 0);
	CHECK(seglog_scan_image(data, end, 9, visit, &w2, &end2, &how2) == 0);
	CHECK(end2 == end && w2.n == w.n && how2 == SEGLOG_END_CLEAN);
	return 0;
}

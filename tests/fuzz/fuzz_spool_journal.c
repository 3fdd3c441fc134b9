/*
 * fuzz_spool_journal.c - libFuzzer target for what recovery reads from a
 * queue file (spool.c, docs/spool-format.md): the head line, the envelope
 * and the per-recipient delivery journal (A, D, F, T, W, R, H, U records),
 * through spool_msg_parse(), the in-memory half of spool_msg_load().
 *
 *   make fuzz && ./build/fuzz/fuzz_spool_journal tests/fuzz/corpus/fuzz_spool_journal
 *
 * Input: a whole queue file whose id is FUZZ_ID. Checks, besides
 * ASan/UBSan:
 * - the message and the journal lie within the image, and a torn last
 *   record is the only thing cut;
 * - every recipient's state is consistent (attribution only with its
 *   outcome, an mta name only with 's'/'d' and a printable token);
 * - the state is the journal's meaning, not its spelling: the image with
 *   its journal replaced by a canonical journal written from the state
 *   (one record per fact, in the documented format) replays to the same
 *   state.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "lib/log.h"
#include "queue/spool.h"

#include "fuzz.h"

#define FUZZ_ID "0123456789abcdef"

static void
check_status(const struct spool_rcpt_status *st)
{
	CHECK(st->state == SPOOL_RCPT_PENDING || st->state == SPOOL_RCPT_DEFERRED ||
	    st->state == SPOOL_RCPT_DELIVERED || st->state == SPOOL_RCPT_FAILED);
	CHECK(st->how == 0 || st->how == '-' || st->how == 'l' ||
	    st->how == 's' || st->how == 'd');
	/* attribution is taken by an outcome record only */
	if (st->state == SPOOL_RCPT_PENDING)
		CHECK(st->how == 0 && st->mta == NULL && st->reply == NULL);
	if (st->how == 0)
		CHECK(st->last_attempt == 0);
	if (st->mta != NULL) {
		size_t n = strlen(st->mta);
		CHECK(st->how == 's' || st->how == 'd');
		CHECK(n > 0 && n <= 255 && strcmp(st->mta, "-") != 0);
		for (size_t i = 0; i < n; i++)
			CHECK(st->mta[i] > 0x20 && st->mta[i] < 0x7f);
	}
	if (st->state == SPOOL_RCPT_FAILED)
		CHECK(st->reply != NULL);
	if (st->reply != NULL)
		CHECK(strchr(st->reply, '\n') == NULL);
	CHECK(st->attempts <= 1000000);
	CHECK(st->next_attempt >= 0 && st->last_attempt >= 0);
}

static void
attempt_rec(struct evbuffer *j, size_t i, const struct spool_rcpt_status *st)
{
	if (st->how != 0)
		evbuffer_add_printf(j, "A %zu %lld %c %s\n", i,
		    (long long)st->last_attempt, st->how,
		    st->mta != NULL ? st->mta : "-");
}

/* One journal with the facts of m, in an order replay keeps. */
static void
canonical_journal(const struct spool_msg *m, struct evbuffer *j)
{
	size_t n = spool_msg_envelope(m)->nrcpts;
	int64_t since;

	for (size_t i = 0; i < n; i++) {
		const struct spool_rcpt_status *st = spool_msg_rcpt(m, i);
		bool deferred_before = st->attempts > 0 || st->next_attempt > 0;

		if (st->warned)
			evbuffer_add_printf(j, "W %zu\n", i);
		if (st->reported)
			evbuffer_add_printf(j, "R %zu\n", i);
		switch (st->state) {
		case SPOOL_RCPT_PENDING:
			break;
		case SPOOL_RCPT_DEFERRED:
			attempt_rec(j, i, st);
			evbuffer_add_printf(j, "T %zu %lld %u %s\n", i,
			    (long long)st->next_attempt, st->attempts,
			    st->reply != NULL ? st->reply : "");
			break;
		case SPOOL_RCPT_DELIVERED:
			/* a deferral before the delivery left its traces */
			if (deferred_before || st->reply != NULL)
				evbuffer_add_printf(j, "T %zu %lld %u %s\n", i,
				    (long long)st->next_attempt, st->attempts,
				    st->reply != NULL ? st->reply : "");
			attempt_rec(j, i, st);
			evbuffer_add_printf(j, "D %zu\n", i);
			break;
		case SPOOL_RCPT_FAILED:
			if (deferred_before)
				evbuffer_add_printf(j, "T %zu %lld %u \n", i,
				    (long long)st->next_attempt, st->attempts);
			attempt_rec(j, i, st);
			evbuffer_add_printf(j, "F %zu %s\n", i, st->reply);
			break;
		}
	}
	if (spool_msg_held(m, &since))
		evbuffer_add_printf(j, "H %lld\n", (long long)since);
}

static void
check_same(const struct spool_msg *a, const struct spool_msg *b)
{
	size_t n = spool_msg_envelope(a)->nrcpts;
	int64_t sa, sb;

	CHECK(spool_msg_envelope(b)->nrcpts == n);
	CHECK(spool_msg_held(a, &sa) == spool_msg_held(b, &sb) && sa == sb);
	for (size_t i = 0; i < n; i++) {
		const struct spool_rcpt_status *x = spool_msg_rcpt(a, i);
		const struct spool_rcpt_status *y = spool_msg_rcpt(b, i);

		CHECK(x->state == y->state && x->attempts == y->attempts);
		CHECK(x->next_attempt == y->next_attempt);
		CHECK(fuzz_str_eq(x->reply, y->reply));
		CHECK(x->warned == y->warned && x->reported == y->reported);
		CHECK(x->how == y->how && x->last_attempt == y->last_attempt);
		CHECK(fuzz_str_eq(x->mta, y->mta));
	}
	CHECK(spool_msg_done(a) == spool_msg_done(b));
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool init;
	const char *p = (const char *)data;
	struct spool_msg *m, *m2;
	struct evbuffer *img;
	const char *body;
	size_t keep, blen, jstart, n;
	char err[256];

	if (!init) {
		log_set_level(LOG_LEVEL_ERR);
		init = true;
	}
	m = spool_msg_parse(FUZZ_ID, p, size, &keep, err, sizeof(err));
	if (m == NULL) {
		CHECK(err[0] != '\0');
		return 0;
	}
	body = spool_msg_body(m, &blen);
	CHECK(body > p && body + blen <= p + size);
	jstart = (size_t)(body - p) + blen;
	CHECK(keep >= jstart && keep <= size);
	/* only a torn last record is cut: no LF after keep */
	CHECK(keep == size || (memchr(p + keep, '\n', size - keep) == NULL &&
	    (keep == jstart || p[keep - 1] == '\n')));
	n = spool_msg_envelope(m)->nrcpts;
	CHECK(n >= 1);
	for (size_t i = 0; i < n; i++)
		check_status(spool_msg_rcpt(m, i));

	img = evbuffer_new();
	evbuffer_add(img, p, jstart);
	canonical_journal(m, img);
	size_t ilen = evbuffer_get_length(img);
	char *copy = malloc(ilen);
	CHECK(copy != NULL);
	memcpy(copy, evbuffer_pullup(img, -1), ilen);
	m2 = spool_msg_parse(FUZZ_ID, copy, ilen, &keep, err, sizeof(err));
	CHECK(m2 != NULL && keep == ilen);
	check_same(m, m2);

	spool_msg_close(&m2);
	spool_msg_close(&m);
	free(copy);
	evbuffer_free(img);
	return 0;
}

/*
 * test_proto_submit.c - the submission protocol's payloads
 * (proto/submit.h): BEGIN round trips and refusals, the queue id and the
 * failure reply, each a table of named cases with want/got.
 */
#include "unit.h"

#include <string.h>

#include <event2/buffer.h>

#include "lib/ipc.h"
#include "lib/util.h"
#include "mail/envelope.h"
#include "proto/submit.h"
#include "proto_test_util.h"

struct begin_case {
	const char *name;
	size_t nrcpts, addr_len;
	size_t max_rcpts;        /* given to the decoder */
	int want_encode, want_decode;
};

static const struct begin_case begin_cases[] = {
	{ "one recipient", 1, 20, 100, 0, 0 },
	{ "three recipients", 3, 40, 100, 0, 0 },
	{ "at the recipient bound", 5, 20, 5, 0, 0 },
	{ "over the recipient bound", 6, 20, 5, 0, -1 },
	{ "envelope over a frame", 400, 1000, 10000, -1, 0 },
};

static void
test_begin_table(void **state)
{
	for (size_t i = 0; i < nitems(begin_cases); i++) {
		const struct begin_case *c = &begin_cases[i];
		struct evbuffer *b = evbuffer_new();
		struct envelope env, got;
		char err[160];
		int rc;

		env_fill(&env, c->nrcpts, c->addr_len);
		rc = submit_begin_encode(b, &env);
		if (rc != c->want_encode)
			fail_msg("%s: encode want %d got %d", c->name,
			    c->want_encode, rc);
		if (rc == -1) {
			if (evbuffer_get_length(b) != 0)
				fail_msg("%s: a refused encode appended", c->name);
		} else {
			envelope_init(&got);
			rc = submit_begin_decode(evbuffer_pullup(b, -1),
			    evbuffer_get_length(b), c->max_rcpts, &got, err,
			    sizeof(err));
			if (rc != c->want_decode)
				fail_msg("%s: decode want %d got %d (%s)", c->name,
				    c->want_decode, rc, err);
			if (rc == 0) {
				char *a = env_text(&env), *g = env_text(&got);

				if (strcmp(a, g) != 0)
					fail_msg("%s: round trip differs", c->name);
				free(a);
				free(g);
			}
			envelope_clear(&got);
		}
		envelope_clear(&env);
		evbuffer_free(b);
	}
}

/* What the smtp process must never send: refused by the decoder. */
struct bad_begin_case {
	const char *name;
	const char *text;        /* NULL: a valid envelope with a queue id */
	size_t len;              /* 0: strlen(text) */
};

static const struct bad_begin_case bad_begin_cases[] = {
	{ "empty", "", 0 },
	{ "garbage", "hello world\n", 0 },
	{ "carries a queue id", NULL, 0 },
	{ "NUL inside", "version 1\n\0sender a@b\n", 22 },
};

static void
test_begin_refused(void **state)
{
	for (size_t i = 0; i < nitems(bad_begin_cases); i++) {
		const struct bad_begin_case *c = &bad_begin_cases[i];
		struct envelope env, got;
		char err[160] = "", *text = NULL;
		const char *p = c->text;
		size_t len = c->len != 0 ? c->len : c->text != NULL ?
		    strlen(c->text) : 0;

		if (c->text == NULL) {
			env_fill(&env, 1, 20);
			util_strlcpy(env.id, "0123456789abcdef", sizeof(env.id));
			p = text = env_text(&env);
			len = strlen(text);
			envelope_clear(&env);
		}
		envelope_init(&got);
		if (submit_begin_decode(p, len, 100, &got, err, sizeof(err)) != -1)
			fail_msg("%s: accepted", c->name);
		if (err[0] == '\0')
			fail_msg("%s: no reason", c->name);
		/* Refused means nothing left to free in got. */
		assert_null(got.rcpts);
		assert_null(got.sender);
		free(text);
	}
}

struct qid_case {
	const char *name;
	const char *in;
	size_t len;
	int want;
};

static const struct qid_case qid_cases[] = {
	{ "lower-case hex", "0123456789abcdef", 16, 0 },
	{ "upper-case hex", "0123456789ABCDEF", 16, 0 },
	{ "short", "0123456789abcde", 15, -1 },
	{ "long", "0123456789abcdef0", 17, -1 },
	{ "not hex", "0123456789abcdeg", 16, -1 },
	{ "NUL inside", "0123456789ab\0def", 16, -1 },
	{ "empty", "", 0, -1 },
};

static void
test_qid_table(void **state)
{
	for (size_t i = 0; i < nitems(qid_cases); i++) {
		const struct qid_case *c = &qid_cases[i];
		char id[QUEUE_ID_LEN + 1];
		int got = submit_qid_decode(c->in, c->len, id);

		if (got != c->want)
			fail_msg("%s: want %d got %d", c->name, c->want, got);
		if (got == 0 && (strlen(id) != QUEUE_ID_LEN ||
		    memcmp(id, c->in, QUEUE_ID_LEN) != 0))
			fail_msg("%s: id '%s'", c->name, id);
	}
}

struct reply_case {
	const char *name;
	const char *in;
	int want;
};

static const struct reply_case reply_cases[] = {
	{ "451", "451 4.3.0 Queue file write error", 0 },
	{ "552", "552 5.3.4 Message size exceeds fixed maximum message size", 0 },
	{ "shortest", "451 ", 0 },
	{ "too short", "451", -1 },
	{ "success code", "250 2.0.0 Ok", -1 },
	{ "3xx", "354 go ahead", -1 },
	{ "CR LF inside", "451 a\r\n250 ok", -1 },
	{ "8-bit", "451 \xc3\xa9", -1 },
	{ "DEL", "451 \x7f", -1 },
	{ "empty", "", -1 },
};

static void
test_reply_table(void **state)
{
	for (size_t i = 0; i < nitems(reply_cases); i++) {
		const struct reply_case *c = &reply_cases[i];
		char reply[SUBMIT_REPLY_MAX];
		int got = submit_reply_decode(c->in, strlen(c->in), reply);

		if (got != c->want)
			fail_msg("%s: want %d got %d", c->name, c->want, got);
		if (got == 0 && strcmp(reply, c->in) != 0)
			fail_msg("%s: reply '%s'", c->name, reply);
	}
}

/* The longest reply that fits, and one octet more. */
static void
test_reply_bound(void **state)
{
	char in[SUBMIT_REPLY_MAX + 1], reply[SUBMIT_REPLY_MAX];

	memset(in, 'x', sizeof(in));
	memcpy(in, "451 ", 4);
	assert_int_equal(submit_reply_decode(in, SUBMIT_REPLY_MAX - 1, reply), 0);
	assert_int_equal(strlen(reply), SUBMIT_REPLY_MAX - 1);
	assert_int_equal(submit_reply_decode(in, SUBMIT_REPLY_MAX, reply), -1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_begin_table),
		cmocka_unit_test(test_begin_refused),
		cmocka_unit_test(test_qid_table),
		cmocka_unit_test(test_reply_table),
		cmocka_unit_test(test_reply_bound),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

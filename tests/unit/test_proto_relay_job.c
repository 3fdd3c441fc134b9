/*
 * test_proto_relay_job.c - the relay protocol's payloads
 * (proto/relay_job.h): job frames and their START payload, results
 * encoded and decoded (round trips: what the relay writes, the queue
 * accepts), and every malformed result the queue must refuse. Tables of
 * named cases with want/got.
 */
#include "unit.h"

#include <string.h>

#include <event2/buffer.h>

#include "lib/ipc.h"
#include "lib/util.h"
#include "mail/envelope.h"
#include "proto/relay_job.h"
#include "proto_test_util.h"

/* ---- jobs ---- */

struct job_case {
	const char *name;
	const char *domain;
	size_t nrcpts, addr_len, body_len;
	int want;
	size_t want_data;        /* DATA frames */
};

static const struct job_case job_cases[] = {
	{ "small", "example.net", 1, 20, 100, 0, 1 },
	{ "empty body", "example.net", 2, 20, 0, 0, 0 },
	{ "body of three frames", "example.net", 3, 20,
	  2 * IPC_MAX_PAYLOAD + 5, 0, 3 },
	{ "body of exactly one frame", "example.net", 1, 20, IPC_MAX_PAYLOAD,
	  0, 1 },
	{ "UTF-8 domain", "b\xc3\xbc" "cher.example", 1, 20, 10, 0, 1 },
	{ "head over a frame", "example.net", 400, 1000, 10, -1, 0 },
};

static void
test_job_table(void **state)
{
	static char body[2 * IPC_MAX_PAYLOAD + 5];

	for (size_t i = 0; i < sizeof(body); i++)
		body[i] = (char)('a' + i % 26);
	for (size_t i = 0; i < nitems(job_cases); i++) {
		const struct job_case *c = &job_cases[i];
		struct evbuffer *b = evbuffer_new();
		struct envelope env, got;
		char domain[RELAY_JOB_DOMAIN_MAX + 1], err[160];
		size_t ndata = 0, body_got = 0;
		bool end = false;
		int rc;

		env_fill(&env, c->nrcpts, c->addr_len);
		util_strlcpy(env.id, "0123456789abcdef", sizeof(env.id));
		rc = relay_job_encode(b, 77, c->domain, &env, body, c->body_len);
		if (rc != c->want)
			fail_msg("%s: encode want %d got %d", c->name, c->want, rc);
		if (rc == -1 && evbuffer_get_length(b) != 0)
			fail_msg("%s: a refused job appended frames", c->name);
		/* Walk the frames: START, DATA..., END, all with id 77. */
		for (bool first = true; evbuffer_get_length(b) > 0; first = false) {
			unsigned char hb[IPC_HDR_SIZE];
			struct ipc_hdr h;
			const char *why;

			assert_false(end);
			evbuffer_remove(b, hb, sizeof(hb));
			assert_int_equal(ipc_hdr_decode(hb, &h, &why), 0);
			assert_int_equal(h.id, 77);
			const unsigned char *p = evbuffer_pullup(b, h.len);
			if (first) {
				assert_int_equal(h.type, RELAY_JOB_START);
				envelope_init(&got);
				if (relay_job_decode(p, h.len, domain, &got, err,
				    sizeof(err)) != 0)
					fail_msg("%s: START refused: %s", c->name, err);
				assert_string_equal(domain, c->domain);
				char *a = env_text(&env), *g = env_text(&got);
				assert_string_equal(a, g);
				free(a);
				free(g);
				envelope_clear(&got);
			} else if (h.type == RELAY_JOB_DATA) {
				assert_memory_equal(p, body + body_got, h.len);
				body_got += h.len;
				ndata++;
			} else {
				assert_int_equal(h.type, RELAY_JOB_END);
				assert_int_equal(h.len, 0);
				end = true;
			}
			evbuffer_drain(b, h.len);
		}
		if (rc == 0 && (!end || ndata != c->want_data ||
		    body_got != c->body_len))
			fail_msg("%s: end %d, %zu DATA frames, %zu octets", c->name,
			    end, ndata, body_got);
		envelope_clear(&env);
		evbuffer_free(b);
	}
}

struct bad_job_case {
	const char *name;
	const char *head;        /* prepended to a valid envelope, or all */
	bool envelope;           /* append a valid envelope */
	size_t nrcpts;
	const char *want_err;
};

static const struct bad_job_case bad_job_cases[] = {
	{ "no domain line", "", true, 1, "domain line" },
	{ "no LF", "domain example.net", false, 0, "domain line" },
	{ "empty domain", "domain \n", true, 1, "empty" },
	{ "space in domain", "domain a b\n", true, 1, "space" },
	{ "tab in domain", "domain a\tb\n", true, 1, "control" },
	{ "DEL in domain", "domain a\x7f\n", true, 1, "control" },
	{ "no envelope", "domain example.net\n", false, 0, "" },
	{ "no recipients", "domain example.net\n", true, 0, "no recipients" },
	{ "too many recipients", "domain example.net\n", true,
	  RELAY_JOB_MAX_RCPTS + 1, "" },
};

static void
test_job_refused(void **state)
{
	char longdom[RELAY_JOB_DOMAIN_MAX + 16];

	for (size_t i = 0; i < nitems(bad_job_cases) + 1; i++) {
		const struct bad_job_case *c = i < nitems(bad_job_cases) ?
		    &bad_job_cases[i] : NULL;
		struct evbuffer *b = evbuffer_new();
		struct envelope env, got;
		char domain[RELAY_JOB_DOMAIN_MAX + 1], err[160] = "";
		const char *name = c != NULL ? c->name : "domain too long";

		if (c == NULL) {
			/* 256 octets: one more than a domain may have. */
			memset(longdom, 'a', sizeof(longdom));
			memcpy(longdom, "domain ", 7);
			longdom[7 + RELAY_JOB_DOMAIN_MAX + 1] = '\n';
			evbuffer_add(b, longdom, 7 + RELAY_JOB_DOMAIN_MAX + 2);
		} else {
			evbuffer_add(b, c->head, strlen(c->head));
		}
		if (c == NULL || c->envelope) {
			env_fill(&env, c != NULL ? c->nrcpts : 1, 20);
			envelope_serialize(&env, b);
			envelope_clear(&env);
		}
		envelope_init(&got);
		if (relay_job_decode(evbuffer_pullup(b, -1), evbuffer_get_length(b),
		    domain, &got, err, sizeof(err)) != -1)
			fail_msg("%s: accepted", name);
		if (err[0] == '\0' || (c != NULL && strstr(err, c->want_err) == NULL))
			fail_msg("%s: reason '%s'", name, err);
		assert_null(got.rcpts);
		evbuffer_free(b);
	}
}

/* ---- results ---- */

static char *
payload_of(struct evbuffer *b, size_t *len)
{
	char *s;

	*len = evbuffer_get_length(b);
	s = xmalloc(*len + 1);
	evbuffer_remove(b, s, *len);
	s[*len] = '\0';
	return s;
}

struct line_case {
	const char *name;
	struct relay_result_line in;
	/* what the queue then sees */
	char want_outcome;
	unsigned want_code;
	const char *want_enh, *want_text;
};

static const struct line_case line_cases[] = {
	{ "delivered", { 'D', 250, "2.0.0", "Ok: queued as X" },
	  'D', 250, "2.0.0", "Ok: queued as X" },
	{ "temporary", { 'T', 451, "4.7.1", "greylisted" },
	  'T', 451, "4.7.1", "greylisted" },
	{ "permanent", { 'F', 550, "5.1.1", "no such user" },
	  'F', 550, "5.1.1", "no such user" },
	{ "tern's own decision", { 'T', 0, "4.4.1", "connection refused" },
	  'T', 0, "4.4.1", "connection refused" },
	{ "no status code", { 'F', 550, "", "nope" }, 'F', 550, "5.0.0", "nope" },
	{ "class against the outcome", { 'T', 250, "2.0.0", "odd" },
	  'T', 0, "4.0.0", "odd" },
	{ "3xx to a greeting", { 'T', 354, "3.0.0", "go on" },
	  'T', 0, "4.0.0", "go on" },
	{ "malformed status code", { 'F', 550, "5.1.x", "x" },
	  'F', 550, "5.0.0", "x" },
	{ "status with a space", { 'F', 550, "5.1 1", "x" },
	  'F', 550, "5.0.0", "x" },
	{ "leading zeros kept", { 'F', 550, "5.01.001", "x" },
	  'F', 550, "5.01.001", "x" },
	{ "code out of range", { 'F', 5500, "5.0.0", "x" },
	  'F', 0, "5.0.0", "x" },
	{ "control octets in text", { 'T', 421, "4.3.2", "a\r\nb\tc\x01" },
	  'T', 421, "4.3.2", "a??b?c?" },
	{ "8-bit text", { 'F', 550, "5.6.7", "caf\xc3\xa9" },
	  'F', 550, "5.6.7", "caf??" },
	{ "empty text, delivered", { 'D', 250, "2.0.0", "" },
	  'D', 250, "2.0.0", "delivered" },
	{ "empty text, failed", { 'F', 550, "5.0.0", "" },
	  'F', 550, "5.0.0", "no reply text" },
	{ "unknown outcome", { 'X', 0, "", "?" }, 'T', 0, "4.0.0", "?" },
};

static void
test_result_round_trip(void **state)
{
	size_t n = nitems(line_cases);
	struct evbuffer *b = evbuffer_new();
	struct relay_result res;
	struct relay_result_rcpt rcpts[nitems(line_cases)];
	char why[160] = "", *p;
	size_t len;

	relay_result_begin(b, "mx1.example.net", "192.0.2.25", "TLSv1.3:X",
	    true);
	for (size_t i = 0; i < n; i++) {
		struct relay_result_line l = line_cases[i].in;

		relay_result_add(b, i, &l, relay_result_text_max(n));
	}
	p = payload_of(b, &len);
	if (relay_result_decode(p, len, n, &res, rcpts, why, sizeof(why)) != 0)
		fail_msg("refused: %s\n%s", why, p);
	assert_true(res.peer_dsn);
	assert_int_equal(res.n, n);
	assert_int_equal(res.via_len[0], strlen("mx1.example.net"));
	assert_memory_equal(res.via[1], "192.0.2.25", 10);
	for (size_t i = 0; i < n; i++) {
		const struct line_case *c = &line_cases[i];
		const struct relay_result_rcpt *r = &rcpts[i];

		if (r->outcome != c->want_outcome || r->code != c->want_code ||
		    r->enh_len != strlen(c->want_enh) ||
		    memcmp(r->enh, c->want_enh, r->enh_len) != 0 ||
		    r->text_len != strlen(c->want_text) ||
		    memcmp(r->text, c->want_text, r->text_len) != 0)
			fail_msg("%s: got %c %u %.*s '%.*s'", c->name, r->outcome,
			    r->code, (int)r->enh_len, r->enh, (int)r->text_len,
			    r->text);
	}
	free(p);
	evbuffer_free(b);
}

/* No server reached, and via tokens that are not tokens. */
static void
test_result_via(void **state)
{
	struct evbuffer *b = evbuffer_new();
	struct relay_result res;
	struct relay_result_rcpt r[1];
	char why[160], *p, big[400];
	size_t len;

	relay_result_begin(b, NULL, "", NULL, false);
	p = payload_of(b, &len);
	assert_string_equal(p, "via - - -\n");
	assert_int_equal(relay_result_decode(p, len, 1, &res, r, why,
	    sizeof(why)), 0);
	assert_int_equal(res.n, 0);   /* every recipient deferred */
	assert_false(res.peer_dsn);
	free(p);

	memset(big, 'm', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	relay_result_begin(b, big, "a b", "x\x01y", false);
	p = payload_of(b, &len);
	assert_int_equal(relay_result_decode(p, len, 1, &res, r, why,
	    sizeof(why)), 0);
	assert_int_equal(res.via_len[0], RELAY_RESULT_TOKEN_MAX);
	assert_memory_equal(res.via[1], "a?b", 3);
	assert_memory_equal(res.via[2], "x?y", 3);
	free(p);
	evbuffer_free(b);
}

/* 1000 recipients with the longest texts still fit one frame. */
static void
test_result_fits_a_frame(void **state)
{
	size_t n = RELAY_JOB_MAX_RCPTS;
	struct evbuffer *b = evbuffer_new();
	struct relay_result res;
	struct relay_result_rcpt *r = xcalloc(n, sizeof(*r));
	char why[160], *p;
	size_t len;

	relay_result_begin(b, "mx", "192.0.2.1", "none", true);
	for (size_t i = 0; i < n; i++) {
		struct relay_result_line l = { 'F', 550, "5.123.123", "" };

		memset(l.text, 'x', RELAY_RESULT_TEXT_MAX);
		relay_result_add(b, i, &l, relay_result_text_max(n));
	}
	assert_true(evbuffer_get_length(b) <= IPC_MAX_PAYLOAD);
	assert_true(relay_result_text_max(n) >= 200);
	assert_int_equal(relay_result_text_max(1), RELAY_RESULT_TEXT_MAX);
	p = payload_of(b, &len);
	assert_int_equal(relay_result_decode(p, len, n, &res, r, why,
	    sizeof(why)), 0);
	assert_int_equal(res.n, n);
	free(p);
	free(r);
	evbuffer_free(b);
}

struct bad_result_case {
	const char *name;
	const char *in;
	size_t nrcpts;
	const char *want_why;
	size_t len;              /* 0: strlen(in) */
};

/* 64 octets of text, to build one longer than RELAY_RESULT_TEXT_MAX */
#define X64 "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"

static const struct bad_result_case bad_result_cases[] = {
	{ "empty", "", 1, "empty", 0 },
	{ "no via line", "0 D 250 2.0.0 ok\n", 1, "via", 0 },
	{ "via without LF", "via a b c", 1, "via", 0 },
	{ "via with two tokens", "via a b\n", 1, "via", 0 },
	{ "via with four tokens", "via a b c d\n", 1, "via", 0 },
	{ "via with a double space", "via a  b c\n", 1, "via", 0 },
	{ "via with a control octet", "via a\x01 b c\n", 1, "via", 0 },
	{ "unterminated line", "via - - -\n0 D 250 2.0.0 ok", 1, "unterminated", 0 },
	{ "index from 1", "via - - -\n1 D 250 2.0.0 ok\n", 1, "bad index", 0 },
	{ "index with a leading zero", "via - - -\n00 D 250 2.0.0 ok\n", 1,
	  "bad index", 0 },
	{ "bad outcome", "via - - -\n0 X 250 2.0.0 ok\n", 1, "bad outcome", 0 },
	{ "two-letter outcome", "via - - -\n0 DD 250 2.0.0 ok\n", 1,
	  "bad outcome", 0 },
	{ "code 199", "via - - -\n0 D 199 2.0.0 ok\n", 1, "reply code", 0 },
	{ "code 600", "via - - -\n0 F 600 5.0.0 x\n", 1, "reply code", 0 },
	{ "code 00", "via - - -\n0 T 00 4.0.0 x\n", 1, "reply code", 0 },
	{ "code 0250", "via - - -\n0 D 0250 2.0.0 ok\n", 1, "reply code", 0 },
	{ "status class 3", "via - - -\n0 T 451 3.0.0 x\n", 1, "status code", 0 },
	{ "status without detail", "via - - -\n0 T 451 4.0 x\n", 1,
	  "status code", 0 },
	{ "status detail of 4 digits", "via - - -\n0 T 451 4.0.1234 x\n", 1,
	  "status code", 0 },
	{ "short line", "via - - -\n0 D 250\n", 1, "short", 0 },
	{ "CR in a line", "via - - -\n0 D 250 2.0.0 ok\r\n", 1, "CR", 0 },
	{ "control octet in the text", "via - - -\n0 F 550 5.0.0 a\x1b[2Jb\n", 1,
	  "control or 8-bit", 0 },
	{ "8-bit octet in the text", "via - - -\n0 F 550 5.0.0 caf\xc3\xa9\n", 1,
	  "control or 8-bit", 0 },
	{ "text over 511 octets", "via - - -\n0 F 550 5.0.0 "
	  X64 X64 X64 X64 X64 X64 X64 X64 "\n", 1, "too long", 0 },
	{ "NUL in the payload", "via - - -\n0 D 250 2.0.0 o\0k\n", 1, "NUL", 28 },
	{ "more lines than recipients",
	  "via - - -\n0 D 250 2.0.0 a\n1 D 250 2.0.0 b\n", 1, "more result lines", 0 },
	{ "fewer lines than recipients", "via - - -\n0 D 250 2.0.0 a\n", 2,
	  "1 result lines for 2", 0 },
	{ "peer-dsn before via", "peer-dsn\nvia - - -\n", 1, "via", 0 },
	{ "peer-dsn twice", "via - - -\npeer-dsn\npeer-dsn\n", 1, "short", 0 },
};

static void
test_result_refused(void **state)
{
	for (size_t i = 0; i < nitems(bad_result_cases); i++) {
		const struct bad_result_case *c = &bad_result_cases[i];
		struct relay_result res;
		struct relay_result_rcpt r[4];
		char why[160] = "";
		size_t len = c->len != 0 ? c->len : strlen(c->in);
		if (relay_result_decode(c->in, len, c->nrcpts, &res, r, why,
		    sizeof(why)) != -1)
			fail_msg("%s: accepted", c->name);
		if (strstr(why, c->want_why) == NULL)
			fail_msg("%s: want reason '%s', got '%s'", c->name,
			    c->want_why, why);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_job_table),
		cmocka_unit_test(test_job_refused),
		cmocka_unit_test(test_result_round_trip),
		cmocka_unit_test(test_result_via),
		cmocka_unit_test(test_result_fits_a_frame),
		cmocka_unit_test(test_result_refused),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * test_auth.c - sasl.c (strict base64, PLAIN messages), auth.c (crypt_r in
 * worker threads, failure delays and throttling on a real event loop) and
 * passwd.c's line update.
 */
#include <crypt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "unit.h"

#include "smtpd/auth.h"
#include "conf/config.h"
#include "conf/passwd.h"
#include "mail/sasl.h"
#include "lib/util.h"

/* ------------------------------------------------------------------ */
/* base64 */

struct b64_case {
	const char *name;
	const char *in;
	int want_len;          /* -1: refused */
	const char *want;
};

static void
test_b64_decode(void **state)
{
	static const struct b64_case cases[] = {
		{ "empty", "", 0, "" },
		{ "no padding", "YWJj", 3, "abc" },
		{ "one pad", "YWI=", 2, "ab" },
		{ "two pads", "YQ==", 1, "a" },
		{ "NULs", "AGEAYg==", 4, "\0a\0b" },
		{ "pad first (RFC 4954 4)", "=AAA", -1, NULL },
		{ "pad in the middle (RFC 4954 4)", "AAA=BBBB", -1, NULL },
		{ "three pads", "A===", -1, NULL },
		{ "pad then data", "YQ=a", -1, NULL },
		{ "not a multiple of 4", "YWJ", -1, NULL },
		{ "blank inside", "YW Jj", -1, NULL },
		{ "outside the alphabet", "YW-j", -1, NULL },
		{ "url-safe alphabet", "YW_j", -1, NULL },
		{ "CR", "YWJj\r", -1, NULL },
		{ "8-bit", "YWJ\xc3", -1, NULL },
		/* RFC 4648 3.5: non-zero bits before the padding */
		{ "two pads, lowest unused bit set", "YR==", -1, NULL },
		{ "two pads, unused bits set", "YX==", -1, NULL },
		{ "one pad, lowest unused bit set", "YWJ=", -1, NULL },
		{ "one pad, unused bits set", "YWH=", -1, NULL },
		{ "one pad, canonical", "YWE=", 2, "aa" },
	};
	unsigned char out[64];

	for (size_t i = 0; i < nitems(cases); i++) {
		const struct b64_case *c = &cases[i];
		ssize_t n = sasl_b64_decode(c->in, strlen(c->in), out, sizeof(out));

		if (n != c->want_len)
			fail_msg("%s: want %d, got %zd", c->name, c->want_len, n);
		if (n > 0 && memcmp(out, c->want, (size_t)n) != 0)
			fail_msg("%s: wrong bytes", c->name);
	}
	/* the output bound is respected */
	assert_int_equal(sasl_b64_decode("YWJj", 4, out, 2), -1);
	assert_int_equal(sasl_b64_decode("YWJj", 4, out, 3), 3);
}

static void
test_b64_round_trip(void **state)
{
	unsigned char in[256], back[256];
	char enc[400];

	for (size_t i = 0; i < sizeof(in); i++)
		in[i] = (unsigned char)(i * 7 + 3);
	for (size_t n = 0; n <= sizeof(in); n++) {
		ssize_t e = sasl_b64_encode(in, n, enc, sizeof(enc));

		assert_int_equal(e, (ssize_t)(4 * ((n + 2) / 3)));
		assert_int_equal(sasl_b64_decode(enc, (size_t)e, back, sizeof(back)),
		    (ssize_t)n);
		assert_memory_equal(in, back, n);
	}
	assert_int_equal(sasl_b64_encode("abc", 3, enc, 4), -1);
}

static void
test_plain_parse(void **state)
{
	static const struct {
		const char *name;
		const char *msg;
		size_t len;
		bool ok;
		const char *authzid, *authcid, *passwd;
	} cases[] = {
		{ "no authzid", "\0alice\0pw", 9, true, "", "alice", "pw" },
		{ "authzid", "bob\0alice\0pw", 12, true, "bob", "alice", "pw" },
		{ "one NUL", "alice\0pw", 8, false, NULL, NULL, NULL },
		{ "three NULs", "\0alice\0pw\0", 10, false, NULL, NULL, NULL },
		{ "empty authcid", "\0\0pw", 4, false, NULL, NULL, NULL },
		{ "empty password", "\0alice\0", 7, false, NULL, NULL, NULL },
		{ "empty", "", 0, false, NULL, NULL, NULL },
	};
	struct sasl_plain p;
	char big[600];

	for (size_t i = 0; i < nitems(cases); i++) {
		bool ok = sasl_plain_parse((const unsigned char *)cases[i].msg,
		    cases[i].len, &p);

		if (ok != cases[i].ok)
			fail_msg("%s: want %d", cases[i].name, cases[i].ok);
		if (!ok)
			continue;
		assert_int_equal(p.authzid_len, strlen(cases[i].authzid));
		assert_memory_equal(p.authcid, cases[i].authcid, p.authcid_len);
		assert_int_equal(p.authcid_len, strlen(cases[i].authcid));
		assert_memory_equal(p.passwd, cases[i].passwd, p.passwd_len);
	}
	/* RFC 4616 2: at most 255 octets each */
	memset(big, 'a', sizeof(big));
	big[0] = '\0';
	big[256] = '\0';   /* authcid of 255 */
	assert_true(sasl_plain_parse((unsigned char *)big, 260, &p));
	big[256] = 'a';
	big[257] = '\0';   /* authcid of 256 */
	assert_false(sasl_plain_parse((unsigned char *)big, 260, &p));
}

/* ------------------------------------------------------------------ */
/* auth.c on a real loop */

struct result {
	bool done;
	enum smtp_auth_verdict v;
	int64_t at;
};

static void
on_result(void *arg, enum smtp_auth_verdict v)
{
	struct result *r = arg;

	r->done = true;
	r->v = v;
	r->at = util_mono_ms();
}

/* rounds of the test users' SHA-512 hashes: cheap keeps tests fast */
static unsigned hash_rounds = 1000;

static struct config *
auth_config(char *dir, size_t dirsize, const char *extra)
{
	char path[256], hash_setting[CRYPT_GENSALT_OUTPUT_SIZE], *errors = NULL;
	struct crypt_data cd;
	struct config *cfg;
	FILE *f;

	snprintf(dir, dirsize, "/tmp/tern-auth-XXXXXX");
	assert_non_null(mkdtemp(dir));
	assert_non_null(crypt_gensalt_rn("$6$", hash_rounds, NULL, 0, hash_setting,
	    sizeof(hash_setting)));
	memset(&cd, 0, sizeof(cd));
	assert_non_null(crypt_r("secret", hash_setting, &cd));
	snprintf(path, sizeof(path), "%s/passwd", dir);
	f = fopen(path, "w");
	assert_non_null(f);
	fprintf(f, "alice@example.test:%s\nlocked@example.test:!%s\n",
	    cd.output, cd.output);
	fclose(f);
	chmod(path, 0600);
	snprintf(path, sizeof(path), "%s/tern.conf", dir);
	f = fopen(path, "w");
	assert_non_null(f);
	fprintf(f, "spool %s/spool\npasswd_file %s/passwd\n%s\n", dir, dir,
	    extra);
	fclose(f);
	cfg = config_load(path, &errors);
	if (cfg == NULL)
		fail_msg("%s", errors);
	free(errors);
	return cfg;
}

static void
run_until(struct event_base *base, struct result *r)
{
	int64_t deadline = util_mono_ms() + 20000;

	while (!r->done && util_mono_ms() < deadline)
		event_base_loop(base, EVLOOP_ONCE);
	assert_true(r->done);
}

static enum smtp_auth_verdict
verify(struct auth *a, struct event_base *base, const char *addr,
    const char *user, const char *pass, int64_t *took)
{
	struct result r = { 0 };
	int64_t t0 = util_mono_ms();

	void *h = auth_ops.start(a, addr, user, strlen(user), pass, strlen(pass),
	    on_result, &r);
	assert_non_null(h);
	assert_false(r.done);     /* never inside start() */
	run_until(base, &r);
	if (took != NULL)
		*took = r.at - t0;
	return r.v;
}

static void
test_auth_verify(void **state)
{
	char dir[64];
	struct config *cfg = auth_config(dir, sizeof(dir),
	    "auth_failure_delay 0\nauth_max_failures 100");
	struct event_base *base = event_base_new();
	struct auth *a = auth_new(base, cfg);

	assert_int_equal(verify(a, base, "192.0.2.1", "alice@example.test",
	    "secret", NULL), SMTP_AUTH_OK);
	assert_int_equal(verify(a, base, "192.0.2.1", "alice@example.test",
	    "Secret", NULL), SMTP_AUTH_FAILED);
	assert_int_equal(verify(a, base, "192.0.2.1", "nobody@example.test",
	    "secret", NULL), SMTP_AUTH_FAILED);
	/* a locked account never matches, even with its password */
	assert_int_equal(verify(a, base, "192.0.2.1", "locked@example.test",
	    "secret", NULL), SMTP_AUTH_FAILED);
	/* the user name is matched exactly */
	assert_int_equal(verify(a, base, "192.0.2.1", "Alice@example.test",
	    "secret", NULL), SMTP_AUTH_FAILED);
	assert_false(auth_ops.throttled(a, "192.0.2.1"));
	auth_free(&a);
	assert_null(a);
	event_base_free(base);
	config_free(&cfg);
	unit_rm_tree(dir);
}

static void
test_auth_delay_and_throttle(void **state)
{
	char dir[64];
	struct config *cfg = auth_config(dir, sizeof(dir),
	    "auth_failure_delay 1s\nauth_max_failures 3\nauth_throttle_time 3s");
	struct event_base *base = event_base_new();
	struct auth *a = auth_new(base, cfg);
	int64_t t1, t2, t3;

	/* 1 s, then 2 s, then locked out at once */
	assert_int_equal(verify(a, base, "2001:db8::1", "alice@example.test",
	    "x", &t1), SMTP_AUTH_FAILED);
	assert_int_equal(verify(a, base, "2001:db8::2", "alice@example.test",
	    "y", &t2), SMTP_AUTH_FAILED);
	assert_true(t1 >= 1000);
	assert_true(t2 >= 2000);
	assert_int_equal(verify(a, base, "2001:db8::1", "alice@example.test",
	    "z", &t3), SMTP_AUTH_LOCKED);
	assert_true(t3 < 1000);
	/* the whole /64 is throttled, other addresses are not */
	assert_true(auth_ops.throttled(a, "2001:db8::99"));
	assert_false(auth_ops.throttled(a, "2001:db8:1::1"));
	assert_false(auth_ops.throttled(a, "192.0.2.1"));
	/* even the right password is refused while locked */
	assert_int_equal(verify(a, base, "2001:db8::3", "alice@example.test",
	    "secret", NULL), SMTP_AUTH_LOCKED);
	/* until auth_throttle_time has passed */
	usleep(3100 * 1000);
	assert_false(auth_ops.throttled(a, "2001:db8::1"));
	assert_int_equal(verify(a, base, "2001:db8::1", "alice@example.test",
	    "secret", NULL), SMTP_AUTH_OK);
	auth_free(&a);
	event_base_free(base);
	config_free(&cfg);
	unit_rm_tree(dir);
}

static void
test_auth_cancel_and_table_bound(void **state)
{
	char dir[64], addr[64];
	struct config *cfg = auth_config(dir, sizeof(dir),
	    "auth_failure_delay 1s\nauth_max_failures 1\nauth_throttle_time 1h");
	struct event_base *base = event_base_new();
	struct auth *a = auth_new(base, cfg);
	struct result r = { 0 }, r2 = { 0 };
	int nfill = AUTH_TABLE_BUCKETS * AUTH_TABLE_WAYS + 100, nlocked = 0;
	void *h;

	/* cancelled while a worker hashes: no callback, freed later */
	h = auth_ops.start(a, "192.0.2.7", "alice@example.test", 18, "x", 1,
	    on_result, &r);
	auth_ops.cancel(a, h);
	/* cancelled while locked-out answer waits on the loop */
	assert_int_equal(verify(a, base, "192.0.2.8", "alice@example.test",
	    "x", NULL), SMTP_AUTH_LOCKED);
	h = auth_ops.start(a, "192.0.2.8", "alice@example.test", 18, "x", 1,
	    on_result, &r2);
	auth_ops.cancel(a, h);
	for (int i = 0; i < 50; i++)
		event_base_loop(base, EVLOOP_NONBLOCK);
	usleep(300 * 1000);
	event_base_loop(base, EVLOOP_NONBLOCK);
	assert_false(r.done);
	assert_false(r2.done);
	/* more failing addresses than the table holds (every one of them):
	 * it stays bounded (a fixed array: some early ones are forgotten),
	 * and the newest lock-outs are kept */
	for (int i = 0; i < nfill; i++) {
		snprintf(addr, sizeof(addr), "10.%d.%d.%d", i >> 16 & 255,
		    i >> 8 & 255, i & 255);
		assert_int_equal(verify(a, base, addr, "nobody", "x", NULL),
		    SMTP_AUTH_LOCKED);
		assert_true(auth_ops.throttled(a, addr));
	}
	for (int i = 0; i < nfill; i++) {
		snprintf(addr, sizeof(addr), "10.%d.%d.%d", i >> 16 & 255,
		    i >> 8 & 255, i & 255);
		if (auth_ops.throttled(a, addr))
			nlocked++;
		else if (i >= nfill - 32)   /* 5 of the last 32 in one bucket */
			fail_msg("%s, among the newest, was evicted", addr);
	}
	assert_true(nlocked <= AUTH_TABLE_BUCKETS * AUTH_TABLE_WAYS);
	assert_true(nlocked >= nfill / 2);   /* ~850 evicted, by chance */
	auth_free(&a);
	event_base_free(base);
	config_free(&cfg);
	unit_rm_tree(dir);
}

/*
 * Clients that send AUTH and reset the connection before the answer
 * (the session cancels the job): the cancelled jobs leave the queue
 * without a hash, each counts as a failure, and the queue is bounded
 * overall and per address (454 4.7.0 beyond that).
 */
static void
test_auth_cancel_flood(void **state)
{
	char dir[64], addr[64];
	struct config *cfg;
	struct event_base *base = event_base_new();
	struct auth *a;
	static struct result rs[AUTH_PENDING_MAX + 8];
	void *hs[AUTH_PENDING_MAX + 8];
	struct result r = { 0 };
	int64_t took, t0;
	size_t n = 0;
	void *h;

	/* a costly hash (tens of ms): 300 hashes would take seconds */
	hash_rounds = 300000;
	cfg = auth_config(dir, sizeof(dir),
	    "auth_failure_delay 1s\nauth_max_failures 3\nauth_throttle_time 1h");
	hash_rounds = 1000;
	a = auth_new(base, cfg);

	/* 300 attempts from 300 addresses, each given up on at once */
	t0 = util_mono_ms();
	for (int i = 0; i < 300; i++) {
		snprintf(addr, sizeof(addr), "10.1.%d.%d", i >> 8, i & 255);
		h = auth_ops.start(a, addr, "alice@example.test", 18, "x", 1,
		    on_result, &r);
		event_base_loop(base, EVLOOP_NONBLOCK);
		auth_ops.cancel(a, h);
	}
	assert_false(r.done);
	/* the queue is empty: a real login waits for no flood */
	assert_int_equal(verify(a, base, "192.0.2.1", "alice@example.test",
	    "secret", &took), SMTP_AUTH_OK);
	if (util_mono_ms() - t0 > 3000)
		fail_msg("login after the flood took %lld ms",
		    (long long)(util_mono_ms() - t0));

	/* given up on counts as failed: the third locks the address out */
	for (int i = 0; i < 3; i++) {
		assert_false(auth_ops.throttled(a, "192.0.2.50"));
		h = auth_ops.start(a, "192.0.2.50", "alice@example.test", 18,
		    "x", 1, on_result, &r);
		auth_ops.cancel(a, h);
	}
	assert_true(auth_ops.throttled(a, "192.0.2.50"));
	/* and a success gives its attempt back */
	for (int i = 0; i < 5; i++)
		assert_int_equal(verify(a, base, "192.0.2.51",
		    "alice@example.test", "secret", NULL), SMTP_AUTH_OK);
	assert_false(auth_ops.throttled(a, "192.0.2.51"));
	auth_free(&a);
	config_free(&cfg);
	unit_rm_tree(dir);

	/* bounded: AUTH_PENDING_PER_ADDR for one address ... */
	cfg = auth_config(dir, sizeof(dir),
	    "auth_failure_delay 0\nauth_max_failures 1000");
	a = auth_new(base, cfg);
	memset(rs, 0, sizeof(rs));
	/* (nothing runs the loop until all are started, so none ends) */
	for (; n < AUTH_PENDING_PER_ADDR + 1; n++)
		hs[n] = auth_ops.start(a, "192.0.2.60", "alice@example.test",
		    18, "x", 1, on_result, &rs[n]);
	/* ... and AUTH_PENDING_MAX in all */
	for (; n < AUTH_PENDING_MAX + 2; n++) {
		snprintf(addr, sizeof(addr), "10.2.0.%zu", n);
		hs[n] = auth_ops.start(a, addr, "alice@example.test", 18,
		    n == AUTH_PENDING_MAX + 1 ? "secret" : "x",
		    n == AUTH_PENDING_MAX + 1 ? 6 : 1, on_result, &rs[n]);
	}
	/* the verifier answers on the loop, never inside start() */
	assert_false(rs[AUTH_PENDING_PER_ADDR].done);
	run_until(base, &rs[AUTH_PENDING_PER_ADDR]);
	assert_int_equal(rs[AUTH_PENDING_PER_ADDR].v, SMTP_AUTH_TEMPFAIL);
	run_until(base, &rs[AUTH_PENDING_MAX + 1]);
	assert_int_equal(rs[AUTH_PENDING_MAX + 1].v, SMTP_AUTH_TEMPFAIL);
	for (size_t i = 0; i < AUTH_PENDING_MAX + 1; i++)
		if (i != AUTH_PENDING_PER_ADDR && rs[i].done)
			assert_int_equal(rs[i].v, SMTP_AUTH_FAILED);
	/* once they are gone, there is room again */
	for (size_t i = 0; i < n; i++)
		if (!rs[i].done)
			auth_ops.cancel(a, hs[i]);
	assert_int_equal(verify(a, base, "10.3.0.1", "alice@example.test",
	    "secret", NULL), SMTP_AUTH_OK);
	auth_free(&a);
	event_base_free(base);
	config_free(&cfg);
	unit_rm_tree(dir);
}

/* ------------------------------------------------------------------ */
/* tern passwd: the line update */

static void
test_passwd_update_text(void **state)
{
	static const struct {
		const char *name, *old, *user, *want;
	} cases[] = {
		{ "new file", NULL, "alice", "alice:H\n" },
		{ "append", "bob:x\n", "alice", "bob:x\nalice:H\n" },
		{ "no final newline", "bob:x", "alice", "bob:x\nalice:H\n" },
		{ "replace, keep addresses", "# c\nalice:old:a@x.test,@y.test\nbob:x\n",
		  "alice", "# c\nalice:H:a@x.test,@y.test\nbob:x\n" },
		{ "replace without addresses", "alice:old\n", "alice", "alice:H\n" },
		{ "prefix is another user", "alice2:old\n", "alice",
		  "alice2:old\nalice:H\n" },
	};

	for (size_t i = 0; i < nitems(cases); i++) {
		const char *old = cases[i].old;
		char *got = passwd_update_text(old, old ? strlen(old) : 0,
		    cases[i].user, "H");

		if (strcmp(got, cases[i].want) != 0)
			fail_msg("%s: want %s got %s", cases[i].name,
			    cases[i].want, got);
		free(got);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_b64_decode),
		cmocka_unit_test(test_b64_round_trip),
		cmocka_unit_test(test_plain_parse),
		cmocka_unit_test(test_auth_verify),
		cmocka_unit_test(test_auth_delay_and_throttle),
		cmocka_unit_test(test_auth_cancel_and_table_bound),
		cmocka_unit_test(test_auth_cancel_flood),
		cmocka_unit_test(test_passwd_update_text),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * fuzz_smtp_auth.c - libFuzzer target for the AUTH exchanges of the SMTP
 * session (RFC 4954 with PLAIN, RFC 4616, and LOGIN): the session fuzzer
 * with a verifier installed, so initial responses, continuation lines,
 * "*" cancels, STARTTLS before AUTH and the submission checks after it are
 * reached; and the SASL codecs alone (sasl.h).
 *
 *   make fuzz && ./build/fuzz/fuzz_smtp_auth tests/fuzz/corpus/fuzz_smtp_auth
 *
 * Input: an options byte. With bit 0x80 the rest is SASL input: base64
 * decoded strictly, encoded back, and a PLAIN message split. Otherwise
 * the low bits pick the listener (auth required in clear text, auth yes
 * in clear text, auth yes over TLS only), whether the client may relay,
 * whether the address is throttled, whether the verifier answers at once
 * (at the next read) or one read later, and whether the queue fails; the
 * rest is the client's octets in reads (session_harness.h).
 *
 * The fake verifier's verdict comes from the password: "secret" is OK,
 * "lock" LOCKED, "temp" TEMPFAIL, anything else FAILED; users alice and
 * nobody exist. Checks, besides ASan/UBSan and the harness's:
 * - the verifier gets a user and a password of 1..255 octets without
 *   NUL, CR or LF, and at most one verification runs at a time;
 * - a cancelled verification never calls back;
 * - base64: decode is the inverse of encode, only canonical encodings
 *   decode, and a too small buffer fails cleanly.
 */
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf/config.h"
#include "lib/log.h"
#include "lib/util.h"
#include "mail/sasl.h"

#include "session_harness.h"

struct fa {
	smtp_auth_cb cb;          /* a verification is running */
	void *arg;
	enum smtp_auth_verdict verdict;
	bool throttled;
	bool slow;                /* answer one read later */
	unsigned reads;           /* reads since start() */
};

static int fa_handle;

static void *
fa_start(void *ctx, const char *addr, const char *user, size_t ulen,
    const char *pass, size_t plen, smtp_auth_cb cb, void *arg)
{
	struct fa *a = ctx;

	CHECK(a->cb == NULL);
	CHECK(ulen > 0 && ulen <= SASL_FIELD_MAX);
	CHECK(plen > 0 && plen <= SASL_FIELD_MAX);
	for (size_t i = 0; i < ulen; i++)
		CHECK(user[i] != '\0' && user[i] != '\r' && user[i] != '\n');
	for (size_t i = 0; i < plen; i++)
		CHECK(pass[i] != '\0' && pass[i] != '\r' && pass[i] != '\n');
	a->cb = cb;
	a->arg = arg;
	a->reads = 0;
	a->verdict = plen == 6 && memcmp(pass, "secret", 6) == 0 ? SMTP_AUTH_OK :
	    plen == 4 && memcmp(pass, "lock", 4) == 0 ? SMTP_AUTH_LOCKED :
	    plen == 4 && memcmp(pass, "temp", 4) == 0 ? SMTP_AUTH_TEMPFAIL :
	    SMTP_AUTH_FAILED;
	return &fa_handle;
}

static void
fa_cancel(void *ctx, void *handle)
{
	struct fa *a = ctx;

	CHECK(handle == &fa_handle && a->cb != NULL);
	a->cb = NULL;
}

static bool
fa_throttled(void *ctx, const char *addr)
{
	return ((struct fa *)ctx)->throttled;
}

static const struct smtp_auth_ops fa_ops = { fa_start, fa_cancel,
	fa_throttled };

/* The transport's side of STARTTLS (RFC 3207 5: input received in clear
 * text is dropped) and the verifier's answers, between reads. */
struct side {
	struct fa *a;
	struct smtp_session *s;
	struct evbuffer *in, *out;
	bool tls_pending;
	bool closed;
};

static void
between(void *arg)
{
	struct side *sd = arg;
	struct fa *a = sd->a;

	if (sd->tls_pending) {
		sd->tls_pending = false;
		evbuffer_drain(sd->in, evbuffer_get_length(sd->in));
		smtp_session_tls_started(sd->s, sd->in, sd->out,
		    "TLSv1.3:TLS_AES_256_GCM_SHA384");
		smtp_session_process(sd->s);
	}
	if (a->cb != NULL && (!a->slow || a->reads++ > 0)) {
		smtp_auth_cb cb = a->cb;

		a->cb = NULL;
		cb(a->arg, a->verdict);
		smtp_session_process(sd->s);
	}
}

static void
io_set_deadline(void *arg, unsigned ms)
{
}

static void
io_close(void *arg)
{
	((struct side *)arg)->closed = true;
}

static void
io_starttls(void *arg)
{
	struct side *sd = arg;

	CHECK(!sd->tls_pending);
	sd->tls_pending = true;
}

static const struct smtp_session_io fio = { .set_deadline = io_set_deadline,
	.close = io_close, .starttls = io_starttls };

/* Listeners: [0] auth required in clear text (submission), [1] auth yes
 * in clear text, [2] auth yes over TLS only. */
static const char conf_text[] =
    "max_message_size 4K\nmax_recipients 3\nmax_errors 30\n"
    "listen 127.0.0.1:2587 {\n auth required\n auth_plaintext yes\n"
    " relay_networks no\n receive no\n}\n"
    "listen 127.0.0.1:2588 {\n auth yes\n auth_plaintext yes\n}\n"
    "listen 127.0.0.1:2589 {\n auth yes\n tls starttls\n}\n"
    "passwd_file %s\n";

static struct config *
load_config(void)
{
	char dir[] = "/tmp/tern-fuzz-auth-XXXXXX", pw[64], cf[64];
	char text[sizeof(conf_text) + 64], *errors = NULL;
	struct config *cfg;
	FILE *f;

	CHECK(mkdtemp(dir) != NULL);
	snprintf(pw, sizeof(pw), "%s/passwd", dir);
	snprintf(cf, sizeof(cf), "%s/tern.conf", dir);
	f = fopen(pw, "w");
	CHECK(f != NULL);
	fprintf(f, "alice@example.test:$6$saltsalt$abc:alice@example.test,"
	    "@alias.test\nnobody:$6$saltsalt$abc\n");
	fclose(f);
	chmod(pw, 0600);
	snprintf(text, sizeof(text), conf_text, pw);
	f = fopen(cf, "w");
	CHECK(f != NULL);
	fputs(text, f);
	fclose(f);
	cfg = config_load(cf, &errors);
	if (cfg == NULL)
		fprintf(stderr, "fuzz_smtp_auth: config: %s\n", errors);
	CHECK(cfg != NULL && cfg->nlisteners == 3 && cfg->npasswd == 2);
	unlink(pw);
	unlink(cf);
	rmdir(dir);
	return cfg;
}

/* Strict base64 and PLAIN (sasl.c). */
static void
fuzz_sasl(const uint8_t *p, size_t len)
{
	unsigned char *dec = malloc(len + 1), *dec2 = malloc(len + 1);
	char *enc = malloc(len / 3 * 4 + 8), *enc2 = malloc(4 * len + 8);
	struct sasl_plain pl;
	ssize_t d, e, d2;

	CHECK(dec != NULL && dec2 != NULL && enc != NULL && enc2 != NULL);
	d = sasl_b64_decode((const char *)p, len, dec, len + 1);
	if (d >= 0) {
		/* only canonical encodings decode: encode(decode(x)) == x */
		CHECK((size_t)d <= len / 4 * 3 && len % 4 == 0);
		e = sasl_b64_encode(dec, (size_t)d, enc, len / 3 * 4 + 8);
		CHECK(e >= 0 && (size_t)e == len && memcmp(enc, p, len) == 0);
		if (d > 0)
			CHECK(sasl_b64_decode((const char *)p, len, dec2,
			    (size_t)d - 1) == -1);
		if (sasl_plain_parse(dec, (size_t)d, &pl)) {
			CHECK(pl.authcid_len > 0 && pl.authcid_len <= SASL_FIELD_MAX);
			CHECK(pl.passwd_len > 0 && pl.passwd_len <= SASL_FIELD_MAX);
			CHECK(pl.authzid_len <= SASL_FIELD_MAX);
			CHECK(pl.authzid_len + pl.authcid_len + pl.passwd_len + 2 ==
			    (size_t)d);
		}
	}
	/* any octets: decode(encode(x)) == x */
	e = sasl_b64_encode(p, len, enc2, 4 * len + 8);
	CHECK(e >= 0 && (size_t)e == 4 * ((len + 2) / 3) && enc2[e] == '\0');
	CHECK(sasl_b64_encode(p, len, enc2, (size_t)e) == -1);
	d2 = sasl_b64_decode(enc2, (size_t)e, dec2, len + 1);
	CHECK(d2 >= 0 && (size_t)d2 == len && memcmp(dec2, p, len) == 0);
	free(dec);
	free(dec2);
	free(enc);
	free(enc2);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct config *cfg;

	if (size < 1)
		return 0;
	if (data[0] & 0x80) {
		fuzz_sasl(data + 1, size - 1);
		return 0;
	}
	if (cfg == NULL) {
		log_set_level(LOG_LEVEL_ERR);
		cfg = load_config();
	}
	uint8_t opt = data[0];
	struct smtp_session_client client = { .addr = "192.0.2.7", .port = 1234,
		.relay_ok = (opt & 4) != 0,
		.listener = &cfg->listeners[(opt & 3) % 3] };
	struct evbuffer *in = evbuffer_new(), *out = evbuffer_new();
	struct fq q = { .fail = (opt & 0x40) != 0, .data = evbuffer_new() };
	struct fa a = { .throttled = (opt & 8) != 0, .slow = (opt & 0x10) != 0 };
	struct side sd = { .a = &a, .in = in, .out = out };
	struct smtp_session *s = smtp_session_new(cfg, &client, in, out, &fio,
	    &sd, &fq_ops, &q);

	sd.s = s;
	smtp_session_set_auth(s, &fa_ops, &a);
	smtp_session_set_starttls(s, (opt & 0x20) != 0);
	smtp_session_start(s);
	harness_feed(s, in, out, &q, data, size, 1, &sd.closed, between, &sd);
	smtp_session_free(&s);
	CHECK(a.cb == NULL);   /* freeing the session cancelled it */
	CHECK(!q.open);
	evbuffer_free(in);
	evbuffer_free(out);
	evbuffer_free(q.data);
	return 0;
}

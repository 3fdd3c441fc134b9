/*
 * fuzz_proto_relay_job.c - libFuzzer target for the relay protocol
 * (proto/relay_job.c): the START payload as the relay reads it, the
 * RESULT payload as the queue reads it, and the result encoder fed
 * arbitrary outcomes, as the relay writes whatever a server answered.
 *
 *   make build/fuzz/fuzz_proto_relay_job
 *   ./build/fuzz/fuzz_proto_relay_job tests/fuzz/corpus/fuzz_proto_relay_job -max_total_time=60
 *
 * Input: one octet choosing the part (0: START, 1: RESULT, 2: encoder;
 * modulo 3), two octets of recipient count for RESULT (modulo 1001), then
 * the payload (for the encoder: records of outcome, code, status, text).
 * Checks, besides ASan/UBSan:
 * - an accepted START has a clean domain and 1..1000 recipients, and
 *   encodes again (with any body) to frames that decode to the same job;
 * - an accepted RESULT has exactly 0 or nrcpts lines, each with a known
 *   outcome, a code of 0 or 200..599 and a well-formed status code;
 * - whatever the encoder is given, the queue's decoder accepts what it
 *   wrote, with the outcome, the status class and the code in agreement
 *   and a printable, non-empty text within the bound.
 */
#include <string.h>

#include <event2/buffer.h>

#include "fuzz.h"
#include "lib/ipc.h"
#include "lib/log.h"
#include "lib/util.h"
#include "mail/envelope.h"
#include "proto/relay_job.h"

static void
fuzz_start(const uint8_t *p, size_t n)
{
	char domain[RELAY_JOB_DOMAIN_MAX + 1], again_dom[RELAY_JOB_DOMAIN_MAX + 1];
	char err[256];
	struct envelope env, again;
	struct evbuffer *frames, *a, *b;
	unsigned char hb[IPC_HDR_SIZE];
	struct ipc_hdr h;
	const char *why;

	envelope_init(&env);
	if (relay_job_decode(p, n, domain, &env, err, sizeof(err)) == -1) {
		CHECK(err[0] != '\0' && env.rcpts == NULL);
		return;
	}
	CHECK(env.nrcpts >= 1 && env.nrcpts <= RELAY_JOB_MAX_RCPTS);
	CHECK(strlen(domain) >= 1 && strlen(domain) <= RELAY_JOB_DOMAIN_MAX);
	for (const char *s = domain; *s; s++)
		CHECK((unsigned char)*s > 0x20 && (unsigned char)*s != 0x7f);
	frames = evbuffer_new();
	if (relay_job_encode(frames, 9, domain, &env, p, n) == 0) {
		evbuffer_remove(frames, hb, sizeof(hb));
		CHECK(ipc_hdr_decode(hb, &h, &why) == 0);
		CHECK(h.type == RELAY_JOB_START && h.id == 9);
		envelope_init(&again);
		CHECK(relay_job_decode(evbuffer_pullup(frames, h.len), h.len,
		    again_dom, &again, err, sizeof(err)) == 0);
		CHECK(strcmp(domain, again_dom) == 0);
		a = evbuffer_new();
		b = evbuffer_new();
		envelope_serialize(&env, a);
		envelope_serialize(&again, b);
		CHECK(evbuffer_get_length(a) == evbuffer_get_length(b));
		CHECK(memcmp(evbuffer_pullup(a, -1), evbuffer_pullup(b, -1),
		    evbuffer_get_length(a)) == 0);
		evbuffer_free(a);
		evbuffer_free(b);
		envelope_clear(&again);
	}
	evbuffer_free(frames);
	envelope_clear(&env);
}

static void
fuzz_result(const uint8_t *p, size_t n, size_t nrcpts)
{
	struct relay_result res;
	struct relay_result_rcpt *r = xcalloc(nrcpts ? nrcpts : 1, sizeof(*r));
	char why[256] = "";

	if (relay_result_decode(p, n, nrcpts, &res, r, why, sizeof(why)) == -1) {
		CHECK(why[0] != '\0');
		free(r);
		return;
	}
	CHECK(res.n == 0 || res.n == nrcpts);
	for (int i = 0; i < 3; i++)
		CHECK(res.via_len[i] >= 1 &&
		    res.via_len[i] <= RELAY_RESULT_TOKEN_MAX);
	for (size_t i = 0; i < res.n; i++) {
		CHECK(r[i].outcome == 'D' || r[i].outcome == 'T' ||
		    r[i].outcome == 'F');
		CHECK(r[i].code == 0 || (r[i].code >= 200 && r[i].code <= 599));
		CHECK(r[i].enh_len >= 5 && strchr("245", r[i].enh[0]) != NULL);
		CHECK(memchr(r[i].text, '\n', r[i].text_len) == NULL);
	}
	free(r);
}

/* Records: outcome, code (2 octets), status length, status, text
 * length, text; the via tokens first (length, octets, three times). */
static void
fuzz_encoder(const uint8_t *p, size_t n)
{
	struct relay_result_line lines[64], sent[64];
	char via[3][300];
	size_t k = 0, off = 0, len;
	struct evbuffer *b = evbuffer_new();
	struct relay_result res;
	struct relay_result_rcpt r[64];
	char why[256] = "";

	for (int i = 0; i < 3; i++) {
		len = off < n ? p[off++] % 300 : 0;
		if (len > n - off)
			len = n - off;
		memcpy(via[i], p + off, len);
		via[i][len] = '\0';
		off += len;
	}
	while (off + 5 <= n && k < 64) {
		struct relay_result_line *l = &lines[k++];

		memset(l, 0, sizeof(*l));
		l->outcome = (char)p[off];
		l->code = (unsigned)p[off + 1] << 8 | p[off + 2];
		len = p[off + 3] % sizeof(l->enh);
		off += 4;
		if (len > n - off)
			len = n - off;
		memcpy(l->enh, p + off, len);
		off += len;
		len = off < n ? p[off++] : 0;
		len *= 2;
		if (len > n - off)
			len = n - off;
		if (len > RELAY_RESULT_TEXT_MAX)
			len = RELAY_RESULT_TEXT_MAX;
		memcpy(l->text, p + off, len);
		off += len;
	}
	relay_result_begin(b, via[0], via[1], via[2], n & 1);
	for (size_t i = 0; i < k; i++) {
		sent[i] = lines[i];
		relay_result_add(b, i, &sent[i], relay_result_text_max(k));
	}
	CHECK(evbuffer_get_length(b) <= IPC_MAX_PAYLOAD);
	if (relay_result_decode(evbuffer_pullup(b, -1), evbuffer_get_length(b),
	    k, &res, r, why, sizeof(why)) != 0) {
		fprintf(stderr, "refused: %s\n", why);
		abort();
	}
	CHECK(res.n == k && res.peer_dsn == (bool)(n & 1));
	for (size_t i = 0; i < k; i++) {
		char cls = r[i].outcome == 'D' ? '2' : r[i].outcome == 'F' ?
		    '5' : '4';

		CHECK(r[i].outcome == sent[i].outcome);
		CHECK(r[i].enh[0] == cls);
		CHECK(r[i].code == 0 || r[i].code / 100 == (unsigned)(cls - '0'));
		CHECK(r[i].code == sent[i].code);
		CHECK(r[i].text_len >= 1 &&
		    r[i].text_len <= relay_result_text_max(k) + 13);
		CHECK(r[i].text_len == strlen(sent[i].text));
		for (size_t j = 0; j < r[i].text_len; j++)
			CHECK(r[i].text[j] >= 0x20 && r[i].text[j] < 0x7f);
	}
	evbuffer_free(b);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 3)
		return 0;
	log_set_level(LOG_LEVEL_ERR);
	switch (data[0] % 3) {
	case 0:
		fuzz_start(data + 3, size - 3);
		break;
	case 1:
		fuzz_result(data + 3, size - 3,
		    ((size_t)data[1] << 8 | data[2]) % (RELAY_JOB_MAX_RCPTS + 1));
		break;
	default:
		fuzz_encoder(data + 3, size - 3);
		break;
	}
	return 0;
}
